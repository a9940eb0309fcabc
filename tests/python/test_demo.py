"""The demo runs end to end over seeds and reports numbers consistent with the library."""

import json
import subprocess
import sys

import dp_accounting
import numpy as np
import pytest

import pydp_r
from pydp_r import demo
from pydp_r.demo import runs as demo_runs
from pydp_r.demo import tuning as demo_tuning
from pydp_r.demo import user_level as demo_user_level
from pydp_r.planner import plan_dp_training

# Training sequences minus validation, the overlap gap and the attack's non-member blocks.
N_FIT = 3989 - 600 - 11 - demo.NON_MEMBER_BLOCKS * demo.NON_MEMBER_BLOCK_SEQUENCES


@pytest.fixture(scope="module")
def demo_results(tmp_path_factory):
    output = tmp_path_factory.mktemp("demo")
    assert demo.main(["--seeds", "0", "1", "--epochs", "2", "--output", str(output)]) == 0
    return output, json.loads((output / "results.json").read_text())


@pytest.mark.slow
def test_demo_writes_plot_and_numbers_per_seed(demo_results):
    output, results = demo_results
    assert (output / "training_history.png").stat().st_size > 10_000
    assert results["n_train"] == N_FIT
    assert [(run["name"], run["seed"]) for run in results["runs"]] == [
        ("non-private Adam", 0),
        ("non-private Adam", 1),
        ("DP-Adam eps=2", 0),
        ("DP-Adam eps=2", 1),
    ]
    for run in results["runs"]:
        assert run["epochs"] == 2 and len(run["val_mae_per_epoch"]) == 2
        assert 0 < run["test_mae_bpm"] < 60
        assert 0 <= run["membership_auc"] <= 1
        if run["name"] == "DP-Adam eps=2":  # what the ledger recorded, not the recipe
            privacy = run["privacy"]
            assert (privacy["privacy_unit"], privacy["n_units"]) == ("example", N_FIT)
            assert privacy["steps"] == 2 * (N_FIT // run["batch_size"])
            assert privacy["epsilon"] == pytest.approx(run["epsilon_per_epoch"][-1], rel=1e-3)
        else:
            assert run["privacy"] is None


@pytest.mark.slow
def test_summary_is_the_mean_and_sd_over_seeds(demo_results):
    _, results = demo_results
    for name in ("non-private Adam", "DP-Adam eps=2"):
        maes = [run["test_mae_bpm"] for run in results["runs"] if run["name"] == name]
        assert results["summary"][name]["test_mae_bpm_mean"] == pytest.approx(np.mean(maes))
        assert results["summary"][name]["test_mae_bpm_sd"] == pytest.approx(np.std(maes, ddof=1))
    ratio = (
        results["summary"]["DP-Adam eps=2"]["test_mae_bpm_mean"]
        / results["summary"]["non-private Adam"]["test_mae_bpm_mean"]
    )
    assert results["dp_to_non_private_mae_ratio"] == pytest.approx(ratio)


@pytest.mark.slow
def test_private_run_is_calibrated_and_its_measured_epsilon_is_honest(demo_results):
    _, results = demo_results
    recipe = results["recipes"]["DP-Adam eps=2"]
    assert recipe["batch_size"] == plan_dp_training(N_FIT, 2.0, 2, 1e-5).batch_size
    assert recipe["noise_multiplier"] == pydp_r.compute_noise_multiplier(
        N_FIT, recipe["batch_size"], 2.0, 2, 1e-5, accountant="pld"
    )
    # PLD is the tighter accountant: less noise for the same epsilon than RDP would need.
    assert recipe["noise_multiplier"] < pydp_r.compute_noise_multiplier(
        N_FIT, recipe["batch_size"], 2.0, 2, 1e-5, accountant="rdp"
    )
    for run in results["runs"]:
        if run["name"] == "DP-Adam eps=2":
            # Measured by PrivacyBudget on Poisson batches: shuffled batches would log the
            # no-amplification bound, far above 2.
            assert run["epsilon_per_epoch"][0] < run["epsilon_per_epoch"][1] <= 2.0 * 1.001
        else:
            assert run["epsilon"] is None
    assert results["window_level_epsilon"] > max(
        run["epsilon"] for run in results["runs"] if run["epsilon"] is not None
    )


@pytest.mark.slow
def test_baseline_is_the_mae_of_the_training_mean(demo_results):
    _, results = demo_results
    x_train, y_train, _, y_test = pydp_r.data.heart_rate_arrays(
        pydp_r.data.synthetic_ppg_subject(seed=0)
    )
    x_fit, y_fit, _, _ = demo.split_validation(x_train, y_train)
    _, y_fit, _, _ = demo.split_non_members(x_fit, y_fit, seed=0)
    expected = float(abs(y_test - y_fit.mean()).mean())
    assert results["baseline_mae_bpm"][0] == pytest.approx(expected, rel=1e-3)


def test_validation_split_shares_no_window_with_training():
    steps = np.arange(4000 * 1.0).reshape(-1, 1).repeat(6, axis=1)  # window index as feature
    x = pydp_r.data.sliding_sequences(steps.astype("float32"), 12)
    y = np.arange(len(x), dtype="float32")[:, None]
    x_fit, y_fit, x_val, y_val = demo.split_validation(x, y, validation=600)
    assert len(y_val) == 600 and len(y_fit) == len(x) - 611
    assert x_fit[:, :, 0].max() < x_val[:, :, 0].min()
    assert y_val[-1, 0] == len(x) - 1
    with pytest.raises(ValueError, match="validation must be an integer in"):
        demo.split_validation(x, y, validation=len(x))


def test_tune_picks_the_lowest_validation_mae_and_never_the_test_part(monkeypatch):
    def fake_train(recipe, arrays, seed, verbose=False, attack=True):
        # Validation favours ("none", 0.01); the test part would favour ("batch", 0.001).
        validation = {"none": 1.0, "batch": 2.0}[recipe.normalization] + abs(
            recipe.learning_rate - 0.01
        )
        test = 10.0 - validation
        return demo.RunResult(recipe.name, seed, test, validation + seed, None, None, 32, 1, 0.0)

    monkeypatch.setattr(demo_tuning, "train", fake_train)
    base = demo.Recipe("m", batch_size=32, learning_rate=0.5, epochs=1, normalization="batch")
    grid = {"normalization": ("batch", "none"), "learning_rate": (0.001, 0.01)}
    chosen, scores = demo.tune(base, grid, {0: (), 1: ()})
    assert (chosen.normalization, chosen.learning_rate) == ("none", 0.01)
    assert chosen.batch_size == 32 and chosen.name == "m"
    assert len(scores) == 4
    assert scores[-1]["validation_mae_bpm"] == pytest.approx(1.5)  # mean over seeds 0 and 1


def test_both_grids_give_each_model_the_same_number_of_candidates():
    sizes = [
        np.prod([len(values) for values in grid.values()])
        for grid in (demo.NON_PRIVATE_GRID, demo.PRIVATE_GRID)
    ]
    assert sizes[0] == sizes[1]
    assert "batch" not in demo.PRIVATE_GRID["normalization"]  # it mixes examples


def test_progress_is_one_line_per_group_of_epochs_and_the_last():
    lines = []
    progress = demo.EpochGroupProgress("DP, seed 3", epochs=10, every=4, write=lines.append)
    for epoch in range(10):
        progress.on_epoch_end(epoch, {"val_mae": 5.0 + epoch, "epsilon": 0.1 * (epoch + 1)})
    assert len(lines) == 3
    assert [line.split("  ")[1] for line in lines] == [
        "[DP, seed 3] epoch 1-4/10",
        "[DP, seed 3] epoch 5-8/10",
        "[DP, seed 3] epoch 9-10/10",
    ]
    assert "val MAE   8.00 bpm" in lines[0] and "epsilon  0.40" in lines[0]
    assert "val MAE  14.00 bpm" in lines[2] and "epsilon  1.00" in lines[2]
    single = []
    progress = demo.EpochGroupProgress("Adam, seed 0", epochs=1, every=1, write=single.append)
    progress.on_epoch_end(0, {"val_mae": 7.0})
    assert "epoch 1/1" in single[0] and "epsilon" not in single[0]


@pytest.mark.parametrize(
    "epochs, verbose, expected", [(20, False, 5), (2, False, 1), (7, False, 2), (20, True, 1)]
)
def test_progress_groups_are_a_quarter_of_a_run(epochs, verbose, expected):
    assert demo_runs.progress_every(epochs, verbose) == expected


def test_run_seeds_announces_each_run_and_its_result(monkeypatch):
    def fake_train(recipe, arrays, seed, verbose=False, attack=True):
        return demo.RunResult(recipe.name, seed, 4.25, 5.0, 1.5, 2.0, 64, 1, 3.0, [], [], 0.51)

    monkeypatch.setattr(demo_runs, "train", fake_train)
    lines = []
    recipe = demo.Recipe("DP-Adam eps=2", batch_size=64, learning_rate=0.1, epochs=1,
                         normalization="none", noise_multiplier=2.0)  # fmt: skip
    results = demo.run_seeds(recipe, {0: (), 7: ()}, write=lines.append)
    assert [result.seed for result in results] == [0, 7]
    assert lines == [
        "DP-Adam eps=2, seed 0: training 1 epochs ...",
        "DP-Adam eps=2, seed 0: test MAE 4.25 bpm, epsilon 1.50, MIA AUC 0.510 (3 s)",
        "DP-Adam eps=2, seed 7: training 1 epochs ...",
        "DP-Adam eps=2, seed 7: test MAE 4.25 bpm, epsilon 1.50, MIA AUC 0.510 (3 s)",
    ]


def test_command_line_defaults_are_make_demos():
    options = demo.parse_args([])
    assert options == demo.DemoOptions()
    assert (options.seeds, options.epochs, options.target_epsilon) == ([0, 1, 2, 3, 4], 20, 2.0)
    assert (options.learning_rate, options.averaging_decay, options.dp_normalization) == (
        3e-3, 0.99, "none",
    )  # fmt: skip
    assert options.output == "demo-output" and not (options.tune or options.sweep)
    assert (options.privacy_unit, options.users) == ("example", 2000)
    given = demo.parse_args(["--seeds", "3", "4", "--epochs", "2", "--sweep", "--no-attack"])
    assert (given.seeds, given.epochs, given.sweep, given.no_attack) == ([3, 4], 2, True, True)


@pytest.mark.slow  # three PLD calibrations
def test_sweep_recipes_recalibrate_the_private_recipe_per_epsilon():
    recipes = demo.choose_recipes(
        N_FIT, epochs=2, target_epsilon=2.0, batch_size=64, learning_rate=0.01,
        l2_norm_clip=1.0, averaging_decay=None, dp_normalization="none",
        sweep_epsilons=[1.0, 4.0],
    )  # fmt: skip
    assert recipes.tuning == {} and recipes.non_private == demo.non_private_recipe(2)
    assert [r.name for r in recipes.sweep.values()] == [
        "sweep DP-Adam eps=1",
        "sweep DP-Adam eps=4",
    ]
    noise = [recipes.sweep[1.0].noise_multiplier, recipes.private.noise_multiplier]
    assert noise[0] > noise[1] > recipes.sweep[4.0].noise_multiplier
    assert all(r.learning_rate == 0.01 and r.batch_size == 64 for r in recipes.sweep.values())


@pytest.mark.slow  # over 3 s: the full tier
def test_python_m_pydp_r_demo_is_the_command_line():
    completed = subprocess.run(
        [sys.executable, "-m", "pydp_r.demo", "--help"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert "usage: python -m pydp_r.demo" in completed.stdout
    assert "--sweep-epsilon" in completed.stdout


def test_non_members_are_random_blocks_that_share_no_window_with_training():
    steps = np.arange(3000 * 1.0).reshape(-1, 1).repeat(6, axis=1)  # window index as feature
    x = pydp_r.data.sliding_sequences(steps.astype("float32"), 12)
    y = np.arange(len(x), dtype="float32")[:, None]
    x_fit, y_fit, x_out, y_out = demo.split_non_members(x, y, seed=4, blocks=5)
    assert len(y_fit) == len(y) - 5 * 40 and len(y_out) == 5 * (40 - 22)
    training_windows = set(x_fit[:, :, 0].ravel().tolist())
    assert not training_windows & set(x_out[:, :, 0].ravel().tolist())
    # Spread over the training span (not its end), and another seed draws other blocks.
    assert y_out.min() < len(y) / 2 < y_out.max()
    other = demo.split_non_members(x, y, seed=5, blocks=5)[3]
    assert not np.array_equal(other, y_out)
    with pytest.raises(ValueError, match="blocks must be an integer in"):
        demo.split_non_members(x, y, seed=0, blocks=len(y) // 40)
    with pytest.raises(ValueError, match="block_sequences must be an integer > 22"):
        demo.split_non_members(x, y, seed=0, block_sequences=22)


def test_population_is_split_by_wearer_and_scaled_with_public_statistics():
    scaling = (np.zeros(6), np.full(6, 2.0))
    arrays = demo.population_arrays(
        7, scaling, training_users=6, validation_users=2, test_users=3, n_labels_range=(20, 40)
    )
    fit_ids, test_ids = set(arrays.user_ids_fit), set(arrays.user_ids_test)
    assert len(fit_ids) == arrays.n_users == 6 and len(test_ids) == 3
    assert not fit_ids & test_ids
    assert len(arrays.x_fit) + len(arrays.x_val) + len(arrays.x_test) == sum(
        len(person["label"]) - 11
        for person in pydp_r.data.synthetic_ppg_population(11, 7, n_labels_range=(20, 40))
    )
    raw = pydp_r.data.heart_rate_sequences(
        pydp_r.data.synthetic_ppg_population(11, 7, n_labels_range=(20, 40))
    )[0]
    np.testing.assert_allclose(arrays.x_test, raw[-len(arrays.x_test) :] / 2.0)
    assert arrays.baseline_mae_bpm == pytest.approx(
        float(np.mean(np.abs(arrays.y_test - arrays.y_fit.mean())))
    )


@pytest.mark.slow  # PLD accounting of truncated batches
def test_user_noise_is_calibrated_for_the_ledgers_own_epsilon():
    recipe = demo.Recipe(
        "dp", batch_size=50, learning_rate=0.01, epochs=3, normalization="none",
        privacy_unit="user", examples_per_user=8,
    )  # fmt: skip
    noise = demo.calibrate_user_noise(recipe, 500, 2.0)
    segment = demo_user_level.user_segment(recipe, 500, noise)
    assert (segment.unit, segment.n, segment.steps, segment.examples_per_unit) == (
        "user", 500, 30, 8,
    )  # fmt: skip
    assert segment.truncated  # poisson_batches' default bound cuts at most 1e-6 of batches
    ledger = pydp_r.ledger.PrivacyLedger
    assert ledger([segment]).epsilon(1e-5, "pld") <= 2.0
    less = demo_user_level.user_segment(recipe, 500, noise / 1.002)
    assert ledger([less]).epsilon(1e-5, "pld") > 2.0
    assert demo_user_level.user_delta(500) == 1e-5
    assert demo_user_level.user_delta(200_000) == 1 / 200_000


def test_user_grids_give_each_model_the_same_number_of_candidates():
    sizes = [
        np.prod([len(values) for values in grid.values()])
        for grid in (demo_user_level.NON_PRIVATE_USER_GRID, demo_user_level.PRIVATE_USER_GRID)
    ]
    assert sizes[0] == sizes[1]
    assert not set(demo_user_level.USER_TUNING_SEEDS) & set(demo_user_level.USER_SEEDS)


@pytest.mark.slow
def test_user_level_demo_reports_what_the_ledger_recorded(tmp_path):
    recipes = demo.UserRecipes(
        demo.Recipe("non-private Adam", batch_size=256, learning_rate=3e-3, epochs=1,
                    normalization="batch"),
        demo.private_user_recipe(40, 2.0, users_per_batch=10, examples_per_user=4, epochs=2),
        {},
    )  # fmt: skip
    results = demo.run_user_demo(
        [3], tmp_path, training_users=40, held_out_users=(8, 10), recipes=recipes
    )
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert results["privacy_unit"] == "user" and results["delta"] == 1e-5
    non_private, private = results["runs"]
    assert non_private["privacy"] is None and non_private["epsilon"] is None
    privacy = private["privacy"]
    assert privacy["privacy_unit"] == "user" and privacy["n_units"] == 40
    assert privacy["sampling_rate"] == pytest.approx(10 / 40)
    assert privacy["max_units_per_batch"] == pydp_r.data.poisson_batch_size_bound(40, 0.25)
    assert (privacy["examples_per_unit"], privacy["steps"]) == (4, 2 * 4)
    assert privacy["noise_multiplier"] == pytest.approx(recipes.private.noise_multiplier)
    assert privacy["epsilon"] <= 2.0 and private["epsilon"] == privacy["epsilon"]
    # The epsilon is at least dp-accounting's own for the recorded run (truncation included).
    assert privacy["accountant"] == "pld"
    event = dp_accounting.TruncatedSubsampledGaussianDpEvent(
        privacy["n_units"],
        privacy["sampling_rate"],
        privacy["max_units_per_batch"],
        privacy["noise_multiplier"],
    )
    accountant = dp_accounting.pld.PLDAccountant()
    recomputed = accountant.compose(dp_accounting.SelfComposedDpEvent(event, privacy["steps"]))
    assert privacy["epsilon"] >= recomputed.get_epsilon(privacy["delta"])
    # One score per wearer: 10 held-out wearers against 10 training wearers.
    assert 0 <= private["membership_auc"] <= 1
    assert results["summary"]["DP-Adam per wearer eps=2"]["epsilon"] == privacy["epsilon"]
