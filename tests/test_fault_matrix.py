"""The README's fault matrix is what the fault tests found this time (tests/fault_matrix.py),
for every cell they tested; cells only the `faults`-marked tests cover must be filled in.
It runs last in its session (conftest), in the slow stage, after the default stage's tests."""

import os

import pytest

from tests.fault_matrix import differences, load, missing


@pytest.mark.slow
def test_the_readmes_fault_matrix_is_what_the_tests_found():
    cells = load()
    absent = missing(cells, in_ci=True)
    if absent:
        message = f"no record of {len(absent)} cells of the fault matrix, e.g. {absent[0]} (run every stage first, or scripts/fault_matrix.py)"
        if os.environ.get("DTRAIN_REQUIRE_FAULT_MATRIX"):  # CI runs every stage: a cell without a record is a fault test that did not pass
            pytest.fail(message)
        pytest.skip(message)
    wrong = differences(cells)
    assert not wrong, f"README.md's fault matrix differs from what the tests found ({wrong[0]}); `.venv/bin/python scripts/fault_matrix.py` writes it"
