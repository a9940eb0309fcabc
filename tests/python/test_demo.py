"""The demo runs end to end and reports numbers consistent with the library."""

import json

import pytest

import pydp_r
from pydp_r import demo


@pytest.fixture(scope="module")
def demo_results(tmp_path_factory):
    output = tmp_path_factory.mktemp("demo")
    assert demo.main(["--epochs", "2", "--output", str(output)]) == 0
    return output, json.loads((output / "results.json").read_text())


def test_demo_writes_plot_and_numbers(demo_results):
    output, results = demo_results
    assert (output / "training_history.png").stat().st_size > 10_000
    assert results["n_train"] == 3989
    names = [run["name"] for run in results["runs"]]
    assert names == ["non-private Adam", "DP-Adam"]
    for run in results["runs"]:
        assert run["epochs"] == 2 and len(run["val_mae_per_epoch"]) == 2
        assert 0 < run["test_mae_bpm"] < 60
        assert 0 <= run["membership_auc"] <= 1
        assert run["membership_epsilon_lower_bound"] >= 0


def test_demo_epsilon_is_the_accountants(demo_results):
    _, results = demo_results
    private = results["runs"][1]
    expected = [pydp_r.compute_epsilon(3989, 32, 1.1, epochs, 1e-5) for epochs in (1, 2)]
    assert private["epsilon_per_epoch"] == pytest.approx(expected, rel=1e-9)
    assert results["runs"][0]["epsilon"] is None


def test_baseline_is_the_mae_of_the_training_mean(demo_results):
    _, results = demo_results
    x_train, y_train, x_test, y_test = pydp_r.data.heart_rate_arrays(
        pydp_r.data.synthetic_ppg_subject(seed=0)
    )
    expected = float(abs(y_test - y_train.mean()).mean())  # every training label
    assert results["baseline_mae_bpm"] == pytest.approx(expected, rel=1e-3)
