"""Tests of pydp_r.audit.report and `python -m pydp_r.audit`."""

import re

import pytest

from pydp_r.audit import __main__ as audit_main
from pydp_r.audit import report

# Statistical, end-to-end or multi-process: the slow tier (`make test-fast` skips it).
pytestmark = pytest.mark.slow


def test_step_report_audits_every_configuration_and_all_pass():
    text = report.run_audit_report(audits=["step"], quick=True, num_trials=400)
    assert text.count("accountant epsilon (PLD, one step)") == 4
    assert text.count("verdict: PASS") == 4
    assert "FAIL" not in text
    # Every lower bound printed is below the claim printed above it.
    claims = [float(v) for v in re.findall(r"one step\): ([0-9.]+)", text)]
    gaussian_bounds = [float(v) for v in re.findall(r"Gaussian mechanism: +([0-9.]+)", text)]
    assert len(claims) == len(gaussian_bounds) == 4
    assert all(bound < claim for bound, claim in zip(gaussian_bounds, claims, strict=True))


def test_report_rejects_unknown_audits():
    with pytest.raises(ValueError, match="audits"):
        report.run_audit_report(audits=["steps"])
    with pytest.raises(ValueError, match="audits"):
        report.run_audit_report(audits=[])


def test_module_entry_point_prints_the_report_and_reports_bad_values(capsys):
    assert audit_main.main(["--audits", "step", "--quick", "--num-trials", "100"]) == 0
    assert "verdict: PASS" in capsys.readouterr().out
    assert audit_main.main(["--audits", "step", "--quick", "--delta", "2"]) == 2
    assert "delta" in capsys.readouterr().err
