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


def test_the_check_sees_a_cell_that_differs_and_an_empty_cell_outside_ci():
    from tests.fault_matrix import FAULTS, OUTSIDE_CI, render

    found = {cell: {"survived": True, "nothing_lost": True, "message": None} for cell in
             [(fault, strategy) for fault, (_, strategies) in FAULTS.items() for strategy in strategies]}
    in_ci = {cell: marks for cell, marks in found.items() if cell not in OUTSIDE_CI}
    assert differences(in_ci, render(found)) == []
    fault, strategy = sorted(OUTSIDE_CI)[0]  # a cell only the `faults` tests fill, left empty
    assert any(line.startswith(f"{fault} under {strategy}:") for line in differences(in_ci, render(in_ci)))
    other = {**in_ci, ("disk_full", "cpu"): {"survived": False, "nothing_lost": True, "message": None}}
    assert any("disk_full under cpu" in line for line in differences(other, render(found)))
