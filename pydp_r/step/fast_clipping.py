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
not known to be per-example, regularization or `add_loss` terms) use `pydp_r.step.clipping`
instead.

A layer called more than once (shared weights, e.g. a Siamese network's tower) takes the fast
path too: an example's gradient of a shared weight is the sum over the calls of each call's
gradient, so its calls are combined before any norm is taken (`_layer_unit_gradients`): a
positionwise layer's calls become more positions of each example, another rule's calls more
rows of each unit (as microbatches are), and a layer vectorized alone adds its calls'
per-example gradients.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import math
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
    calls_of = _calls_by_operation(calls)
    for call in calls:
        _call_entries(call, prefix, entries, calls_of, strict=True)


def _calls_by_operation(
    calls: list[_keras_seam.GraphCall],
) -> dict[int, list[_keras_seam.GraphCall]]:
    calls_of: dict[int, list[_keras_seam.GraphCall]] = {}
    for call in calls:
        calls_of.setdefault(id(call.operation), []).append(call)
    return calls_of


def _call_entries(
    call: _keras_seam.GraphCall,
    prefix: str,
    entries: list[LayerPath],
    calls_of: dict[int, list[_keras_seam.GraphCall]],
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
    calls = calls_of.get(id(operation), [call])
    if len(calls) > 1 and operation.trainable_weights:
        _shared_layer_entries(call, calls, name, entries)
        return
    _layer_entries(operation, call.args, call.kwargs, name, entries)


def _shared_layer_entries(
    call: _keras_seam.GraphCall,
    calls: list[_keras_seam.GraphCall],
    name: str,
    entries: list[LayerPath],
) -> None:
    """Entries for one of the `calls` of a layer with trainable weights called more than once:
    the first call's entries, noting the sharing; later calls' only where they leave the fast
    path (the layer, or a sublayer, is the same and is reported once)."""
    layer = call.operation
    call_entries: list[LayerPath] = []
    problem = _shared_call_problem(layer, calls)
    if problem is not None:
        call_entries.append(_entry(name, layer, GENERAL, problem))
    else:
        _layer_entries(layer, call.args, call.kwargs, name, call_entries)
    if call is not calls[0]:
        entries.extend(entry for entry in call_entries if entry.path != FAST)
        return
    note = f"; called {len(calls)} times (shared: per example, the calls' gradients are added)"
    weighted = set(_weighted_names(layer, name))
    entries.extend(
        dataclasses.replace(entry, detail=entry.detail + note)
        if entry.path == FAST and entry.name in weighted
        else entry
        for entry in call_entries
    )


def _weighted_names(layer: keras.layers.Layer, name: str) -> Iterator[str]:
    """The report names of `layer` and its sublayers, at any depth, with trainable weights."""
    if layer.trainable_weights:
        yield name
        for sublayer in _keras_seam.direct_sublayers(layer):
            yield from _weighted_names(sublayer, f"{name}/{sublayer.name}")


def _shared_call_problem(
    layer: keras.layers.Layer, calls: list[_keras_seam.GraphCall]
) -> str | None:
    """Why the calls of a layer whose rule combines them as rows of one unit
    (`_calls_as_rows`) cannot be combined, judged from their input shapes, or None.

    Positionwise layers (their calls become positions) and layers vectorized alone (their
    per-example gradients are added) take calls of any shapes; nested models and layers taken
    through their sublayers are judged sublayer by sublayer, at trace time.
    """
    if grad_norms.per_example_kind(layer) != grad_norms.RULE or type(layer) in _POSITIONWISE:
        return None
    shapes = set()
    for call in calls:
        if not call.args or not _keras_seam.is_symbolic(call.args[0]):
            return None  # not known here; the traced step checks the recorded tensors
        shapes.add(tuple(call.args[0].shape[1:]))
    if len(shapes) > 1 or any(size is None for shape in shapes for size in shape):
        return (
            "called more than once on inputs of different or unknown shapes "
            f"{sorted(shapes, key=str)} (its rule adds the calls' gradients as rows of one "
            "example, which needs one shape)"
        )
    return None


def _extra_tensor_inputs(args: tuple | None, kwargs: dict | None, rule: Any = None) -> bool:
    if args is None:
        return False
    kwargs = dict(kwargs or {})
    if rule is not None and _takes_initial_state(rule):
        kwargs.pop("initial_state", None)
    tensors = [v for v in tf.nest.flatten((args[1:], kwargs)) if _keras_seam.is_symbolic(v)]
    return bool(tensors)


def _takes_initial_state(rule: Any) -> bool:
    """Whether a rule's forward takes an `initial_state` (the recurrent rules): the state is
    then a per-example input of the rule, whose gradient the backward pass carries on."""
    return "initial_state" in inspect.signature(rule.forward).parameters


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
    call_reason = grad_norms.registry.declared_call_reason(layer, args, kwargs)
    if call_reason is not None:
        entries.append(_entry(name, layer, GENERAL, f"not per-example here: {call_reason}"))
        return
    if (
        kind in (grad_norms.RULE, grad_norms.WHOLE)
        and weighted
        and _extra_tensor_inputs(
            args, kwargs, grad_norms.rule_for(layer) if kind == grad_norms.RULE else None
        )
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

    def __init__(
        self, layer: keras.layers.Layer, placeholders: bool = False, batch_size: int | None = None
    ) -> None:
        self.sublayers = _keras_seam.direct_sublayers(layer)
        self.batch_size = batch_size  # the traced inputs' batch size (None: unknown)
        self.shapes: dict[int, list[tuple]] = {id(sub): [] for sub in self.sublayers}
        # Shapes of the calls on a tensor that is not symbolic with the batch axis first.
        self.off_batch: dict[int, list[tuple]] = {id(sub): [] for sub in self.sublayers}
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
                if not (_keras_seam.is_symbolic(inputs) and shape and shape[0] == self.batch_size):
                    self.off_batch[id(_sublayer)].append(shape)
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
    checked. Through its sublayers' rules needs more: each call of a sublayer with weights in
    the trace, on tensors with the batch axis first, and no weights of the layer's own;
    else the layer is vectorized alone over the batch, which needs only per-example.
    """
    recorder, calls, not_per_example = _trace(layer, args, kwargs or {}, strict)
    sub_entries: list[LayerPath] = []
    calls_of = _calls_by_operation(calls)
    for call in calls:
        if strict or isinstance(call.operation, keras.layers.Layer):
            prefix = "" if top_level else name + "/"
            _call_entries(call, prefix, sub_entries, calls_of, strict)
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
                "sublayer is called on the batch)"
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


# The batch size of the inputs a `call` that needs the batch size as a value is traced on (a
# prime that no other axis of Keras' examples has; what such a call computes from it alone runs
# eagerly, so it is small).
_TRACE_BATCH_SIZE = 7


def _trace(
    layer: keras.layers.Layer, args: tuple, kwargs: dict, strict: bool
) -> tuple[_SublayerCalls, list[_keras_seam.GraphCall], str | None]:
    """`layer.call` run on symbolic tensors of unknown batch size, or (`strict` alone, where
    every call of the trace is checked) of `_TRACE_BATCH_SIZE` examples when the call needs the
    batch size as a value: the recorded sublayer calls, the trace's calls, and why the call
    is not proven per-example by its trace (it fails, or its outputs lose the batch axis), or
    None."""
    errors = []
    for batch_size in (None, _TRACE_BATCH_SIZE) if strict else (None,):
        recorder = _SublayerCalls(layer, batch_size=batch_size)
        try:
            with recorder.recording():
                calls, outputs = _keras_seam.symbolic_calls_with_inputs(
                    layer, args, kwargs, [], batch_size
                )
        except Exception as error:  # noqa: BLE001  (any failure means: not provable this way)
            message = str(error).splitlines()[0] if str(error) else ""
            errors.append(f"{type(error).__name__}: {message}")
            continue
        for output in outputs:
            if not output.shape or output.shape[0] != batch_size:
                return (
                    recorder,
                    [],
                    (
                        f"its output of shape {tuple(output.shape)} does not keep the batch axis "
                        "first"
                    ),
                )
        return recorder, calls, None
    batch_note = (
        f" (nor with a batch of {_TRACE_BATCH_SIZE}: {errors[1]})" if len(errors) > 1 else ""
    )
    return (
        recorder,
        [],
        (
            "its call cannot be traced on symbolic tensors (keras.ops and layers only): "
            f"{errors[0]}{batch_note}"
        ),
    )


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
    sublayer call, or None: every call of a sublayer with trainable weights is in the trace, on
    graph tensors whose axis 0 is the batch (a sublayer called more than once has its calls'
    gradients added per example), or the sublayer is among `tiled` (called off the batch once,
    its output only broadcast into it: `_off_batch_sublayers`)."""
    graph_calls: dict[int, list[_keras_seam.GraphCall]] = {}
    for call in calls:
        graph_calls.setdefault(id(call.operation), []).append(call)
    for sublayer in recorder.sublayers:
        if not sublayer.trainable_weights or any(sublayer is other for other in tiled):
            continue
        seen = graph_calls.get(id(sublayer), [])
        eager = recorder.off_batch[id(sublayer)]
        if eager or not seen:
            shape = eager[0] if eager else None
            return (
                f"sublayer '{sublayer.name}' ({type(sublayer).__name__}) is called on a tensor "
                + (f"of shape {shape} " if shape is not None else "")
                + "that does not carry the batch axis first (its per-example gradients are "
                "not rows of its output gradient)"
            )
        for value in tf.nest.flatten([(call.args, call.kwargs) for call in seen]):
            if _keras_seam.is_symbolic(value) and (
                not value.shape or value.shape[0] != recorder.batch_size
            ):
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
        if sublayer.trainable_weights and first.off_batch[id(sublayer)]
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
    recorder = _SublayerCalls(layer, placeholders=True, batch_size=first.batch_size)
    try:
        with recorder.recording():
            calls, outputs = _keras_seam.symbolic_calls_with_inputs(
                layer, args, kwargs, recorder.extra_inputs, first.batch_size
            )
    except Exception as error:  # noqa: BLE001  (any failure means: not provable this way)
        return f"its call with the output of '{off_batch[0].name}' made symbolic failed: {error}"
    for sublayer in off_batch:
        placeholders = recorder.placeholders[id(sublayer)]
        problem = (
            _broadcast_problem(placeholders[0], calls, outputs, first.batch_size)
            if len(placeholders) == 1
            else "is not computed from a tensor without the inputs"
        )
        if problem is not None:
            return f"the output of '{sublayer.name}' {problem}"
    return off_batch


def _broadcast_problem(
    output: keras.KerasTensor,
    calls: list[_keras_seam.GraphCall],
    outputs: list,
    batch_size: int | None = None,
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
        or others[0].shape[0] != batch_size
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
    inputs: Any  # what the call received (after tiling)


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
    """Temporarily route the calls of every layer with own trainable weights through a recorder
    (one record per call: a shared layer has several); yields the layers so routed. A layer
    called off the batch and broadcast into it (`_TILED`) gets its input tiled to `batch_size`
    rows."""
    hooked = []
    for layer in _weighted_units(model):
        if any(layer is other for other in hooked):
            continue  # reached twice (in two nested models): hooked once, recorded per call
        rule = _rule_for(model, layer)
        original_call = layer.call
        tiled = layer in _TILED

        def hooked_call(
            inputs, *args, _layer=layer, _rule=rule, _call=original_call, _tiled=tiled, **kwargs
        ):
            if _tiled:
                inputs = _tiled_over_batch(inputs, batch_size)
            rule_kwargs = {}
            if _rule is not None and _takes_initial_state(_rule):
                initial_state = kwargs.pop("initial_state", None)
                if initial_state is not None:
                    rule_kwargs["initial_state"] = initial_state
            if args or any(isinstance(value, tf.Tensor) for value in tf.nest.flatten(kwargs)):
                # Tensors besides `inputs` (masks, states) would need splitting per example, and
                # rules see `inputs` alone (a recurrent rule also its initial state).
                raise NotSupported(f"layer '{_layer.name}' has tensor inputs besides `inputs`")
            if _rule is not None:
                z, outputs, saved = _rule.forward(_layer, inputs, **rule_kwargs)
                records.append(
                    _Record(_layer, _rule, z, saved, _call, rule_kwargs, (inputs, rule_kwargs))
                )
                return outputs
            outputs = _call(inputs, *args, **kwargs)
            if not isinstance(outputs, tf.Tensor):
                raise NotSupported(f"layer '{_layer.name}' has several outputs")
            records.append(_Record(_layer, None, outputs, inputs, _call, kwargs, inputs))
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


@dataclasses.dataclass
class _LayerCalls:
    """The recorded calls of one layer that the loss depends on (several: shared weights), with
    the gradient of the summed loss at each call's `z`."""

    layer: keras.layers.Layer
    records: list[_Record]
    z_grads: list[Any]


def _calls_by_layer(records: list[_Record], z_grads: list[Any]) -> list[_LayerCalls]:
    """The records grouped by layer, in the order of first calls; a call whose `z` the loss
    does not depend on adds nothing to any example's gradient and is left out."""
    by_layer: dict[int, _LayerCalls] = {}
    for record, z_grad in zip(records, z_grads, strict=True):
        if any(g is None for g in tf.nest.flatten(z_grad)):
            continue
        calls = by_layer.setdefault(id(record.layer), _LayerCalls(record.layer, [], []))
        calls.records.append(record)
        calls.z_grads.append(z_grad)
    return list(by_layer.values())


def _layer_unit_gradients(
    calls: _LayerCalls, rule_units: Any, num_units: tf.Tensor
) -> grad_norms.UnitGradients:
    """Per-unit squared norms of one layer's weight gradients, summed over its calls.

    An example's gradient of a shared weight is the sum of its calls' gradients (not its norm
    the sum of their norms), so several calls are combined before the rule sees them: a
    positionwise layer's calls become more positions of each example (`_calls_as_positions`),
    another rule's calls more rows of each unit (`_calls_as_rows`), and a layer without a rule
    adds its calls' vectorized per-example gradients.
    """
    first = calls.records[0]
    if first.rule is None:
        per_call = [
            _vectorized_layer_gradients(record, z_grad, num_units)
            for record, z_grad in zip(calls.records, calls.z_grads, strict=True)
        ]
        gradients = [tf.add_n(list(parts)) for parts in zip(*per_call, strict=True)]
        return grad_norms.UnitGradients(grad_norms.gradients_squared_norms(gradients), gradients)
    if len(calls.records) == 1:
        return first.rule.unit_gradients(calls.layer, first.saved, calls.z_grads[0], rule_units)
    if type(calls.layer) in _POSITIONWISE:
        saved, z_grad = _calls_as_positions(calls)
        return first.rule.unit_gradients(calls.layer, saved, z_grad, rule_units)
    saved, z_grad = _calls_as_rows(calls)
    return first.rule.unit_gradients(calls.layer, saved, z_grad, num_units)


def _positions_axis(tensor: tf.Tensor, trailing: int) -> tf.Tensor:
    """`(batch, ..., *last trailing axes)` reshaped to `(batch, positions, *last axes)`,
    with a static number of positions where the example shape is static."""
    rank = tensor.shape.rank
    positions, last = tensor.shape[1 : rank - trailing], tensor.shape[rank - trailing :]
    if positions.is_fully_defined() and last.is_fully_defined():
        return tf.reshape(tensor, [-1, math.prod(positions), *last])
    shape = tf.shape(tensor)
    return tf.reshape(tensor, tf.concat([shape[:1], [-1], shape[rank - trailing :]], 0))


def _calls_as_positions(calls: _LayerCalls) -> tuple[tf.Tensor, tf.Tensor]:
    """The calls of a positionwise layer (`_POSITIONWISE`: Dense, Embedding) as the positions
    of one call: their rules sum each example's gradient over all the positions it has (every
    axis between the batch and the features), so positions from several calls are summed
    alike. The calls' inputs may differ in shape."""
    saved_parts, grad_parts = [], []
    for record, z_grad in zip(calls.records, calls.z_grads, strict=True):
        saved = tf.convert_to_tensor(record.saved)
        # Dense's input ends in its features (as `z` does); Embedding's indices end in none.
        saved_features = saved.shape.rank - z_grad.shape.rank + 1
        saved_parts.append(_positions_axis(saved, saved_features))
        grad_parts.append(_positions_axis(z_grad, 1))
    return tf.concat(saved_parts, axis=1), tf.concat(grad_parts, axis=1)


def _calls_as_rows(calls: _LayerCalls) -> tuple[Any, Any]:
    """The calls of a layer as consecutive rows of each example: rules already sum the rows of
    a unit (a microbatch's examples) into the unit's gradient, so with row `b * calls + k`
    holding example b's call k and units of `calls` times as many rows, each unit's gradient
    is the sum over its examples and their calls, exactly.

    Raises:
        NotSupported: When the calls' tensors differ in shape (or have sizes unknown at trace
            time): they cannot be rows of one tensor.
    """
    layer = calls.layer

    def as_rows(*leaves: Any) -> tf.Tensor:
        leaves = [tf.convert_to_tensor(leaf) for leaf in leaves]
        if leaves[0].shape.rank == 0:
            # No batch axis (TimeDistributed keeps its batch size for `num_units` None, which
            # this route never passes): the same for every call.
            return leaves[0]
        shapes = {tuple(leaf.shape[1:]) for leaf in leaves}
        if len(shapes) > 1 or any(size is None for shape in shapes for size in shape):
            raise NotSupported(
                f"layer '{layer.name}' is called more than once on tensors of different or "
                f"unknown shapes {sorted(shapes, key=str)} (its rule adds the calls' "
                "gradients as rows of one example, which needs one shape)"
            )
        rows = tf.stack(leaves, axis=1)
        return tf.reshape(rows, [-1, *leaves[0].shape[1:]])

    saved = tf.nest.map_structure(as_rows, *[record.saved for record in calls.records])
    return saved, tf.nest.map_structure(as_rows, *calls.z_grads)


def _each_unit(loss_of: Callable[[Any], tf.Tensor], units: Any, xla: bool) -> tf.Tensor:
    """`loss_of` of every unit (a scalar each), vectorized; under XLA one loop iteration per
    unit instead: the gradient of the vectorized loss made XLA take the batch and the weights
    as compile-time constants, so it compiled the step again at every step (seconds each)."""
    if not xla:
        return tf.vectorized_map(loss_of, units)
    dtype = tf.float64 if keras.config.floatx() == "float64" else tf.float32
    return tf.map_fn(lambda unit: tf.cast(loss_of(unit), dtype), units, fn_output_signature=dtype)


def _clip_weighted_sums(
    tape: tf.GradientTape, calls: _LayerCalls, factors: tf.Tensor, num_units: tf.Tensor
) -> list[tf.Tensor]:
    """The clipped sum of one layer's weight gradients by book-keeping: each unit's gradient at
    each call's `z` weighted by its clip factor, then one backward step from the calls' `z` to
    the weights (a shared layer's calls add up in it)."""
    variables = calls.layer.trainable_weights
    weighted = []
    for z_grad in calls.z_grads:
        factor_shape = tf.concat([[-1], tf.ones_like(tf.shape(z_grad))], 0)
        units = split_units(z_grad, num_units) * tf.reshape(
            tf.cast(factors, z_grad.dtype), factor_shape
        )
        weighted.append(tf.reshape(units, tf.shape(z_grad)))
    if len(calls.records) > 1 and _calls_feed_each_other(tape, calls):
        return _local_backward_step(calls, weighted)
    return tape.gradient(
        [record.z for record in calls.records],
        variables,
        output_gradients=weighted,
        unconnected_gradients="zero",
    )


def _calls_feed_each_other(tape: tf.GradientTape, calls: _LayerCalls) -> bool:
    """Whether a call's inputs depend on the layer's own weights (one call feeds another, as in
    `layer(layer(x))`): the backward step from its `z` would then also take that path."""
    variables = calls.layer.trainable_weights
    for record in calls.records:
        for tensor in tf.nest.flatten(record.inputs):
            if isinstance(tensor, tf.Tensor) and tensor.dtype.is_floating:
                if any(g is not None for g in tape.gradient(tensor, variables)):
                    return True
    return False


def _local_backward_step(calls: _LayerCalls, weighted: list[tf.Tensor]) -> list[tf.Tensor]:
    """The backward step from each call's `z` to the weights alone: the calls are rerun by the
    rule on their inputs with the gradient stopped, so no path through other calls counts."""
    with tf.GradientTape() as tape:
        z_values = []
        for record in calls.records:
            inputs, rule_kwargs = tf.nest.map_structure(tf.stop_gradient, record.inputs)
            z_values.append(record.rule.forward(calls.layer, inputs, **rule_kwargs)[0])
    return tape.gradient(
        z_values,
        calls.layer.trainable_weights,
        output_gradients=weighted,
        unconnected_gradients="zero",
    )


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
            (calls of a shared layer that cannot be combined, regularization losses); nothing
            has been updated then.
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
        unit_losses = _each_unit(
            lambda unit: unit_loss(*unit), (unit_targets, unit_predictions), model.jit_compile
        )
        total_loss = tf.reduce_sum(unit_losses)
    _check_every_weight_was_recorded(tape, total_loss, hooked, records)
    z_grads = tape.gradient(total_loss, [record.z for record in records])
    layers_calls = _calls_by_layer(records, z_grads)

    # Rules are told "one unit per example" as None, so they know positions per unit statically.
    rule_units = None if num_microbatches is None else num_units
    squared_norms = tf.zeros(tf.reshape(num_units, [1]), tf.float32)
    unit_gradients: list[list[tf.Tensor] | None] = []  # per layer: per-unit weight gradients
    for calls in layers_calls:
        norms, gradients = _layer_unit_gradients(calls, rule_units, num_units)
        unit_gradients.append(gradients)
        squared_norms += tf.cast(norms, tf.float32)
    factors = clip_factors(squared_norms, l2_norm_clip)

    sums_by_variable: dict[int, tf.Tensor] = {}
    for calls, gradients in zip(layers_calls, unit_gradients, strict=True):
        variables = calls.layer.trainable_weights
        if gradients is not None:
            sums = [tf.tensordot(tf.cast(factors, g.dtype), g, axes=1) for g in gradients]
        else:
            sums = _clip_weighted_sums(tape, calls, factors, num_units)
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
