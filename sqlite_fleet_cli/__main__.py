# Copyright: (c) 2026, the sqlite-fleet-backup authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""python -m sqlite_fleet_cli == sqlite-fleet."""

import sys

from .cli import main

sys.exit(main())
