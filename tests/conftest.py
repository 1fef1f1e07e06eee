"""Shared pytest fixtures and markers.

Fleet fixtures (real SSH hosts in network namespaces, see tests/fleet.py):
- ``fleet3``: one 3-host fleet (pi1..pi3) for the whole session. Tests that change
  a host's link or files must put them back.
- ``make_fleet(n, **kwargs)``: a fresh fleet torn down after the test.
When a fleet cannot be built the test is skipped, or fails when ``CI=true``.

Imports: the test folders are packages (tests.unit.test_core ...), so test files of the same name
in two folders do not clash. Helper modules are imported by their own names, from the folders put
on sys.path here (tests/, tests/unit, tests/integration, module_utils/, tools/, the repository
root): ``fleet``, ``browser``, ``module_test_helpers`` (tests/), ``unit_helpers``,
``integration_helpers``, ``core_parts``, ``sqlite_fleet``, ``app_writer``, ``demo_db``, ``sqlite_fleet_cli``; so
helper module names are unique across the folders. Never
``import conftest`` (every folder has one) nor a test module: what tests share goes in a helper
module. Any combination of test files runs in one pytest call.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
for _folder in (REPO_ROOT, REPO_ROOT / "tools", REPO_ROOT / "module_utils", TESTS_DIR, TESTS_DIR / "unit",
                TESTS_DIR / "integration"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

import sqlite_fleet  # noqa: E402
from core_parts import whole_core  # noqa: E402
from fleet import Fleet, FleetError, fleet_unavailable_reason  # noqa: E402

whole_core(sqlite_fleet)  # core.X and monkeypatch.setattr(core, "X", ...) reach the package's parts


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "integration: runs against real SSH hosts (network namespaces; needs root)",
    )


# ------------------------------------------------------------------------ fleet


def _fleet_unavailable(reason: str) -> NoReturn:
    message = f"test fleet unavailable: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _start_fleet(n: int, **kwargs: Any) -> Fleet:
    reason = fleet_unavailable_reason()
    if reason is not None:
        _fleet_unavailable(reason)
    try:
        return Fleet(n, **kwargs).start()
    except FleetError as exc:
        _fleet_unavailable(str(exc))


@pytest.fixture(scope="session")
def fleet3() -> Iterator[Fleet]:
    """Three hosts pi1..pi3, shared by the whole session."""
    fleet = _start_fleet(3)
    yield fleet
    fleet.close()


@pytest.fixture
def make_fleet() -> Iterator[Callable[..., Fleet]]:
    """Factory: make_fleet(n, mounts=..., workdir=...) -> started Fleet, closed after the test."""
    fleets: list[Fleet] = []

    def factory(n: int, **kwargs: Any) -> Fleet:
        fleet = _start_fleet(n, **kwargs)
        fleets.append(fleet)
        return fleet

    yield factory
    for fleet in reversed(fleets):
        fleet.close()
