"""The R package pydpr, driven from Python: argument checks in R, and R's numbers equal Python's.

R code that creates reticulate objects runs in an `Rscript` subprocess (reticulate 1.28 can abort
a process that embeds R through rpy2 when it collects Python references); rpy2 runs in-process
only R code that never reaches Python. The tests skip when R or the installed package `pydpr` is
missing, and fail instead under PYDPR_REQUIRE_R=true. The package is found on R's usual library
paths, R_LIBS, or the project library `.Rlib` that `make` installs it into.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pydp_r.accounting import compute_epsilon

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT_R_LIBRARY = REPO_ROOT / ".Rlib"
R_REQUIRED = os.environ.get("PYDPR_REQUIRE_R", "").lower() == "true"


def _skip_or_fail(reason: str) -> None:
    if R_REQUIRED:
        pytest.fail(f"PYDPR_REQUIRE_R=true but {reason}")
    pytest.skip(reason)


def _r_environment() -> dict[str, str]:
    """This process's environment with the project R library first on R_LIBS."""
    environment = dict(os.environ)
    libraries = [environment["R_LIBS"]] if environment.get("R_LIBS") else []
    if PROJECT_R_LIBRARY.is_dir():
        libraries.insert(0, str(PROJECT_R_LIBRARY))
    if libraries:
        environment["R_LIBS"] = os.pathsep.join(libraries)
    return environment


def _run_r(code: str, **extra_environment: str) -> subprocess.CompletedProcess:
    rscript = shutil.which("Rscript")
    if rscript is None:
        _skip_or_fail("R (Rscript) is not installed")
    return subprocess.run(
        [rscript, "--vanilla", "-e", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**_r_environment(), **extra_environment},
        check=False,
    )


@pytest.fixture(scope="module")
def installed_pydpr() -> None:
    """Skips (or fails) unless Rscript can load the installed R package pydpr."""
    status = _run_r('quit(status = if (requireNamespace("pydpr", quietly = TRUE)) 0 else 3)')
    if status.returncode != 0:
        _skip_or_fail(
            "the R package pydpr is not installed (R CMD INSTALL --library=.Rlib . installs it)"
        )


@pytest.fixture(scope="module")
def embedded_r(installed_pydpr):
    """rpy2's in-process R with the project library on its search path and pydpr attached."""
    try:
        import rpy2.robjects as robjects
    except Exception as error:  # rpy2 raises more than ImportError when R is unusable
        _skip_or_fail(f"rpy2 cannot embed R ({type(error).__name__}: {error})")
    if PROJECT_R_LIBRARY.is_dir():
        robjects.r(f'.libPaths(c("{PROJECT_R_LIBRARY.as_posix()}", .libPaths()))')
    robjects.r("suppressPackageStartupMessages(library(pydpr))")
    return robjects.r


def _r_error(r, call: str) -> str:
    """The class and message of the R error `call` raises, or 'no error'."""
    result = r(
        f"tryCatch({{ {call}; 'no error' }}, "
        "error = function(e) paste(class(e)[[1]], conditionMessage(e)))"
    )
    return str(result[0])


def _accounting_call(function: str, **changes: str) -> str:
    """An R call of pydpr's `function` with the MNIST accounting arguments, some changed."""
    arguments = {
        "n": "60000",
        "batch_size": "256",
        "noise_multiplier": "1.1",
        "epochs": "60",
        "delta": "1e-5",
        **changes,
    }
    return f"pydpr::{function}({', '.join(f'{k} = {v}' for k, v in arguments.items())})"


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (_accounting_call("compute_epsilon", n="-1"), "n"),
        (_accounting_call("compute_epsilon", batch_size="256.5"), "batch_size"),
        (_accounting_call("compute_epsilon", delta="1"), "delta"),
        (_accounting_call("compute_epsilon", accountant="'gdp'"), "accountant"),
        (_accounting_call("privacy_statement", epochs="0"), "epochs"),
        ("pydpr::optimizer_dp_adam(l2_norm_clip = -1, noise_multiplier = 1.1)", "l2_norm_clip"),
        ("pydpr::optimizer_dp_sgd(1, 1.1, num_microbatches = 2.5)", "num_microbatches"),
        ("pydpr::callback_privacy_budget(n = 100, batch_size = 10, delta = 0)", "delta"),
        ("pydpr::heart_rate_datasets(42)", "subject"),
        ("pydpr::average_and_make_sequences('signal', 64, 12)", "data"),
    ],
)
def test_bad_input_is_rejected_in_r_before_python_starts(embedded_r, call, argument):
    error = _r_error(embedded_r, call)
    assert error.startswith("pydpr_argument_error ")
    assert f"`{argument}`" in error
    # The check ran in R alone: reticulate has not started (or even looked for) a Python.
    assert not embedded_r("reticulate::py_available(initialize = FALSE)")[0]


