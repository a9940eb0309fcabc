"""Refuse BatchNormalization under DP training, and replace it with per-example normalization.

BatchNormalization normalizes each example with statistics of the whole batch and updates its
moving averages from them, so one example's data reaches every other example's gradient and the
non-private moving statistics: the per-example clipping bound no longer holds. Group and layer
normalization compute their statistics within one example, so they are safe.
"""

from __future__ import annotations

from typing import Any, Literal

import keras

from pydp_r import _keras_seam
from pydp_r._keras_seam import Functional
from pydp_r._r_hints import fix_hint


def _trainable_batch_norm_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [
        layer
        for layer in _keras_seam.flatten_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]


def check_no_batch_norm(model: keras.Model) -> None:
    """Raise if `model` has a BatchNormalization layer in training mode.

    A BatchNormalization layer with `trainable=False` runs in inference mode in Keras 3 (fixed
    statistics, no updates), which is per-example, so it is allowed.

    Raises:
        ValueError: Naming every offending layer and the fix.
    """
    offending = _trainable_batch_norm_layers(model)
    if offending:
        names = ", ".join(f"'{layer.name}'" for layer in offending)
        fix = fix_hint(
            "`model = pydp_r.replace_batch_norm(model)` (GroupNormalization, or "
            "LayerNormalization with replacement='layer'), or freeze them with trainable=False",
            "`model <- replace_batch_norm(model)` (GroupNormalization, or LayerNormalization "
            'with replacement = "layer"), or freeze them with layer$trainable <- FALSE',
        )
        raise ValueError(
            f"Model '{model.name}' has BatchNormalization layer(s) {names}, which mix examples "
            "within a batch and break the per-example clipping bound of DP training. Replace them "
            f"with {fix}."
        )


def _largest_divisor_at_most(number: int, limit: int) -> int:
    return max(d for d in range(1, min(number, limit) + 1) if number % d == 0)


@keras.saving.register_keras_serializable(package="pydp_r")
class GroupNormalizationUpTo(keras.layers.GroupNormalization):
    """GroupNormalization whose group count is fixed at build time from the channel count.

    The count is the largest divisor of the channels that is at most `max_groups`, the rule
    `replace_batch_norm` applies to built layers, for layers whose channels are not known yet.

    Args:
        max_groups: Upper bound on the number of groups, integer >= 1.
        groups: Ignored before build (the count is chosen then); kept so that a saved,
            built layer reloads with its count.
        **kwargs: Other `keras.layers.GroupNormalization` arguments.
    """

    def __init__(self, max_groups: int = 32, groups: int | None = None, **kwargs: Any) -> None:
        super().__init__(groups=1 if groups is None else groups, **kwargs)
        self.max_groups = max_groups

    def build(self, input_shape: Any) -> None:
        channels = int(input_shape[self.axis])
        if len(input_shape) == 2 and channels == 1:
            raise ValueError(
                f"Layer '{self.name}' replaces a BatchNormalization of one feature per example "
                f"(input shape {tuple(input_shape)}): normalizing one value within an example "
                "gives a constant. Freeze that BatchNormalization (trainable=False) instead."
            )
        self.groups = _group_count(channels, len(input_shape), self.max_groups)
        super().build(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "max_groups": self.max_groups}


def _group_count(channels: int, rank: int | None, max_groups: int) -> int:
    """Groups for `channels`: the largest divisor <= `max_groups`; one group for an input of
    feature vectors (rank 2), where a group of one feature would normalize to a constant and a
    group of two to +-1 (there are no positions to take statistics over)."""
    if rank == 2:
        return 1
    return _largest_divisor_at_most(channels, max_groups)


def _normalization_for(
    layer: keras.layers.BatchNormalization, replacement: str, max_groups: int
) -> keras.layers.Layer:
    config = layer.get_config()
    common = {
        "axis": config["axis"],
        "epsilon": config["epsilon"],
        "center": config["center"],
        "scale": config["scale"],
        "name": layer.name,
    }
    rank = layer.input_spec.ndim if layer.built and layer.input_spec is not None else None
    channels = (
        int(layer.gamma.shape[0] if layer.scale else layer.beta.shape[0]) if layer.built else None
    )
    if rank == 2 and channels == 1:
        # One value per example: any per-example normalization of it is a constant. Frozen, the
        # layer is the affine map of its moving statistics, per example (weights copied).
        frozen = keras.layers.BatchNormalization.from_config(config)
        frozen.trainable = False
        return frozen
    if replacement == "layer":
        return keras.layers.LayerNormalization(**common)
    if not layer.built:
        # A model defined without an input shape (as the R walkthrough's is) has no channel count
        # yet: the group count is chosen when the layer is built.
        return GroupNormalizationUpTo(max_groups=max_groups, **common)
    groups = _group_count(channels, rank, max_groups)
    return keras.layers.GroupNormalization(groups=groups, **common)


