"""Step-level audit of a DP optimizer: can one step's output tell whether a canary was in the batch?

Two neighbouring batches differ in one example: a canary whose gradient is far larger than
`l2_norm_clip`, or in its place a "null" example whose gradient is exactly zero (so the batch
size, and the microbatch split, are the same for both; with per-example clipping this is the
same as adding or removing the canary). Each trial runs the optimizer's real gradient
computation (`compute_dp_gradients`, or the training step `model.fit()` runs) once on one of the
two batches, with fresh noise, and records the private gradient's projection on the canary's
gradient direction. That statistic is the most powerful one for a Gaussian mechanism: a correct
optimizer shifts it by exactly `l2_norm_clip` between the two batches, buried in noise of std
`noise_multiplier * l2_norm_clip` (with microbatches, a partner example in the canary's
microbatch makes the shift the full 2 `l2_norm_clip` the accountant assumes). The trials' best
threshold test then gives an empirical epsilon lower bound (`pydp_r.audit.bounds`), to compare
with the accountant's epsilon for one step without sampling. A bound above the claim means the
implementation leaks more than it promises.

User-level adjacency (`audit_user_level_step`): the neighbouring batches differ in one whole
user, a block of many examples that the user-level step (what `fit()` runs on
`poisson_batches(..., user_ids=...)`) clips as one unit: a canary user whose examples all have
gradients far above `l2_norm_clip` in one direction, or a null user whose examples have zero
gradient. The accountant's claim per user is one Gaussian mechanism of sensitivity
`l2_norm_clip`; a step that clipped each example instead would move by up to `m` times that
for a user of `m` examples.

All trials of one side run in one `tf.function` loop, so thousands take seconds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from pydp_r import optimizers as optimizers_module
from pydp_r._checks import check_count, check_open_probability, check_real
from pydp_r.audit import bounds

MODES = ("gradients", "train_step")


@dataclasses.dataclass(frozen=True)
class StepAudit:
    """Result of `audit_optimizer_step`.

    Attributes:
        claimed_epsilon: The PLD accountant's epsilon for one unsampled step at `delta`.
        exact_epsilon: The exact epsilon of that Gaussian mechanism (Balle and Wang 2018).
        dp: Threshold audit valid for any mechanism (`method="dp"`).
        gdp: Threshold audit assuming the step is a Gaussian mechanism (`method="gdp"`).
        epsilon_lower_bound: The larger of the two bounds.
        ratio: `epsilon_lower_bound / claimed_epsilon`; near 1 for a tight correct optimizer,
            above 1 when the optimizer leaks more than claimed.
        passed: True when `epsilon_lower_bound <= claimed_epsilon`. Each of the two bounds
            holds with probability `confidence`, so a correct optimizer fails with
            probability at most `2 * (1 - confidence)` (for a given seed, always the same).
        scores_without: The statistic in every trial without the canary.
        scores_with: The statistic in every trial with the canary.
        noise_multiplier: The optimizer's noise multiplier.
        l2_norm_clip: The optimizer's clipping bound.
        sensitivity: Sensitivity of the step in units of `l2_norm_clip` the claim assumes
            (1 per-example, 2 with microbatches of several examples).
        delta: The delta of all epsilons.
        mode: "gradients" or "train_step".
    """

    claimed_epsilon: float
    exact_epsilon: float
    dp: bounds.ThresholdAudit
    gdp: bounds.ThresholdAudit
    epsilon_lower_bound: float
    ratio: float
    passed: bool
    scores_without: np.ndarray
    scores_with: np.ndarray
    noise_multiplier: float
    l2_norm_clip: float
    sensitivity: float
    delta: float
    mode: str

    def summary(self) -> str:
        """A few lines stating the claim, both lower bounds and the verdict."""
        lines = [
            f"One DP step, noise_multiplier={self.noise_multiplier:g}, "
            f"l2_norm_clip={self.l2_norm_clip:g}, delta={self.delta:g}, mode={self.mode}, "
            f"{self.scores_without.size} + {self.scores_with.size} trials",
            f"  accountant epsilon (PLD, one step): {self.claimed_epsilon:.3f}"
            f"  (exact Gaussian: {self.exact_epsilon:.3f})",
            f"  lower bound, any mechanism:          {self.dp.epsilon_lower_bound:.3f}"
            f"  (ratio {self.dp.epsilon_lower_bound / self.claimed_epsilon:.2f})",
            f"  lower bound, Gaussian mechanism:     {self.gdp.epsilon_lower_bound:.3f}"
            f"  (ratio {self.gdp.epsilon_lower_bound / self.claimed_epsilon:.2f},"
            f" mu >= {self.gdp.mu_lower_bound:.3f})",
            "  verdict: "
            + (
                "PASS (no lower bound above the claim)"
                if self.passed
                else "FAIL (the optimizer leaks more than the accountant claims)"
            ),
        ]
        return "\n".join(lines)


def _clone_optimizer(optimizer: Any, seed: int) -> Any:
    """A fresh, unbuilt copy: the audit must not touch the caller's optimizer or its state.

    Its noise follows `seed` (the audit is reproducible; the copy is never released).
    """
    if not isinstance(optimizer, optimizers_module.DPOptimizerMixin):
        raise ValueError(
            "optimizer must be a pydp_r DP optimizer (e.g. pydp_r.DPSGD(...)); received "
            f"{type(optimizer).__name__}."
        )
    if optimizer.gradient_accumulation_steps:
        raise ValueError(
            "optimizer must not accumulate gradients for a step audit (one step is one noisy "
            "release only without accumulation); received gradient_accumulation_steps="
            f"{optimizer.gradient_accumulation_steps!r}."
        )
    if optimizer.noise_multiplier == 0:
        raise ValueError(
            "optimizer.noise_multiplier must be > 0 for a step audit (0 claims no privacy); "
            "received 0."
        )
    return type(optimizer).from_config({**optimizer.get_config(), "noise_seed": seed})


def _audit_problem(
    num_features: int,
    batch_size: int,
    l2_norm_clip: float,
    canary_gradient_norm: float,
    with_partner: bool,
    seed: int,
) -> tuple[keras.Model, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tiny linear regression model and the two neighbouring batches.

    Returns `(model, x_without, y_without, x_with, y_with)`; the last example of each batch is
    the null example (zero gradient) or the canary. With `with_partner`, the example before it
    (in the same microbatch) has a gradient opposite to the canary's, of half its norm: its
    microbatch's clipped gradient is then `-C u` without the canary and `+C u` with it, the
    full sensitivity 2 C that microbatching is accounted for.
    """
    rng = np.random.default_rng(seed)
    model = keras.Sequential([keras.Input((num_features,)), keras.layers.Dense(1)])
    kernel = rng.normal(size=(num_features, 1)).astype(np.float32)
    bias = rng.normal(size=(1,)).astype(np.float32)
    model.set_weights([kernel, bias])
    x = rng.normal(size=(batch_size - 1, num_features)).astype(np.float32)
    y = rng.normal(size=(batch_size - 1, 1)).astype(np.float32)
    # For the squared error (w.x + b - y)^2 the gradient is 2 r (x, 1), r = w.x + b - y: the
    # null example has r = 0, the canary the r that makes its gradient norm as requested.
    x_null = rng.normal(size=(1, num_features)).astype(np.float32)
    y_null = x_null @ kernel + bias
    x_canary = rng.normal(size=(1, num_features)).astype(np.float32)
    squared_input_norm = float(np.sum(np.square(x_canary)))
    residual = canary_gradient_norm * l2_norm_clip / (2 * math.sqrt(1 + squared_input_norm))
    y_canary = (x_canary @ kernel + bias - residual).astype(np.float32)
    if with_partner:
        x[-1:] = x_canary
        y[-1:] = x_canary @ kernel + bias + residual / 2
    x_without = np.concatenate([x, x_null]).astype(np.float32)
    y_without = np.concatenate([y, y_null]).astype(np.float32)
    x_with = np.concatenate([x, x_canary]).astype(np.float32)
    y_with = np.concatenate([y, y_canary]).astype(np.float32)
    return model, x_without, y_without, x_with, y_with


