"""The pydp-r command line: prints what the Python API computes; bad input exits 2 cleanly."""

import os
import subprocess
import sys

import pytest

from pydp_r.accounting import compute_epsilon, compute_noise_multiplier, privacy_statement
from pydp_r.cli import main

MNIST = ["--n", "60000", "--batch-size", "256", "--epochs", "60", "--delta", "1e-5"]


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_epsilon_prints_compute_epsilon(capsys):
    status, out, err = run(capsys, "epsilon", *MNIST, "--noise-multiplier", "1.1")
    assert status == 0 and err == ""
    assert float(out) == compute_epsilon(60000, 256, 1.1, 60, 1e-5)


def test_epsilon_options_reach_the_accountant(capsys):
    _, pld, _ = run(capsys, "epsilon", *MNIST, "--noise-multiplier", "1.1", "--accountant", "pld")
    assert float(pld) == compute_epsilon(60000, 256, 1.1, 60, 1e-5, accountant="pld")
    _, micro, _ = run(capsys, "epsilon", *MNIST, "--noise-multiplier", "1.1", "--microbatching")
    assert float(micro) == compute_epsilon(60000, 256, 1.1, 60, 1e-5, used_microbatching=True)
    assert float(pld) < float(micro)


def test_noise_prints_compute_noise_multiplier(capsys):
    status, out, _ = run(capsys, "noise", *MNIST, "--target-epsilon", "3")
    assert status == 0
    assert float(out) == compute_noise_multiplier(60000, 256, 3.0, 60, 1e-5)
    assert compute_epsilon(60000, 256, float(out), 60, 1e-5) <= 3


def test_statement_prints_privacy_statement(capsys):
    argv = ["statement", "--n", "1000", "--batch-size", "50", "--epochs", "3", "--delta", "1e-5"]
    status, out, _ = run(capsys, *argv, "--noise-multiplier", "1.5", "--max-examples-per-user", "2")
    assert status == 0
    assert out == privacy_statement(1000, 50, 1.5, 3, 1e-5, max_examples_per_user=2)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["epsilon", *MNIST[:2], "--batch-size", "70000", *MNIST[4:], "--noise-multiplier", "1"],
         "batch_size must be an integer in [1, n] = [1, 60000]; received 70000"),
        (["epsilon", *MNIST, "--noise-multiplier", "-1"], "noise_multiplier must be a number in"),
        (["noise", *MNIST, "--target-epsilon", "0"], "target_epsilon must be a finite number > 0"),
        (["epsilon", *MNIST[:-1], "2", "--noise-multiplier", "1"], "delta must be a number in"),
        (["noise", "--n", "10", "--batch-size", "10", "--epochs", "100", "--delta", "1e-5",
          "--target-epsilon", "0.001"], "unreachable"),
    ],
)  # fmt: skip
def test_bad_values_exit_2_with_the_message(capsys, argv, message):
    status, out, err = run(capsys, *argv)
    assert status == 2 and out == ""
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["epsilon", *MNIST],  # --noise-multiplier missing
        ["epsilon", *MNIST, "--noise-multiplier", "x"],
        ["epsilon", *MNIST, "--noise-multiplier", "1", "--accountant", "moments"],
        ["audit-everything"],
    ],
)
def test_malformed_command_lines_exit_2(capsys, argv):
    status, out, err = run(capsys, *argv)
    assert status == 2 and out == ""
    assert "usage: pydp-r" in err


def test_help_exits_0(capsys):
    status, out, _ = run(capsys, "epsilon", "--help")
    assert status == 0 and "--noise-multiplier" in out and "--accountant" in out


