"""Fast per-example clipping for models whose every operation is provably per-example.

One forward pass of the whole batch records, for each layer with trainable weights, the tensor
`z` its weights act on and what its norm rule needs; one backward pass of the summed
per-example losses gives every example's gradient at each `z` (no layer mixes examples, so row
i of that gradient comes from example i alone). Registered layers (`pydp_r.grad_norms`) turn it
into per-example gradient norms, each layer by the cheaper of ghost norms and forming its
per-example gradients; other layers get vectorized per-example gradients of their own weights.
Where per-example gradients were formed, the clipped sum is their clip-factor-weighted sum;
elsewhere the clip factors weight each example's gradient at `z` and one local backward step
gives the clipped sum ("book-keeping", Bu et al. 2022): the cost is close to one ordinary
training step.

Which models qualify is decided by walking their call graph (`clipping_report`, which says
per layer which path it takes and why): a functional model's layers and the `keras.ops`
operations between them, and the `call` of subclassed models and of layers the registry does
not know, traced on symbolic tensors. Models this cannot handle exactly (a layer or operation
not known to be per-example, shared layers, regularization or `add_loss` terms) use
`pydp_r.step.clipping` instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import keras
import tensorflow as tf

from pydp_r import _keras_seam, grad_norms
from pydp_r._keras_seam import Functional
from pydp_r.step.clipping import clip_factors, split_into_microbatches, split_units

# The model needs the general per-example path (`pydp_r.step.clipping`); rules raise it too.
NotSupported = grad_norms.registry.NotSupported


_logger = logging.getLogger("pydp_r")

# Paths a layer (or operation) of a model can take; the model's path is the worst of them.
FAST = "fast"  # per-example norms here, by a rule or by vectorizing the layer alone
GENERAL = (
    "general"  # the whole model takes `pydp_r.step.clipping` (vectorized per-example gradients)
)
REFUSED = "refused"  # DP training refuses the model (e.g. BatchNormalization in training mode)
_SEVERITY = {FAST: 0, GENERAL: 1, REFUSED: 2}

# What the last analysis decided for layers handled by their sublayers' rules ("sublayers") or
# vectorized alone ("whole") that the registry alone does not decide: user declarations with
# `through_sublayers=True` (verified per instance) and layers whose call was traced.
_MODES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
SUBLAYERS_MODE, WHOLE_MODE = "sublayers", "whole"
# Models whose leaving the fast path was logged, and reasons only a traced step found.
_LOGGED: weakref.WeakSet = weakref.WeakSet()
# Sublayers called off the batch whose output is only broadcast into it (`_off_batch_sublayers`):
# the fast path tiles their input over the batch, so their rules see one row per example.
_TILED: weakref.WeakSet = weakref.WeakSet()
_TRACE_REASONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclasses.dataclass(frozen=True)
class LayerPath:
    """How DP training clips one layer, or one `keras.ops` operation, of a model.

    Attributes:
        name: The layer's name, prefixed by the names of the layers and models it is in
            ("encoder/query").
        type: Its class name.
        path: "fast" (per-example norms from this layer's rule, its sublayers' rules, or by
            vectorizing it alone), "general" (it sends the whole model to the vectorized
            per-example path) or "refused" (DP training refuses the model).
        detail: The rule used, or why the layer leaves the fast path.
    """

    name: str
    type: str
    path: str
    detail: str


class ClippingReport(tuple):
    """Which per-example clipping path DP training takes, per layer and operation in call
    order (a tuple of `LayerPath`); `str()` prints it as a table."""

    def __new__(cls, model_name: str, entries: list[LayerPath]) -> ClippingReport:
        report = super().__new__(cls, entries)
        report.model_name = model_name
        return report

    @property
    def path(self) -> str:
        """The worst path of any entry: "fast", "general" or "refused"."""
        return max((entry.path for entry in self), key=_SEVERITY.get, default=FAST)

    @property
    def reason(self) -> str | None:
        """Why the model leaves the fast path (its first such entry), or None."""
        for entry in self:
            if entry.path != FAST:
                return f"{entry.name} ({entry.type}): {entry.detail}"
        return None

    def to_columns(self) -> dict[str, list[str]]:
        """The entries as columns `name`, `type`, `path`, `detail` (e.g. for a data frame)."""
        return {
            field.name: [getattr(entry, field.name) for entry in self]
            for field in dataclasses.fields(LayerPath)
        }

    def __str__(self) -> str:
        head = f"Model '{self.model_name}': {self.path} path"
        if self.reason is not None:
            head += f" ({self.reason})"
        columns = self.to_columns()
        widths = {key: max([len(key), *map(len, values)]) for key, values in columns.items()}
        widths["detail"] = 0
        lines = [head, "  ".join(key.ljust(widths[key]) for key in columns).rstrip()]
        for entry in self:
            cells = [getattr(entry, key).ljust(widths[key]) for key in columns]
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"ClippingReport({self.model_name!r}, {list(self)!r})"


def clipping_report(model: keras.Model, inputs: Any = None) -> ClippingReport:
    """Which per-example clipping path DP training takes for `model`, layer by layer.

    The fast path (`clipped_gradient_sum`) needs every operation of the model to compute each
    example's outputs from that example alone, with the batch as axis 0: layers the registry
    (`pydp_r.grad_norms`) knows, `keras.ops` operations whose per-example check passes, and
    layers (and subclassed models) whose `call`, traced on symbolic tensors, is made of those.
    Anything else sends the whole model to the general path; this names it and says why.

    Args:
        model: A Keras model (Sequential, functional or subclassed).
        inputs: Example inputs (any batch size), needed to trace a subclassed model's `call`;
            the first DP `fit()` passes its batch.

    Returns:
        A `ClippingReport`: one `LayerPath` per layer and operation, in call order.
    """
    entries: list[LayerPath] = []
    if type(model) in (keras.Sequential, Functional):
        _graph_entries(model, "", entries)
    elif inputs is None:
        entries.append(
            LayerPath(
                model.name,
                type(model).__name__,
                GENERAL,
                "a subclassed model's call is traced from example inputs: "
                "clipping_report(model, x), or the first DP fit(), gives them",
            )
        )
    else:
        specs = tf.nest.map_structure(
            lambda t: keras.KerasTensor((None, *t.shape[1:]), dtype=t.dtype.name),
            tf.nest.map_structure(tf.convert_to_tensor, inputs),
        )
        _traced_entries(model, (specs,), {}, "", entries, strict=True, top_level=True)
    if model.losses or any(
        getattr(layer, "activity_regularizer", None) is not None
        for layer in _keras_seam.flatten_layers(model)
    ):
        entries.append(
            LayerPath(
                model.name,
                type(model).__name__,
                GENERAL,
                "the model has regularization or add_loss terms (their per-example share is "
                "not known from activations)",
            )
        )
    if model in _TRACE_REASONS:
        entries.append(LayerPath(model.name, type(model).__name__, GENERAL, _TRACE_REASONS[model]))
    return ClippingReport(model.name, entries)


def unsupported_reason(model: keras.Model, inputs: Any = None) -> str | None:
    """Why `model` cannot use the fast path, or None when it can (`clipping_report`'s reason).

    Args:
        model: A Keras model.
        inputs: Example inputs, needed for subclassed models (see `clipping_report`).
    """
    return clipping_report(model, inputs).reason


def takes_fast_path(model: keras.Model, inputs: Any = None, has_targets: bool = True) -> bool:
    """Whether DP training of `model` on `inputs` takes the fast path; when it does not, logs
    the layer and reason, once per model (logger "pydp_r", level warning)."""
    reason = unsupported_reason(model, inputs)
    if reason is None and not has_targets:
        reason = "fit() without targets: the fast path needs the loss of every example's targets"
    if reason is None:
        return True
    _log_once(model, reason)
    return False


def note_general_path(model: keras.Model, declined: NotSupported) -> None:
    """Keep the reason a traced step left the fast path (for `clipping_report`) and log it."""
    _TRACE_REASONS.setdefault(model, f"while tracing the step: {declined}")
    _log_once(model, _TRACE_REASONS[model])


def _log_once(model: keras.Model, reason: str) -> None:
    if model in _LOGGED:
        return
    _LOGGED.add(model)
    _logger.warning(
        "DP training of model '%s' takes the general per-example path (slower): %s",
        model.name,
        reason,
    )


def _entry(name: str, operation: Any, path: str, detail: str) -> LayerPath:
    return LayerPath(name, type(operation).__name__, path, detail)


def _graph_entries(model: keras.Model, prefix: str, entries: list[LayerPath]) -> None:
    """Entries for the calls of a Sequential or functional model."""
    calls = _keras_seam.graph_calls(model)
    if calls is None:  # a Sequential model without a known input shape
        calls = [_keras_seam.GraphCall(layer, None, None, []) for layer in model.layers]
    counts: dict[int, int] = {}
    for call in calls:
        counts[id(call.operation)] = counts.get(id(call.operation), 0) + 1
    for call in calls:
        _call_entries(call, prefix, entries, counts, strict=True)


def _call_entries(
    call: _keras_seam.GraphCall,
    prefix: str,
    entries: list[LayerPath],
    counts: dict[int, int],
    strict: bool,
) -> None:
    operation = call.operation
    name = prefix + operation.name
    if isinstance(operation, keras.layers.InputLayer):
        return
    if not isinstance(operation, keras.layers.Layer):
        op_name = _keras_seam.keras_operation_name(operation)
        if op_name is None:
            reason = f"operation '{operation.name}' is not a keras.ops operation"
        else:
            reason = grad_norms.registry.operation_reason(
                op_name, operation, call.args, call.kwargs, call.outputs
            )
        entries.append(
            _entry(name, operation, FAST, "per-example operation")
            if reason is None
            else _entry(name, operation, GENERAL, reason)
        )
        return
    if counts.get(id(operation), 0) > 1 and operation.trainable_weights:
        entries.append(
            _entry(name, operation, GENERAL, "called more than once (its weights are shared)")
        )
        return
    _layer_entries(operation, call.args, call.kwargs, name, entries)


def _extra_tensor_inputs(args: tuple | None, kwargs: dict | None) -> bool:
    if args is None:
        return False
    tensors = [v for v in tf.nest.flatten((args[1:], kwargs)) if _keras_seam.is_symbolic(v)]
    return bool(tensors)


def _layer_entries(
    layer: keras.layers.Layer,
    args: tuple | None,
    kwargs: dict | None,
    name: str,
    entries: list[LayerPath],
) -> None:
    """Entries for one call of a layer (`args` None when its arguments are not known)."""
    if type(layer) in (keras.Sequential, Functional):
        _graph_entries(layer, name + "/", entries)
        return
    kind = grad_norms.per_example_kind(layer)
    weighted = bool(layer.trainable_weights)
    if isinstance(layer, keras.layers.BatchNormalization) and kind is None:
        entries.append(
            _entry(
                name,
                layer,
                REFUSED,
                "BatchNormalization in training mode mixes the examples of a batch (replace "
                "it: pydp_r.replace_batch_norm(model), or freeze it: trainable=False)",
            )
        )
        return
    if (
        kind in (grad_norms.RULE, grad_norms.WHOLE)
        and weighted
        and _extra_tensor_inputs(args, kwargs)
    ):
        entries.append(_entry(name, layer, GENERAL, "has tensor inputs besides `inputs`"))
        return
    if kind == grad_norms.RULE:
        rule = grad_norms.rule_for(layer)
        entries.append(_entry(name, layer, FAST, f"rule {type(rule).__name__}"))
    elif kind == grad_norms.WHOLE:
        entries.append(
            _entry(
                name,
                layer,
                FAST,
                "vectorized alone over the batch (per-example, no rule for this configuration)"
                if weighted
                else "per-example, no trainable weights",
            )
        )
    elif kind == grad_norms.SUBLAYERS and grad_norms.registry.is_trusted_declaration(layer):
        entries.append(_entry(name, layer, FAST, "through its sublayers' rules"))
        for sublayer in _keras_seam.direct_sublayers(layer):
            _layer_entries(sublayer, None, None, f"{name}/{sublayer.name}", entries)
    elif kind == grad_norms.SUBLAYERS:
        if args is None:
            _MODES[layer] = WHOLE_MODE
            entries.append(
                _entry(
                    name,
                    layer,
                    FAST,
                    "vectorized alone over the batch: its through_sublayers declaration cannot "
                    "be verified without its input shape",
                )
            )
        else:
            _traced_entries(layer, args, kwargs, name, entries, strict=False)
    elif args is None:
        entries.append(
            _entry(
                name,
                layer,
                GENERAL,
                "not known to be per-example (see pydp_r.grad_norms.register_per_example)",
            )
        )
    else:
        _traced_entries(layer, args, kwargs, name, entries, strict=True)


class _SublayerCalls:
    """Records the shapes of the tensors each direct sublayer's `call` receives.

    With `placeholders`, a sublayer with trainable weights called on a tensor that is not
    symbolic (computed without the inputs, e.g. from `keras.ops.arange(n)`) returns a symbolic
    stand-in for its output (a `keras.Input` of that shape, in `extra_inputs`), so that every
    use of that output becomes a call of the trace.
    """

    def __init__(self, layer: keras.layers.Layer, placeholders: bool = False) -> None:
        self.sublayers = _keras_seam.direct_sublayers(layer)
        self.shapes: dict[int, list[tuple]] = {id(sub): [] for sub in self.sublayers}
        self.with_placeholders = placeholders
        self.placeholders: dict[int, list[Any]] = {id(sub): [] for sub in self.sublayers}
        self.extra_inputs: list[Any] = []

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        for sublayer in self.sublayers:
            original = sublayer.call

            def call(inputs, *args, _sublayer=sublayer, _original=original, **kwargs):
                shape = tuple(getattr(inputs, "shape", ()))
                self.shapes[id(_sublayer)].append(shape)
                outputs = _original(inputs, *args, **kwargs)
                if (
                    self.with_placeholders
                    and _sublayer.trainable_weights
                    and not _keras_seam.is_symbolic(inputs)
                    and isinstance(outputs, tf.Tensor)
                ):
                    placeholder = keras.Input(
                        batch_shape=tuple(outputs.shape), dtype=outputs.dtype.name
                    )
                    self.placeholders[id(_sublayer)].append(placeholder)
                    self.extra_inputs.append(placeholder)
                    return placeholder
                return outputs

            sublayer.call = call
        try:
            yield
        finally:
            for sublayer in self.sublayers:
                del sublayer.call


def _traced_entries(
    layer: keras.layers.Layer,
    args: tuple,
    kwargs: dict | None,
    name: str,
    entries: list[LayerPath],
    strict: bool,
    top_level: bool = False,
) -> None:
    """Entries for a layer (or subclassed model) whose `call` is traced on symbolic tensors.

    `strict` (a layer the registry does not know): every call in the trace must be per-example;
    then the layer is per-example as a whole. Otherwise (a user's `through_sublayers`
    declaration, a claim about the code between the sublayers) only the sublayers' calls are
    checked. Through its sublayers' rules needs more: each sublayer with weights called once,
    in the trace, on tensors with the batch axis first, and no weights of the layer's own;
    else the layer is vectorized alone over the batch, which needs only per-example.
    """
    recorder = _SublayerCalls(layer)
    not_per_example = None
    sub_entries: list[LayerPath] = []
    try:
        with recorder.recording():
            calls = _keras_seam.symbolic_calls(layer, args, kwargs or {})
    except Exception as error:  # noqa: BLE001  (any failure means: not provable this way)
        calls = []
        message = str(error).splitlines()[0] if str(error) else ""
        not_per_example = (
            "its call cannot be traced on symbolic tensors (keras.ops and layers only): "
            f"{type(error).__name__}: {message}"
        )
    counts: dict[int, int] = {}
    for call in calls:
        counts[id(call.operation)] = counts.get(id(call.operation), 0) + 1
    for call in calls:
        if strict or isinstance(call.operation, keras.layers.Layer):
            prefix = "" if top_level else name + "/"
            _call_entries(call, prefix, sub_entries, counts, strict)
    failed = [entry for entry in sub_entries if entry.path != FAST]
    if not_per_example is None and failed:
        not_per_example = f"{failed[0].name} ({failed[0].type}): {failed[0].detail}"
    not_through_sublayers = _sublayer_problem(calls, recorder)
    tiled: list[keras.layers.Layer] = []
    if not_through_sublayers is not None and not_per_example is None:
        found = _off_batch_sublayers(layer, args, kwargs or {}, recorder)
        if isinstance(found, str):
            not_through_sublayers += f" ({found})" if found else ""
        else:
            tiled = found
            not_through_sublayers = _sublayer_problem(calls, recorder, tiled)
            prefix = "" if top_level else name + "/"
            sub_entries.extend(_tiled_entry(sublayer, prefix) for sublayer in tiled)
    if not_through_sublayers is None and _own_weights(layer):
        not_through_sublayers = "it has trainable weights of its own (not in its sublayers)"
    if top_level:
        problem = not_per_example or not_through_sublayers
        if problem is not None:
            entries.append(_entry(layer.name, layer, GENERAL, problem))
        _MODES[layer] = SUBLAYERS_MODE
        _TILED.update(tiled)
        entries.extend(sub_entries)
        return
    if strict and not_per_example is not None:
        entries.append(
            _entry(name, layer, GENERAL, f"not known to be per-example: {not_per_example}")
        )
        entries.extend(sub_entries)
        return
    if not strict and not_per_example is not None and not_through_sublayers is None:
        not_through_sublayers = not_per_example  # a sublayer of a declared layer
    if not_through_sublayers is None:
        _MODES[layer] = SUBLAYERS_MODE
        _TILED.update(tiled)
        if not strict:
            detail = (
                "through its sublayers' rules (its through_sublayers declaration verified: each "
                "sublayer is called once on the batch)"
            )
        elif layer.trainable_weights:
            detail = "through its sublayers' rules (its call traced: per-example)"
        else:
            detail = "per-example, no trainable weights (its call traced)"
        entries.append(_entry(name, layer, FAST, detail))
        entries.extend(sub_entries)
        return
    _MODES[layer] = WHOLE_MODE
    for sublayer in _keras_seam.direct_sublayers(layer):
        _TILED.discard(sublayer)
    if strict:
        detail = (
            "vectorized alone over the batch (its call traced: per-example; not through its "
            f"sublayers: {not_through_sublayers})"
        )
    else:
        detail = (
            "vectorized alone over the batch: its through_sublayers declaration is refused for "
            f"this instance: {not_through_sublayers}"
        )
    entries.append(_entry(name, layer, FAST, detail))


def _own_weights(layer: keras.layers.Layer) -> bool:
    in_sublayers = {
        id(weight)
        for sublayer in _keras_seam.direct_sublayers(layer)
        for weight in sublayer.trainable_weights
    }
    return any(id(weight) not in in_sublayers for weight in layer.trainable_weights)


def _sublayer_problem(
    calls: list[_keras_seam.GraphCall],
    recorder: _SublayerCalls,
    tiled: list[keras.layers.Layer] = (),
) -> str | None:
    """Why the traced calls of `layer` do not each take one batched tensor per weighted
    sublayer, or None: every sublayer with trainable weights is called exactly once, in the
    trace, on graph tensors whose axis 0 is the batch, or is among `tiled` (called off the
    batch once, its output only broadcast into it: `_off_batch_sublayers`)."""
    graph_calls: dict[int, list[_keras_seam.GraphCall]] = {}
    for call in calls:
        graph_calls.setdefault(id(call.operation), []).append(call)
    for sublayer in recorder.sublayers:
        if not sublayer.trainable_weights or any(sublayer is other for other in tiled):
            continue
        seen = graph_calls.get(id(sublayer), [])
        eager = [s for s in recorder.shapes[id(sublayer)] if not s or s[0] is not None]
        if eager or not seen:
            shape = eager[0] if eager else None
            return (
                f"sublayer '{sublayer.name}' ({type(sublayer).__name__}) is called on a tensor "
                + (f"of shape {shape} " if shape is not None else "")
                + "that does not carry the batch axis first (its per-example gradients are "
                "not rows of its output gradient)"
            )
        if len(seen) > 1:
            return f"sublayer '{sublayer.name}' is called more than once"
        for value in tf.nest.flatten((seen[0].args, seen[0].kwargs)):
            if _keras_seam.is_symbolic(value) and (not value.shape or value.shape[0] is not None):
                return (
                    f"sublayer '{sublayer.name}' ({type(sublayer).__name__}) is called on a "
                    f"tensor of shape {tuple(value.shape)} without the batch axis first"
                )
    return None


# Layers that act on each position (each vector along the last axis, or each index) alone, the
# same whatever axes lead: layer(tile(c)) is tile(layer(c)) for a tensor c tiled over a new axis 0.
_POSITIONWISE = (keras.layers.Embedding, keras.layers.Dense)
_BROADCASTING_OPERATIONS = ("Add", "Subtract", "Multiply")


def _off_batch_sublayers(
    layer: keras.layers.Layer, args: tuple, kwargs: dict, first: _SublayerCalls
) -> list[keras.layers.Layer] | str:
    """The weighted sublayers of `layer` called off the batch whose output only enters the
    batch by broadcasting, or why some sublayer called off the batch is not one ("" if none is).

    Such a sublayer S is called once on a tensor `c` computed without the inputs (a position
    embedding of `keras.ops.arange(length)`); `S(c)` of rank r goes only into one `+`, `-` or
    `*` with a batched tensor of rank r + 1, so it is broadcast over the batch axis alone.
    With S acting on each position alone (`_POSITIONWISE`), `S(tile_B(c)) = tile_B(S(c))`, and
    `t + tile_B(S(c)) = t + S(c)`: calling S on `c` tiled over the batch computes the same
    outputs, and S's gradient at its output row i is then example i's own (its per-example
    weight gradient: the upstream gradient of example i, scattered by S's rule). The trace is
    rerun with S's output made symbolic, so that every use of it is a call of the trace.
    """
    off_batch = [
        sublayer
        for sublayer in first.sublayers
        if sublayer.trainable_weights
        and any(not shape or shape[0] is not None for shape in first.shapes[id(sublayer)])
    ]
    if not off_batch:
        return ""
    for sublayer in off_batch:
        if type(sublayer) not in _POSITIONWISE or getattr(sublayer, "mask_zero", False):
            return (
                f"'{sublayer.name}' ({type(sublayer).__name__}) is not a layer known to act on "
                "each position alone (Embedding without mask_zero, Dense), so its input is not "
                "tiled over the batch"
            )
        if len(first.shapes[id(sublayer)]) != 1:
            return f"'{sublayer.name}' is called more than once"
    recorder = _SublayerCalls(layer, placeholders=True)
    try:
        with recorder.recording():
            calls, outputs = _keras_seam.symbolic_calls_with_inputs(
                layer, args, kwargs, recorder.extra_inputs
            )
    except Exception as error:  # noqa: BLE001  (any failure means: not provable this way)
        return f"its call with the output of '{off_batch[0].name}' made symbolic failed: {error}"
    for sublayer in off_batch:
        placeholders = recorder.placeholders[id(sublayer)]
        problem = (
            _broadcast_problem(placeholders[0], calls, outputs)
            if len(placeholders) == 1
            else "is not computed from a tensor without the inputs"
        )
        if problem is not None:
            return f"the output of '{sublayer.name}' {problem}"
    return off_batch


def _broadcast_problem(
    output: keras.KerasTensor, calls: list[_keras_seam.GraphCall], outputs: list
) -> str | None:
    """Why the symbolic `output` is not used exactly once, by `+`, `-` or `*` with one batched
    tensor of one more axis (a broadcast over the batch axis alone), or None."""
    if any(value is output for value in outputs):
        return "is an output of the layer"
    consumers = [
        call
        for call in calls
        if any(value is output for value in tf.nest.flatten((call.args, call.kwargs)))
    ]
    if len(consumers) != 1:
        return f"is used {len(consumers)} times (only one +, - or * into the batch is proven)"
    call = consumers[0]
    if _keras_seam.keras_operation_name(call.operation) not in _BROADCASTING_OPERATIONS:
        return f"goes into '{call.operation.name}', not into +, - or * with the batch"
    tensors = [v for v in tf.nest.flatten((call.args, call.kwargs)) if _keras_seam.is_symbolic(v)]
    others = [tensor for tensor in tensors if tensor is not output]
    rank = len(output.shape)
    if (
        len(tensors) != 2
        or len(others) != 1
        or len(others[0].shape) != rank + 1
        or others[0].shape[0] is not None
        or len(call.outputs) != 1
        or len(call.outputs[0].shape) != rank + 1
    ):
        return f"is not broadcast over the batch axis alone by '{call.operation.name}'"
    return None


def _tiled_entry(sublayer: keras.layers.Layer, prefix: str) -> LayerPath:
    entries: list[LayerPath] = []
    _layer_entries(sublayer, None, None, prefix + sublayer.name, entries)
    return dataclasses.replace(
        entries[0],
        detail=f"{entries[0].detail}; called off the batch and broadcast into it (its input "
        "is tiled over the batch)",
    )


def _tiled_over_batch(tensor: tf.Tensor, batch_size: tf.Tensor) -> tf.Tensor:
    """`tensor` repeated along a new leading batch axis of `batch_size`."""
    tensor = tf.convert_to_tensor(tensor)
    return tf.broadcast_to(tensor[tf.newaxis], tf.concat([[batch_size], tf.shape(tensor)], 0))


def _through_sublayers(layer: keras.layers.Layer) -> bool:
    """Whether the fast path reaches `layer`'s weights through its sublayers."""
    if type(layer) in (keras.Sequential, Functional):
        return True
    mode = _MODES.get(layer)
    if mode is not None:
        return mode == SUBLAYERS_MODE
    return grad_norms.per_example_kind(
        layer
    ) == grad_norms.SUBLAYERS and grad_norms.registry.is_trusted_declaration(layer)


def _weighted_units(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """The layers inside `layer` whose per-example gradients are taken one layer at a time:
    nested models and layers handled through their sublayers are looked into, others taken
    whole."""
    for sublayer in _keras_seam.direct_sublayers(layer):
        if not sublayer.trainable_weights:
            continue
        if _through_sublayers(sublayer):
            yield from _weighted_units(sublayer)
        else:
            yield sublayer


@dataclasses.dataclass
class _Record:
    """What one call of a layer with trainable weights left for the backward pass."""

    layer: keras.layers.Layer
    rule: grad_norms.LayerRule | None
    z: tf.Tensor
    saved: Any
    call: Callable[..., Any]
    call_kwargs: dict[str, Any]


def _rule_for(model: keras.Model, layer: keras.layers.Layer) -> grad_norms.LayerRule | None:
    """The layer's rule, except a rule marked `exact_under_xla = False` when the model is
    compiled with XLA (the layer is then vectorized whole, or XLA refuses it)."""
    rule = grad_norms.rule_for(layer)
    if rule is not None and not getattr(rule, "exact_under_xla", True):
        if getattr(model, "jit_compile", False) is True:
            return None
    return rule


@contextlib.contextmanager
def _recording(
    model: keras.Model, records: list[_Record], batch_size: tf.Tensor
) -> Iterator[list[keras.layers.Layer]]:
    """Temporarily route the calls of every layer with own trainable weights through a recorder;
    yields the layers so routed. A layer called off the batch and broadcast into it (`_TILED`)
    gets its input tiled to `batch_size` rows."""
    hooked = []
    for layer in _weighted_units(model):
        if any(layer is other for other in hooked):
            continue  # reached twice (a nested model used twice): its second call raises
        rule = _rule_for(model, layer)
        original_call = layer.call
        tiled = layer in _TILED

        def hooked_call(
            inputs, *args, _layer=layer, _rule=rule, _call=original_call, _tiled=tiled, **kwargs
        ):
            if _tiled:
                inputs = _tiled_over_batch(inputs, batch_size)
            if any(record.layer is _layer for record in records):
                raise NotSupported(f"layer '{_layer.name}' is called more than once")
            if args or any(isinstance(value, tf.Tensor) for value in tf.nest.flatten(kwargs)):
                # Tensors besides `inputs` (masks, states) would need splitting per example, and
                # rules see `inputs` alone.
                raise NotSupported(f"layer '{_layer.name}' has tensor inputs besides `inputs`")
            if _rule is not None:
                z, outputs, saved = _rule.forward(_layer, inputs)
                records.append(_Record(_layer, _rule, z, saved, _call, {}))
                return outputs
            outputs = _call(inputs, *args, **kwargs)
            if not isinstance(outputs, tf.Tensor):
                raise NotSupported(f"layer '{_layer.name}' has several outputs")
            records.append(_Record(_layer, None, outputs, inputs, _call, kwargs))
            return outputs

        layer.call = hooked_call
        hooked.append(layer)
    try:
        yield hooked
    finally:
        for layer in hooked:
            del layer.call


def _check_every_weight_was_recorded(
    tape: tf.GradientTape, total_loss: tf.Tensor, hooked: list[Any], records: list[_Record]
) -> None:
    """Raise NotSupported if the loss depends on weights of a layer whose call was not seen
    (e.g. Bidirectional's fused kernel on a GPU calls no sublayer): their clipped share would
    be missing."""
    unseen = [layer for layer in hooked if not any(r.layer is layer for r in records)]
    for layer in unseen:
        gradients = tape.gradient(total_loss, layer.trainable_weights)
        if any(gradient is not None for gradient in gradients):
            raise NotSupported(f"layer '{layer.name}' uses its weights without its call being seen")


def _vectorized_layer_gradients(
    record: _Record, z_grad: tf.Tensor, num_units: tf.Tensor
) -> list[tf.Tensor]:
    """Per-unit gradients of one layer's own weights, the layer vectorized over units."""
    variables = record.layer.trainable_weights
    inputs_units = split_units(record.saved, num_units)
    grad_units = split_units(z_grad, num_units)

    def unit_gradient(unit: tuple[tf.Tensor, tf.Tensor]) -> list[tf.Tensor]:
        unit_inputs, unit_grad = unit
        with tf.GradientTape() as tape:
            outputs = record.call(unit_inputs, **record.call_kwargs)
        return tape.gradient(
            outputs, variables, output_gradients=unit_grad, unconnected_gradients="zero"
        )

    return tf.vectorized_map(unit_gradient, (inputs_units, grad_units))


def clipped_gradient_sum(
    model: keras.Model,
    unit_loss: Callable[[Any, Any], tf.Tensor],
    x: Any,
    targets: Any,
    l2_norm_clip: float,
    num_microbatches: int | None = None,
) -> tuple[list[tf.Tensor], tf.Tensor, Any, tf.Tensor]:
    """Same result as `pydp_r.step.clipping.clipped_gradient_sum` for a supported model, faster.

    Args:
        model: A model for which `unsupported_reason(model)` is None.
        unit_loss: Maps `(unit_targets, unit_predictions)` of one unit (leading dimension
            batch/units) to that unit's mean loss, as computed on that unit alone.
        x: Model inputs for the whole batch.
        targets: Nested structure of tensors the loss needs besides the predictions (targets,
            sample weights), leading dimension the batch.
        l2_norm_clip: Clipping bound C, > 0.
        num_microbatches: None for one unit per example, else a divisor of the batch size.

    Returns:
        `(gradient_sums, unit_losses, predictions, num_units)` as in `pydp_r.step.clipping`, the
        gradient sums ordered like `model.trainable_weights`.

    Raises:
        NotSupported: When the forward pass shows the model is not supported after all
            (a layer called twice, regularization losses); nothing has been updated then.
    """
    reason = unsupported_reason(model, x)
    if reason is not None:
        raise NotSupported(reason)
    records: list[_Record] = []
    with tf.GradientTape(persistent=True) as tape:
        batch_size = tf.shape(tf.nest.flatten(x)[0])[0]
        with _recording(model, records, batch_size) as hooked:
            predictions = model(x, training=True)
        if model.losses:
            raise NotSupported("the model has regularization or add_loss terms")
        (unit_targets, unit_predictions), num_units = split_into_microbatches(
            (targets, predictions), num_microbatches
        )
        unit_losses = tf.vectorized_map(
            lambda unit: unit_loss(*unit), (unit_targets, unit_predictions)
        )
        total_loss = tf.reduce_sum(unit_losses)
    _check_every_weight_was_recorded(tape, total_loss, hooked, records)
    z_grads = tape.gradient(total_loss, [record.z for record in records])

    # Rules are told "one unit per example" as None, so they know positions per unit statically.
    rule_units = None if num_microbatches is None else num_units
    squared_norms = tf.zeros(tf.reshape(num_units, [1]), tf.float32)
    unit_gradients: dict[int, list[tf.Tensor]] = {}  # record index -> per-unit weight gradients
    for index, (record, z_grad) in enumerate(zip(records, z_grads, strict=True)):
        if any(g is None for g in tf.nest.flatten(z_grad)):
            continue  # the loss does not depend on this layer
        if record.rule is not None:
            norms, gradients = record.rule.unit_gradients(
                record.layer, record.saved, z_grad, rule_units
            )
        else:
            gradients = _vectorized_layer_gradients(record, z_grad, num_units)
            norms = grad_norms.gradients_squared_norms(gradients)
        if gradients is not None:
            unit_gradients[index] = gradients
        squared_norms += tf.cast(norms, tf.float32)
    factors = clip_factors(squared_norms, l2_norm_clip)

    sums_by_variable: dict[int, tf.Tensor] = {}
    for index, (record, z_grad) in enumerate(zip(records, z_grads, strict=True)):
        if any(g is None for g in tf.nest.flatten(z_grad)):
            continue
        variables = record.layer.trainable_weights
        if index in unit_gradients:
            sums = [
                tf.tensordot(tf.cast(factors, g.dtype), g, axes=1) for g in unit_gradients[index]
            ]
        else:
            weighted = split_units(z_grad, num_units) * tf.reshape(
                tf.cast(factors, z_grad.dtype), tf.concat([[-1], tf.ones_like(tf.shape(z_grad))], 0)
            )
            sums = tape.gradient(
                record.z,
                variables,
                output_gradients=tf.reshape(weighted, tf.shape(z_grad)),
                unconnected_gradients="zero",
            )
        for variable, gradient_sum in zip(variables, sums, strict=True):
            sums_by_variable[id(variable)] = tf.cast(
                tf.convert_to_tensor(gradient_sum), variable.dtype
            )
    del tape

    gradient_sums = [
        sums_by_variable.get(id(variable), tf.zeros_like(variable))
        for variable in model.trainable_weights
    ]
    return gradient_sums, unit_losses, predictions, num_units
