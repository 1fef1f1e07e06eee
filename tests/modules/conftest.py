"""Fixtures of the module tests; their helpers are in tests/module_test_helpers.py."""

from __future__ import annotations

import os

import pytest
from module_test_helpers import PYTHON39, SYSTEM_PYTHON

INTERPRETERS = [
    pytest.param(SYSTEM_PYTHON, id="system-python",
                 marks=pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="%s is missing" % SYSTEM_PYTHON)),
    pytest.param(PYTHON39, id="python3.9",
                 marks=pytest.mark.skipif(not os.path.exists(PYTHON39), reason="%s is missing" % PYTHON39)),
]


@pytest.fixture(params=INTERPRETERS, scope="module")
def python(request) -> str:
    """The interpreter the modules run under on the 'host' (module-scoped: fixtures are shared per interpreter)."""
    return request.param