def test_installed_entry_point_exit_codes():
    # The real process: the exit status reaches the shell and no traceback is printed.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "pydp_r.cli", "epsilon", *MNIST]
    good = subprocess.run(
        [*command, "--noise-multiplier", "1.1"], capture_output=True, text=True, env=env
    )
    assert good.returncode == 0
    assert float(good.stdout) == pytest.approx(compute_epsilon(60000, 256, 1.1, 60, 1e-5))
    bad = subprocess.run(
        [*command, "--noise-multiplier", "-2"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert "noise_multiplier" in bad.stderr and "Traceback" not in bad.stderr


def test_audit_subcommand_prints_the_step_audit(capsys):
    status = main(["audit", "--audits", "step", "--quick", "--num-trials", "400"])
    output = capsys.readouterr().out
    assert status == 0
    assert "step" in output.lower() and "epsilon" in output.lower()


def test_counts_may_be_written_in_scientific_notation(capsys):
    # Issue #26: `pydp-r plan --n 1e10` must plan (argparse's int() refused "1e10").
    status, out, _ = run(capsys, "epsilon", *MNIST, "--noise-multiplier", "1.1")
    scientific = ["--n", "6e4", *MNIST[2:]]
    assert run(capsys, "epsilon", *scientific, "--noise-multiplier", "1.1")[1] == out
    argv = ["plan", "--n", "1e10", "--target-epsilon", "3", "--epochs", "1", "--delta", "1e-12"]
    status, out, err = run(capsys, *argv, "--batch-sizes", "16", "1.6777216e7")
    assert status == 0, err
    assert "batch size        16777216" in out and "Left out: batch sizes [16]" in out
    status, _, err = run(capsys, "epsilon", "--n", "6.5e0", *MNIST[2:], "--noise-multiplier", "1")
    assert status == 2 and "expected a whole number; received '6.5e0'" in err


def test_audit_checks_its_arguments_before_loading_tensorflow():
    # Issue #26: a bad value was refused only after the audits had imported TensorFlow.
    code = (
        "import sys\n"
        "from pydp_r.cli import main\n"
        "status = main(['audit', '--audits', 'step', '--l2-norm-clip', '0'])\n"
        "print(status, 'tensorflow' in sys.modules)\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.stdout.split() == ["2", "False"], result.stderr
    assert "l2_norm_clip must be a finite number > 0; received 0.0" in result.stderr


def test_audit_subcommand_rejects_bad_values(capsys):
    assert main(["audit", "--audits", "step", "--noise-multiplier", "-1"]) == 2
    assert "noise_multiplier" in capsys.readouterr().err


def test_plan_prints_plan_dp_training(capsys):
    from pydp_r.planner import plan_dp_training

    argv = ["--n", "3378", "--target-epsilon", "2", "--epochs", "20", "--delta", "1e-5"]
    status, out, err = run(
        capsys, "plan", *argv, "--batch-sizes", "128", "512", "--min-steps", "100"
    )
    assert status == 0 and err == ""
    expected = plan_dp_training(3378, 2.0, 20, 1e-5, batch_sizes=[128, 512], min_steps=100)
    assert out == str(expected) + "\n"
    assert expected.batch_size == 512  # 132 steps >= 100, and less noisy than 128


def test_plan_rejects_bad_values(capsys):
    argv = ["plan", "--n", "100", "--target-epsilon", "2", "--epochs", "5", "--delta", "1e-5"]
    status, _, err = run(capsys, *argv, "--batch-sizes", "500")
    assert status == 2
    assert "batch_sizes must be integers in [1, n] = [1, 100]; received 500" in err


TF_PRIVACY_FLAGS = ["--N=60000", "--batch_size=256", "--noise_multiplier=1.1", "--epochs=60"]


@pytest.mark.slow  # over 3 s: the full tier
def test_compute_dp_sgd_privacy_subcommand_is_tf_privacys_script(capsys):
    from pydp_r.tensorflow_privacy.privacy.analysis import compute_dp_sgd_privacy_lib as lib

    status, out, err = run(capsys, "compute_dp_sgd_privacy", *TF_PRIVACY_FLAGS, "--delta=1e-5")
    assert status == 0 and err == ""
    # TF Privacy's defaults: microbatching on, RDP, no user bound; epochs is a float flag
    # there too, so its statement also reads "60.0 epochs".
    assert out == lib.compute_dp_sgd_privacy_statement(60000, 256, 60.0, 1.1, 1e-5)
    _, default_delta, _ = run(capsys, "compute_dp_sgd_privacy", *TF_PRIVACY_FLAGS)
    assert "delta = 1e-06" in default_delta
    for off in ("--used_microbatching=false", "--noused_microbatching"):
        _, out_off, _ = run(capsys, "compute_dp_sgd_privacy", *TF_PRIVACY_FLAGS, off)
        assert out_off == lib.compute_dp_sgd_privacy_statement(
            60000, 256, 60.0, 1.1, 1e-6, used_microbatching=False
        )
    _, pld, _ = run(
        capsys,
        "compute_dp_sgd_privacy",
        *TF_PRIVACY_FLAGS,
        "--accountant_type=PLD",
        "--max_examples_per_user=2",
    )
    assert pld == lib.compute_dp_sgd_privacy_statement(
        60000, 256, 60.0, 1.1, 1e-6, max_examples_per_user=2, accountant_type=lib.AccountantType.PLD
    )


@pytest.mark.slow  # over 3 s: the full tier
def test_other_subcommands_accept_tf_privacys_flag_spellings(capsys):
    status, out, _ = run(capsys, "epsilon", *TF_PRIVACY_FLAGS, "--delta=1e-5")
    assert status == 0 and float(out) == compute_epsilon(60000, 256, 1.1, 60, 1e-5)
    _, pld, _ = run(
        capsys, "epsilon", *TF_PRIVACY_FLAGS, "--delta=1e-5", "--accountant_type=PLD",
        "--used_microbatching",
    )  # fmt: skip
    assert float(pld) == compute_epsilon(
        60000, 256, 1.1, 60, 1e-5, accountant="pld", used_microbatching=True
    )
    _, noise, _ = run(
        capsys, "noise", "--N=60000", "--batch_size=256", "--epochs=60", "--delta=1e-5",
        "--target_epsilon=3",
    )  # fmt: skip
    assert float(noise) == compute_noise_multiplier(60000, 256, 3.0, 60, 1e-5)


def test_compute_dp_sgd_privacy_subcommand_rejects_bad_values(capsys):
    status, _, err = run(
        capsys, "compute_dp_sgd_privacy", "--N=100", "--batch_size=256", "--noise_multiplier=1",
        "--epochs=1",
    )  # fmt: skip
    assert status == 2 and "batch_size must be an integer in [1, number_of_examples]" in err
    status, _, _ = run(
        capsys, "compute_dp_sgd_privacy", *TF_PRIVACY_FLAGS, "--used_microbatching=x"
    )
    assert status == 2


def test_the_command_line_does_not_load_tensorflow():
    # `pydp-r epsilon` must stay as quick as dp-accounting itself (the seam issue).
    import subprocess
    import sys

    code = (
        "import sys, pydp_r.cli; pydp_r.cli.main(['epsilon', '--n', '60000', '--batch-size',"
        " '256', '--noise-multiplier', '1.1', '--epochs', '60', '--delta', '1e-5']);"
        " assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.slow  # over 3 s: the full tier
def test_plan_per_wearer_prints_the_planners_answer(capsys):
    from pydp_r.planner import plan_dp_training

    common = ["--epochs", "20", "--delta", "1e-6", "--unit", "user"]
    status, out, err = run(
        capsys,
        "plan",
        "--n",
        "1000",
        "--target-epsilon",
        "1",
        "--max-examples-per-user",
        "32",
        "--batch-sizes",
        "128",
        *common,
    )
    assert status == 0 and err == ""
    expected = plan_dp_training(
        1000, 1.0, 20, 1e-6, batch_sizes=[128], unit="user", max_examples_per_user=32
    )
    assert out == str(expected) + "\n"
    status, out, _ = run(
        capsys,
        "plan",
        "--target-epsilon",
        "1",
        "--noise-to-signal",
        "0.05",
        "--max-examples-per-user",
        "32",
        *common,
    )
    assert status == 0
    assert (
        out
        == str(
            plan_dp_training(
                None, 1.0, 20, 1e-6, unit="user", max_examples_per_user=32, noise_to_signal=0.05
            )
        )
        + "\n"
    )
    status, _, err = run(capsys, "plan", "--n", "1000", "--max-examples-per-user", "32", *common)
    assert status == 2 and "give exactly two of n (wearers)" in err


def test_statement_per_wearer(capsys):
    status, out, _ = run(
        capsys,
        "statement",
        "--n",
        "1000",
        "--batch-size",
        "64",
        "--noise-multiplier",
        "1.2",
        "--epochs",
        "20",
        "--delta",
        "1e-6",
        "--unit",
        "user",
        "--max-examples-per-user",
        "32",
    )
    assert status == 0
    assert out == privacy_statement(1000, 64, 1.2, 20, 1e-6, max_examples_per_user=32, unit="user")