def _user_audit_problem(
    num_features: int,
    num_users: int,
    examples_per_user: int,
    l2_norm_clip: float,
    canary_gradient_norm: float,
    seed: int,
) -> tuple[keras.Model, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tiny linear regression model and two batches that differ in their last user.

    Each batch is `num_users` blocks of `examples_per_user` rows, one user each (the layout of
    user-level `poisson_batches`). The last block is the null user (every example with zero
    gradient) or the canary user (every example with the same gradient, of norm
    `canary_gradient_norm * l2_norm_clip`, so that clipping each example alone would move the
    step by `examples_per_user * l2_norm_clip`). Returns `(model, x_without, y_without,
    x_with, y_with)`.
    """
    model, x_without, y_without, x_with, y_with = _audit_problem(
        num_features, 2, l2_norm_clip, canary_gradient_norm, False, seed
    )
    rng = np.random.default_rng(seed + 1)
    rows = (num_users - 1) * examples_per_user
    x = rng.normal(size=(rows, num_features)).astype(np.float32)
    y = rng.normal(size=(rows, 1)).astype(np.float32)

    def with_last_user(x_last: np.ndarray, y_last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        block_x = np.repeat(x_last, examples_per_user, axis=0)
        block_y = np.repeat(y_last, examples_per_user, axis=0)
        return np.concatenate([x, block_x]), np.concatenate([y, block_y])

    # The null and canary examples are those of the example-level problem, repeated.
    x_without, y_without = with_last_user(x_without[-1:], y_without[-1:])
    x_with, y_with = with_last_user(x_with[-1:], y_with[-1:])
    return model, x_without, y_without, x_with, y_with


def _squared_error(model: keras.Model, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.square(model(x) - y))


def _canary_direction(model: keras.Model, x_canary: np.ndarray, y_canary: np.ndarray) -> list:
    """The canary's gradient, over all trainable variables together, scaled to norm 1."""
    with tf.GradientTape() as tape:
        loss = _squared_error(model, tf.constant(x_canary), tf.constant(y_canary))
    gradients = tape.gradient(loss, model.trainable_variables)
    norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in gradients]))
    return [g / norm for g in gradients]