def replace_batch_norm(
    model: keras.Model,
    replacement: Literal["group", "layer"] = "group",
    max_groups: int = 32,
) -> keras.Model:
    """Copy of a Sequential or functional `model` with BatchNormalization replaced for DP training.

    Like Opacus' `ModuleValidator.fix`: each trainable BatchNormalization becomes a
    GroupNormalization with the largest number of groups <= `max_groups` that divides its
    channel count (or a LayerNormalization), keeping its name, axis and epsilon; on feature
    vectors (no positions) one group, since a group of one feature would normalize to a
    constant. A BatchNormalization of a single feature per example (a distance, a score) has
    no per-example replacement: it is kept frozen, the affine map of its moving statistics.
    Sequential and functional models nested inside are copied the same way, Lambda layers with
    their functions. A frozen BatchNormalization
    (`trainable=False`) runs in inference mode, per example, and is kept. Every other layer
    keeps its weights; the new normalization layers start at identity (scale 1, offset 0). The
    result is not compiled. A mask reaching a replaced layer still flows on to later layers,
    but the replacement's statistics, taken within each example, include masked steps.

    Args:
        model: A Sequential or functional Keras model. In an unbuilt one (no input shape yet)
            each GroupNormalization chooses its group count when it is built.
        replacement: "group" (GroupNormalization, as Opacus does) or "layer" (LayerNormalization).
        max_groups: Upper bound on the number of groups, >= 1.

    Returns:
        A new model; `model` itself is unchanged.

    Raises:
        ValueError: For an unknown `replacement`, `max_groups` < 1, a subclassed model, or a
            trainable BatchNormalization inside a subclassed model or layer nested in `model`
            (whose definition cannot be rewritten), naming those layers.
    """
    if replacement not in ("group", "layer"):
        raise ValueError(f"replacement must be 'group' or 'layer'; received {replacement!r}.")
    if isinstance(max_groups, bool) or not isinstance(max_groups, int) or max_groups < 1:
        raise ValueError(f"max_groups must be an integer >= 1; received {max_groups!r}.")
    if not isinstance(model, (keras.Sequential, Functional)):
        raise ValueError(
            "replace_batch_norm supports Sequential and functional models; received a "
            f"{type(model).__name__}. For a subclassed model, use keras.layers.GroupNormalization "
            "in its definition instead of BatchNormalization."
        )
    clone = _copy_with_replacements(model, replacement, max_groups)
    left = _trainable_batch_norm_layers(clone)
    if left:
        names = ", ".join(f"'{layer.name}'" for layer in left)
        raise ValueError(
            f"Model '{model.name}' has BatchNormalization layer(s) {names} inside a subclassed "
            "model or custom layer, whose definition replace_batch_norm cannot rewrite. Use "
            "keras.layers.GroupNormalization in that definition instead of BatchNormalization."
        )
    _copy_weights(model, clone)
    return clone


def _copy_with_replacements(model: keras.Model, replacement: str, max_groups: int) -> keras.Model:
    """Clone `model`, nested Sequential and functional models included, replacing trainable
    BatchNormalization layers; other layers are fresh copies from their configuration."""
    replacements: set[int] = set()

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            new_layer = _normalization_for(layer, replacement, max_groups)
            replacements.add(id(new_layer))
            return new_layer
        if isinstance(layer, keras.Sequential):
            return keras.models.clone_model(layer, clone_function=clone_layer)
        if isinstance(layer, Functional):
            return keras.models.clone_model(
                layer, clone_function=clone_layer, call_function=call_layer
            )
        return _copy_from_config(layer)

    def call_layer(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        if id(layer) in replacements:
            # A functional model records the `mask=None` (or mask) Keras passed to the
            # BatchNormalization call; the replacements take no `mask` argument. The input's
            # mask still reaches them, and they pass it on.
            kwargs.pop("mask", None)
        return layer(*args, **kwargs)

    # Nested models go through clone_layer (not clone_model's `recursive`), so that a
    # functional model inside a Sequential one also gets `call_layer`.
    if isinstance(model, keras.Sequential):
        return keras.models.clone_model(model, clone_function=clone_layer)
    return keras.models.clone_model(model, clone_function=clone_layer, call_function=call_layer)


def _copy_from_config(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A fresh layer from `layer`'s configuration. A Lambda's function is found by its name
    in that configuration, so it is given by name here: it need not be registered."""
    functions = {}
    if isinstance(layer, keras.layers.Lambda):
        for function in (layer.function, getattr(layer, "mask", None)):
            if callable(function) and hasattr(function, "__name__"):
                functions[function.__name__] = function
    with keras.saving.custom_object_scope(functions):
        return layer.__class__.from_config(layer.get_config())


def _copy_weights(model: keras.Model, clone: keras.Model) -> None:
    """Give every layer of `clone` but the replacements its original's weights.

    The clone's layers are walked in the same order as the original's (a replacement stands
    where its BatchNormalization stood), so layers with the same name in different nested
    models are matched correctly.
    """

    def layers_of(root: keras.Model) -> list[keras.layers.Layer]:
        # Input layers are renamed by cloning and have no weights.
        return [
            layer
            for layer in _keras_seam.flatten_layers(root)
            if not isinstance(layer, keras.layers.InputLayer)
        ]

    originals, copies = layers_of(model), layers_of(clone)
    if [layer.name for layer in originals] != [layer.name for layer in copies]:
        raise RuntimeError("replace_batch_norm: the copy's layers do not match the model's.")
    for old_layer, new_layer in zip(originals, copies, strict=True):
        if (
            type(old_layer) is not type(new_layer)
            or isinstance(new_layer, keras.Model)
            or not old_layer.weights
        ):
            continue
        new_layer.set_weights(old_layer.get_weights())