def test_r_compute_epsilon_prints_pythons_number():
    r_code = f"""
        library(pydpr)
        cat(sprintf("%.17g", {_accounting_call("compute_epsilon")}), "\\n")
        cat(sprintf("%.17g", {_accounting_call("compute_epsilon", accountant='"pld"')}), "\\n")
        error <- tryCatch(
            compute_noise_multiplier(n = 100, batch_size = 100, target_epsilon = 1e-9,
                                     epochs = 1000, delta = 1e-5),
            error = function(e) e
        )
        cat(class(error)[[1]], conditionMessage(error), "\\n")
    """
    result = _run_r(r_code, RETICULATE_PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL="2")
    if result.returncode != 0 and "there is no package called" in result.stderr:
        _skip_or_fail("the R package pydpr is not installed")
    assert result.returncode == 0, result.stderr[-3000:]
    rdp_line, pld_line, error_line = result.stdout.strip().splitlines()[-3:]
    assert float(rdp_line) == compute_epsilon(60000, 256, 1.1, 60, 1e-5)
    assert float(pld_line) == compute_epsilon(60000, 256, 1.1, 60, 1e-5, accountant="pld")
    assert error_line.startswith("pydpr_python_error ValueError: target_epsilon=1e-09")


def test_fix_hints_are_r_code_under_reticulate(monkeypatch):
    import keras

    from pydp_r._r_hints import called_from_r, fix_hint
    from pydp_r.batch_norm import check_no_batch_norm

    model = keras.Sequential([keras.Input((4, 2)), keras.layers.BatchNormalization()])
    monkeypatch.delitem(sys.modules, "rpytools", raising=False)
    assert not called_from_r()
    with pytest.raises(ValueError, match=r"model = pydp_r\.replace_batch_norm\(model\)"):
        check_no_batch_norm(model)
    monkeypatch.setitem(sys.modules, "rpytools", object())
    assert fix_hint("python()", "r()") == "r()"
    with pytest.raises(ValueError, match=r"`model <- replace_batch_norm\(model\)`") as error:
        check_no_batch_norm(model)
    assert "pydp_r." not in str(error.value)


def test_replace_batch_norm_on_a_model_without_input_shape_picks_groups_at_build():
    """The R walkthrough defines its convnet without an input shape, as keras_model_sequential()."""
    import keras
    import numpy as np

    from pydp_r.batch_norm import GroupNormalizationUpTo, replace_batch_norm

    model = keras.Sequential(
        [
            keras.layers.Conv1D(12, 3, activation="relu"),
            keras.layers.BatchNormalization(name="norm"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(1),
        ]
    )
    replaced = replace_batch_norm(model, max_groups=8)
    norm = replaced.get_layer("norm")
    assert isinstance(norm, GroupNormalizationUpTo)
    replaced(np.zeros((2, 12, 6), np.float32))
    assert norm.groups == 6  # the largest divisor of 12 channels that is <= 8
    restored = keras.layers.deserialize(keras.layers.serialize(norm))
    assert restored.max_groups == 8


@pytest.mark.slow
def test_r_walkthrough_runs_and_has_the_posts_shapes(installed_pydpr):
    """examples/walkthrough.R, one epoch each run, on the synthetic subject of S1's size."""
    script = REPO_ROOT / "examples" / "walkthrough.R"
    environment = {
        "RETICULATE_PYTHON": sys.executable,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "WALKTHROUGH_EPOCHS": "1",
        "PPG_DALIA_DIR": "",
    }
    result = _run_r(f'source("{script.as_posix()}", echo = FALSE)', **environment)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training sequences: 3989 of n_train = 3989" in result.stdout
    assert "test sequences: 592 of n_test = 592" in result.stdout
    assert "test MAE after 1 epochs" in result.stdout
