#!/usr/bin/python
# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# The work is done on the controller by the action plugin action_plugins/sqlite_fetch.py; this file (its
# documentation is sqlite_fetch.yml beside it) lets ansible-doc and linters resolve the task, as
# ansible.builtin.fetch does.

from __future__ import annotations

