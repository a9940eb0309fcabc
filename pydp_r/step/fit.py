"""What a DP model's `fit()` does before Keras' own: describe its input for the privacy ledger,
refuse what the step cannot run, and add the `LedgerRecorder`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from pydp_r import callbacks
from pydp_r.ledger import USER
from pydp_r.optimizers import DPOptimizerMixin
from pydp_r.step.train_step import dp_optimizer


def before_fit(model: keras.Model, arguments: dict[str, Any]) -> Callable[[], None]:
    """Check a DP model's `fit()` call (its bound arguments, changed in place) and add the
    recorder of its privacy ledger.

    Returns:
        What to run when `fit()` ends, however it ends: record a partial epoch's steps.
    """
    optimizer = dp_optimizer(model)
    recorder = callbacks.LedgerRecorder(optimizer, callbacks.describe_fit_input(arguments))
    given = arguments.get("callbacks")
    if isinstance(given, keras.callbacks.CallbackList):
        given.callbacks.insert(0, recorder)
        recorder.set_model(model)
    else:
        arguments["callbacks"] = [recorder, *(given or [])]
    poisson = recorder.fit_input.poisson
    user_blocks = None
    if poisson is not None and poisson.unit == USER:
        user_blocks = (poisson.units_per_batch, poisson.examples_per_unit)
        _check_user_level(model, optimizer, poisson.units_per_batch)
    if (optimizer.input_is_padded, optimizer.user_blocks) != (
        recorder.fit_input.padded,
        user_blocks,
    ):
        optimizer.input_is_padded = recorder.fit_input.padded
        optimizer.user_blocks = user_blocks
        # The traced step reads these: trace again for the new kind of input.
        model.train_function = None
    return recorder.end_fit


def _check_user_level(model: keras.Model, optimizer: DPOptimizerMixin, users: int) -> None:
    """Refuse what user-level batches cannot run with: microbatches of their own, or replicas
    that would split a user's block."""
    if optimizer.num_microbatches is not None:
        raise ValueError(
            f"num_microbatches={optimizer.num_microbatches} cannot be combined with user-level "
            "poisson_batches (user_ids=...), which clip each user's examples as one unit: build "
            "the optimizer with num_microbatches=None."
        )
    replicas = model.distribute_strategy.num_replicas_in_sync
    if users % replicas:
        raise ValueError(
            f"max_batch_size={users} users must be a multiple of the {replicas} replicas, so that "
            "no user's rows are split between them; give poisson_batches a max_batch_size that is."
        )
