"""Loss-threshold membership inference on a trained model (Yeom et al. 2018).

Training examples tend to have lower loss than unseen ones. The attack scores every example by
its negative loss: the area under its ROC curve (AUC; 0.5 is chance) measures how much the model
reveals about who was in the training set, and its best threshold test (low loss means member,
a direction fixed in advance) gives an implied epsilon lower bound
(`pydp_r.audit.bounds.epsilon_lower_bound`), comparable with the accountant's epsilon.

Read the bound with care. It treats every example as an independent trial, which is sound when
members and non-members were drawn from one distribution and assigned at random (Steinke, Nasr
and Jagielski 2023 give the exact analysis for one training run); when non-members come from a
different distribution (e.g. a later time range), the attack also detects that shift and the
bound can exceed the true epsilon of membership. A small bound never proves privacy: it is only
what this one attack finds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from scipy import stats

from pydp_r._checks import (
    check_count,
    check_finite_scores,
    check_open_probability,
    check_real,
)
from pydp_r.audit import bounds


@dataclasses.dataclass(frozen=True)
class MembershipInference:
    """Result of `membership_inference`.

    Attributes:
        auc: Area under the ROC curve of the loss-threshold attack, in [0, 1]; 0.5 is chance,
            above 0.5 means members have lower loss.
        epsilon_lower_bound: Implied epsilon lower bound at `delta` (see the module's caveats).
        advantage: Largest true positive rate minus false positive rate over all thresholds
            (membership advantage, Yeom et al. 2018), in [0, 1].
        threshold_audit: The `ThresholdAudit` behind the bound (its scores are -loss).
        member_losses: Per-example loss of every member.
        non_member_losses: Per-example loss of every non-member.
        delta: The delta of the bound.
    """

    auc: float
    epsilon_lower_bound: float
    advantage: float
    threshold_audit: bounds.ThresholdAudit
    member_losses: np.ndarray
    non_member_losses: np.ndarray
    delta: float

    def summary(self) -> str:
        """One line with AUC, advantage and the implied bound."""
        return (
            f"loss-threshold membership inference: AUC {self.auc:.3f}, advantage "
            f"{self.advantage:.3f}, implied epsilon lower bound {self.epsilon_lower_bound:.3f} "
            f"at delta={self.delta:g} ({self.member_losses.size} members, "
            f"{self.non_member_losses.size} non-members; mean loss "
            f"{self.member_losses.mean():.4g} vs {self.non_member_losses.mean():.4g})"
        )


def roc_auc(negative_scores: Any, positive_scores: Any) -> float:
    """Probability that a random positive scores above a random negative (ties count half).

    Args:
        negative_scores: Scores of the negatives (array-like, at least one finite number).
        positive_scores: Scores of the positives (at least one).

    Returns:
        The AUC (Mann-Whitney U over the product of the counts), in [0, 1].

    Raises:
        ValueError: When a side is empty or holds NaN or infinity.
    """
    negatives = check_finite_scores("negative_scores", negative_scores, 1)
    positives = check_finite_scores("positive_scores", positive_scores, 1)
    ranks = stats.rankdata(np.concatenate([positives, negatives]))
    rank_sum = ranks[: positives.size].sum()
    u_statistic = rank_sum - positives.size * (positives.size + 1) / 2
    return float(u_statistic / (positives.size * negatives.size))


def _advantage(negative_scores: np.ndarray, positive_scores: np.ndarray) -> float:
    thresholds = np.unique(np.concatenate([negative_scores, positive_scores]))
    true_positive = 1 - np.searchsorted(np.sort(positive_scores), thresholds, "right") / (
        positive_scores.size
    )
    false_positive = 1 - np.searchsorted(np.sort(negative_scores), thresholds, "right") / (
        negative_scores.size
    )
    # The threshold below every score says "member" for all: advantage 0.
    return float(max(0.0, np.max(true_positive - false_positive)))


def _loss_function(model: keras.Model, loss: Any) -> Callable[[Any, Any], Any]:
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError(
                "loss must be given when the model is not compiled with a loss; received None."
            )
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        # `call` skips the reduction over the batch: one value per example.
        return loss.call
    if callable(loss):
        return loss
    raise ValueError(
        "loss must be None (the model's compiled loss), a Keras loss name, a keras.losses.Loss "
        f"or a callable (y_true, y_pred) -> per-example losses; received {loss!r}."
    )


def per_example_losses(
    model: keras.Model, x: Any, y: Any, loss: Any = None, batch_size: int = 256
) -> np.ndarray:
    """The loss of every example on its own.

    Args:
        model: A Keras model with a single output.
        x: Inputs, leading dimension = number of examples (>= 1).
        y: Targets with the same leading dimension.
        loss: None (the model's compiled loss), a Keras loss name such as "mse", a
            `keras.losses.Loss`, or a callable `(y_true, y_pred)` returning per-example losses.
        batch_size: Examples per prediction batch, integer >= 1.

    Returns:
        Float64 array of shape `(number of examples,)`; losses with more than one value per
        example are averaged over the rest.

    Raises:
        ValueError: For a loss that cannot be resolved or mismatched lengths.
    """
    batch_size = check_count("batch_size", batch_size)
    loss_fn = _loss_function(model, loss)
    x_array, y_array = np.asarray(x), np.asarray(y)
    if x_array.shape[0] != y_array.shape[0] or x_array.shape[0] < 1:
        raise ValueError(
            "x and y must hold the same number of examples, at least 1; received "
            f"{x_array.shape[0]} and {y_array.shape[0]}."
        )
    y_pred = model.predict(x_array, batch_size=int(batch_size), verbose=0)
    values = np.asarray(keras.ops.convert_to_numpy(loss_fn(y_array, y_pred)), dtype=np.float64)
    return values.reshape(x_array.shape[0], -1).mean(axis=1)


def _as_arrays(name: str, value: Any) -> tuple[np.ndarray, np.ndarray]:
    """`(x, y)` arrays from a pair or from a `tf.data.Dataset` of `(x, y)` batches."""
    if isinstance(value, tf.data.Dataset):
        batches = [(np.asarray(x), np.asarray(y)) for x, y in value.as_numpy_iterator()]
        if not batches:
            raise ValueError(f"{name} must hold at least one example; received an empty dataset.")
        return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ValueError(
            f"{name} must be a pair (x, y) or a tf.data.Dataset of (x, y) batches; received "
            f"{type(value).__name__}."
        )
    return np.asarray(value[0]), np.asarray(value[1])


def membership_inference(
    model: keras.Model,
    members: Any,
    non_members: Any,
    delta: float,
    loss: Any = None,
    confidence: float = 0.95,
    batch_size: int = 256,
    seed: int = 0,
) -> MembershipInference:
    """Loss-threshold membership inference: AUC and implied epsilon lower bound.

    Args:
        model: The trained Keras model (single output).
        members: Training examples, at least 8: a pair `(x, y)` of arrays, or a
            `tf.data.Dataset` yielding `(x, y)` batches (e.g. the training set of
            `pydp_r.data.heart_rate_datasets(..., shuffle=False)`).
        non_members: Examples not trained on, at least 8, in the same forms; ideally from
            the same distribution as the members.
        delta: Delta of the implied bound, in (0, 1).
        loss: As in `per_example_losses` (default: the model's compiled loss).
        confidence: Probability with which the implied bound holds (under the module's
            independence assumption), in (0, 1).
        batch_size: Prediction batch size, integer >= 1.
        seed: Seeds the random split of each side into threshold-selection and evaluation
            halves (so ordered data, e.g. time windows, is not split by time).

    Returns:
        A `MembershipInference`; `.summary()` prints it.

    Raises:
        ValueError: For an argument outside its range.
    """
    delta = check_open_probability("delta", delta)
    member_x, member_y = _as_arrays("members", members)
    non_member_x, non_member_y = _as_arrays("non_members", non_members)
    member_losses = per_example_losses(model, member_x, member_y, loss, batch_size)
    non_member_losses = per_example_losses(model, non_member_x, non_member_y, loss, batch_size)
    for name, values in (("members", member_losses), ("non_members", non_member_losses)):
        if values.size < 8:
            raise ValueError(f"{name} must hold at least 8 examples; received {values.size}.")
    rng = np.random.default_rng(seed)
    member_scores = -member_losses[rng.permutation(member_losses.size)]
    non_member_scores = -non_member_losses[rng.permutation(non_member_losses.size)]
    # The attack's direction is fixed in advance: lower loss means member.
    audit = bounds.epsilon_lower_bound(
        non_member_scores, member_scores, delta, confidence, method="dp", direction=1
    )
    return MembershipInference(
        auc=roc_auc(non_member_scores, member_scores),
        epsilon_lower_bound=audit.epsilon_lower_bound,
        advantage=_advantage(non_member_scores, member_scores),
        threshold_audit=audit,
        member_losses=member_losses,
        non_member_losses=non_member_losses,
        delta=delta,
    )


@dataclasses.dataclass(frozen=True)
class MembershipRun:
    """One training run of `membership_inference_experiment`.

    Attributes:
        private: True for DP-SGD (DPAdam), False for plain Adam.
        attack: The `MembershipInference` on the trained model.
        epsilon: Example-level epsilon of the private run (RDP accountant) at the attack's
            delta, or `math.inf` for the non-private run.
        train_accuracy: Accuracy on the members.
        test_accuracy: Accuracy on the non-members.
    """

    private: bool
    attack: MembershipInference
    epsilon: float
    train_accuracy: float
    test_accuracy: float

    def summary(self) -> str:
        """One line describing the run."""
        kind = "DP-SGD" if self.private else "non-private"
        return (
            f"{kind:>11}: AUC {self.attack.auc:.3f}, implied epsilon lower bound "
            f"{self.attack.epsilon_lower_bound:.3f} vs accountant epsilon {self.epsilon:.3g}; "
            f"accuracy {self.train_accuracy:.3f} train, {self.test_accuracy:.3f} test"
        )


def membership_inference_experiment(
    private: bool,
    num_members: int = 1000,
    num_features: int = 20,
    label_noise: float = 0.2,
    epochs: int | None = None,
    batch_size: int = 50,
    noise_multiplier: float = 1.5,
    l2_norm_clip: float = 1.0,
    delta: float = 1e-5,
    seed: int = 0,
) -> MembershipRun:
    """Train a classifier with or without DP-SGD and attack it with loss-threshold inference.

    Members and non-members are drawn from the same distribution (Gaussian features, labels
    from a random linear rule with a share of labels flipped), so the attack sees membership
    only. Flipped labels are what an overfitted model memorizes and a private one cannot.

    Args:
        private: True trains with `pydp_r.DPAdam`, False with `keras.optimizers.Adam`.
        num_members: Training examples (and as many non-members), integer >= 8.
        num_features: Input features, integer >= 1.
        label_noise: Share of labels flipped, in [0, 0.5).
        epochs: Passes over the members, integer >= 1; None picks 200 (non-private, to
            overfit as an unguarded model does) or 30 (private).
        batch_size: Examples per step, integer in [1, num_members].
        noise_multiplier: Noise std over `l2_norm_clip` for the private run, > 0.
        l2_norm_clip: Clipping bound of the private run, > 0.
        delta: Delta of the attack's bound and of the accountant's epsilon, in (0, 1).
        seed: Seeds the data, the weights, the noise and the attack's split.

    Returns:
        A `MembershipRun`.

    Raises:
        ValueError: For an argument outside its range.
    """
    import math

    from pydp_r.data.sampling import poisson_batches
    from pydp_r.optimizers import DPAdam

    num_members = check_count("num_members", num_members, 8)
    num_features = check_count("num_features", num_features)
    batch_size = check_count("batch_size", batch_size)
    if batch_size > num_members:
        raise ValueError(
            f"batch_size must be an integer in [1, num_members] = [1, {num_members}]; "
            f"received {batch_size!r}."
        )
    label_noise = check_real("label_noise", label_noise, "in [0, 0.5)", lambda x: 0 <= x < 0.5)
    if epochs is not None:
        epochs = check_count("epochs", epochs)
    if epochs is None:
        epochs = 30 if private else 200
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(num_features,))
    x = rng.normal(size=(2 * num_members, num_features)).astype(np.float32)
    y = (x @ weights > 0).astype(np.int32)
    flipped = rng.random(y.size) < label_noise
    y = np.where(flipped, 1 - y, y).astype(np.int32)
    members = (x[:num_members], y[:num_members])
    non_members = (x[num_members:], y[num_members:])

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((num_features,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(2),
        ]
    )
    if private:
        # An experiment, not a release: the noise is seeded so that a run can be repeated.
        optimizer: keras.optimizers.Optimizer = DPAdam(
            l2_norm_clip=l2_norm_clip,
            noise_multiplier=noise_multiplier,
            learning_rate=1e-2,
            noise_seed=seed,
        )
    else:
        optimizer = keras.optimizers.Adam(1e-3)
        epsilon = math.inf
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    if private:
        # Poisson batches, so that the epsilon (the ledger's figure for what ran) is amplified.
        rate = batch_size / num_members
        model.fit(poisson_batches(members, sampling_rate=rate, seed=seed), epochs=epochs, verbose=0)
        epsilon = optimizer.privacy_ledger.epsilon(delta)
    else:
        model.fit(*members, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
    train_accuracy = model.evaluate(*members, verbose=0, return_dict=True)["accuracy"]
    test_accuracy = model.evaluate(*non_members, verbose=0, return_dict=True)["accuracy"]
    attack = membership_inference(model, members, non_members, delta, seed=seed)
    return MembershipRun(
        private=bool(private),
        attack=attack,
        epsilon=float(epsilon),
        train_accuracy=float(train_accuracy),
        test_accuracy=float(test_accuracy),
    )