def _projection(vectors: list, direction: list) -> tf.Tensor:
    return tf.add_n([tf.reduce_sum(v * d) for v, d in zip(vectors, direction, strict=True)])


def _trial_runner(
    optimizer: Any, model: keras.Model, direction: list, trials: int, mode: str
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A function running `trials` independent DP steps on a batch `(x, y)`, returning scores.

    "gradients": `optimizer.compute_dp_gradients`, projected on `direction`. "train_step":
    the DP training step `fit()` uses, from the same weights and optimizer state every trial
    (both restored after each), the weight update projected on `-direction`. One traced
    `tf.function` serves both batches.
    """
    weights = model.trainable_variables
    if mode == "train_step":
        model.compile(optimizer=optimizer, loss="mse")
        optimizer.build(weights)
    state = list(weights) + list(optimizer.variables)
    initial = [tf.constant(v.numpy()) for v in state]

    def loss_fn(batch: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        return _squared_error(model, batch[0], batch[1])

    def one_trial(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        if mode == "gradients":
            gradients = optimizer.compute_dp_gradients(loss_fn, (x, y), weights)
            return _projection(gradients, direction)
        model.train_step((x, y))
        update = [w - tf.cast(v, w.dtype) for w, v in zip(weights, initial, strict=False)]
        score = -_projection(update, direction)
        with tf.control_dependencies([score]):
            restores = [v.assign(value) for v, value in zip(state, initial, strict=True)]
        with tf.control_dependencies(restores):
            return tf.identity(score)

    @tf.function(autograph=False)
    def run(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        def body(index: tf.Tensor, scores: tf.TensorArray) -> tuple[tf.Tensor, tf.TensorArray]:
            return index + 1, scores.write(index, one_trial(x, y))

        _, scores = tf.while_loop(
            lambda index, _: index < trials,
            body,
            (tf.constant(0), tf.TensorArray(tf.float32, size=trials)),
            # One trial at a time: the noise draws then follow the seed in trial order, and
            # no trial's step overlaps the previous trial's weight restore.
            parallel_iterations=1,
        )
        return scores.stack()

    def scores(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        try:
            return run(tf.constant(x), tf.constant(y)).numpy().astype(np.float64)
        finally:
            # Gradients computed and never applied: clear the optimizer's "computed, not yet
            # applied" mark so that it keeps refusing aggregated gradients afterwards.
            optimizer.discard_private_gradients()

    return scores


def audit_optimizer_step(
    optimizer: Any,
    num_trials: int = 2000,
    delta: float = 1e-5,
    confidence: float = 0.95,
    mode: str = "gradients",
    num_features: int = 4,
    batch_size: int = 8,
    canary_gradient_norm: float = 100.0,
    seed: int = 0,
) -> StepAudit:
    """Empirical epsilon lower bound of one step of a DP optimizer, against the accountant's claim.

    Args:
        optimizer: A pydp_r DP optimizer (e.g. `pydp_r.DPSGD(1.0, 1.0)`), without gradient
            accumulation and with `noise_multiplier > 0`. It is copied through its config;
            the caller's instance is not built or changed.
        num_trials: Trials per batch (with and without the canary), integer >= 8. Half of
            them choose the threshold, half bound the error rates.
        delta: Delta of the claim and of the bounds, in (0, 1).
        confidence: Probability with which each lower bound holds, in (0, 1).
        mode: "gradients" runs `optimizer.compute_dp_gradients` (custom training loops);
            "train_step" runs the step `model.fit()` runs (pydp_r's per-example training step
            and `apply_gradients`) and projects the weight update, restoring weights and
            optimizer state after every trial.
        num_features: Input features of the audited linear model, integer >= 1.
        batch_size: Examples in each batch, the canary (or null example) included, integer
            >= 2; with `num_microbatches` set it must be a multiple of it.
        canary_gradient_norm: The canary's gradient norm in units of `l2_norm_clip`, > 1.
        seed: Seeds the model, the batches and TensorFlow's global random seed (which the
            noise draws then follow).

    Returns:
        A `StepAudit`; `.summary()` prints it.

    Raises:
        ValueError: For an argument outside its range.
    """
    num_trials = check_count("num_trials", num_trials, 8)
    num_features = check_count("num_features", num_features)
    batch_size = check_count("batch_size", batch_size, 2)
    seed = check_count("seed", seed, 0)
    delta = check_open_probability("delta", delta)
    confidence = check_open_probability("confidence", confidence)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; received {mode!r}.")
    canary_gradient_norm = check_real(
        "canary_gradient_norm",
        canary_gradient_norm,
        "a finite number > 1 (in units of l2_norm_clip)",
        lambda x: 1 < x < math.inf,
    )
    optimizer = _clone_optimizer(optimizer, seed)
    num_microbatches = optimizer.num_microbatches
    if num_microbatches is not None and batch_size % num_microbatches != 0:
        raise ValueError(
            f"batch_size must be a multiple of the optimizer's num_microbatches="
            f"{num_microbatches}; received {batch_size!r}."
        )
    # A microbatch of several examples can move by up to 2 C when one example changes.
    sensitivity = 2.0 if num_microbatches is not None and num_microbatches < batch_size else 1.0
    claimed = bounds.accountant_epsilon_one_step(optimizer.noise_multiplier, delta, sensitivity)
    exact = bounds.gaussian_epsilon(optimizer.noise_multiplier, delta, sensitivity)

    tf.random.set_seed(seed)
    model, x_without, y_without, x_with, y_with = _audit_problem(
        num_features,
        batch_size,
        optimizer.l2_norm_clip,
        canary_gradient_norm,
        sensitivity == 2.0,
        seed,
    )
    direction = _canary_direction(model, x_with[-1:], y_with[-1:])
    run = _trial_runner(optimizer, model, direction, num_trials, mode)
    return _step_audit(
        run, (x_without, y_without), (x_with, y_with), claimed, exact, optimizer,
        sensitivity, delta, confidence, mode,
    )  # fmt: skip


def audit_user_level_step(
    optimizer: Any,
    num_trials: int = 2000,
    delta: float = 1e-5,
    confidence: float = 0.95,
    num_users: int = 4,
    examples_per_user: int = 8,
    num_features: int = 4,
    canary_gradient_norm: float = 100.0,
    seed: int = 0,
) -> StepAudit:
    """Empirical epsilon lower bound of one user-level DP step, removing one whole user.

    Runs the training step `fit()` runs on user-level Poisson batches (each user's block of
    rows clipped as one unit) on two batches that differ in one user of `examples_per_user`
    examples (see the module docstring), and compares the best threshold test's epsilon
    lower bound with the accountant's per-user claim: one unsampled Gaussian step of
    sensitivity `l2_norm_clip`.

    Args:
        optimizer: A pydp_r DP optimizer without microbatches or gradient accumulation and
            with `noise_multiplier > 0`; copied through its config.
        num_trials: Trials per batch (with and without the canary user), integer >= 8.
        delta: Delta of the claim and of the bounds, in (0, 1).
        confidence: Probability with which each lower bound holds, in (0, 1).
        num_users: Users (blocks) per batch, the canary or null user included, integer >= 2.
        examples_per_user: Rows per user, integer >= 1.
        num_features: Input features of the audited linear model, integer >= 1.
        canary_gradient_norm: Each canary example's gradient norm in units of
            `l2_norm_clip`, > 1.
        seed: Seeds the model, the batches and the noise.

    Returns:
        A `StepAudit` (mode "user_step", sensitivity 1 per user); `.summary()` prints it.

    Raises:
        ValueError: For an argument outside its range, or an optimizer with microbatches.
    """
    num_trials = check_count("num_trials", num_trials, 8)
    num_users = check_count("num_users", num_users, 2)
    examples_per_user = check_count("examples_per_user", examples_per_user)
    num_features = check_count("num_features", num_features)
    seed = check_count("seed", seed, 0)
    delta = check_open_probability("delta", delta)
    confidence = check_open_probability("confidence", confidence)
    canary_gradient_norm = check_real(
        "canary_gradient_norm",
        canary_gradient_norm,
        "a finite number > 1 (in units of l2_norm_clip)",
        lambda x: 1 < x < math.inf,
    )
    optimizer = _clone_optimizer(optimizer, seed)
    if optimizer.num_microbatches is not None:
        raise ValueError(
            "optimizer must have num_microbatches=None for a user-level audit (user-level "
            f"batches clip each user as one unit); received {optimizer.num_microbatches!r}."
        )
    claimed = bounds.accountant_epsilon_one_step(optimizer.noise_multiplier, delta)
    exact = bounds.gaussian_epsilon(optimizer.noise_multiplier, delta)

    tf.random.set_seed(seed)
    model, x_without, y_without, x_with, y_with = _user_audit_problem(
        num_features,
        num_users,
        examples_per_user,
        optimizer.l2_norm_clip,
        canary_gradient_norm,
        seed,
    )
    direction = _canary_direction(model, x_with[-1:], y_with[-1:])
    # What fit() sets for user-level poisson_batches: the traced step reads it.
    optimizer.user_blocks = (num_users, examples_per_user)
    run = _trial_runner(optimizer, model, direction, num_trials, "train_step")
    return _step_audit(
        run, (x_without, y_without), (x_with, y_with), claimed, exact, optimizer,
        1.0, delta, confidence, "user_step",
    )  # fmt: skip


def _step_audit(
    run: Callable[[Any, Any], np.ndarray],
    without: tuple[Any, Any],
    with_canary: tuple[Any, Any],
    claimed: float,
    exact: float,
    optimizer: Any,
    sensitivity: float,
    delta: float,
    confidence: float,
    mode: str,
) -> StepAudit:
    """Run the trials on both adjacent batches and bound epsilon from their scores."""
    scores_without = run(*without)
    scores_with = run(*with_canary)
    dp_audit = bounds.epsilon_lower_bound(
        scores_without, scores_with, delta, confidence, method="dp"
    )
    gdp_audit = bounds.epsilon_lower_bound(
        scores_without, scores_with, delta, confidence, method="gdp"
    )
    lower_bound = max(dp_audit.epsilon_lower_bound, gdp_audit.epsilon_lower_bound)
    return StepAudit(
        claimed_epsilon=claimed,
        exact_epsilon=exact,
        dp=dp_audit,
        gdp=gdp_audit,
        epsilon_lower_bound=lower_bound,
        ratio=lower_bound / claimed,
        passed=lower_bound <= claimed,
        scores_without=scores_without,
        scores_with=scores_with,
        noise_multiplier=optimizer.noise_multiplier,
        l2_norm_clip=optimizer.l2_norm_clip,
        sensitivity=sensitivity,
        delta=float(delta),
        mode=mode,
    )
