"""The one door into Keras and TensorFlow internals: every `keras.src` import and private
attribute pydp_r needs lives here, checked against the Keras versions it was tested with.

Everything else in pydp_r uses public API (a ruff rule bans `keras.src` elsewhere). When a
Keras release moves one of these, this module and its contract tests
(`tests/python/test_keras_contract.py`) are what change.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import keras
import tensorflow as tf
from keras.src.backend.common import global_state as _global_state
from keras.src.backend.tensorflow import trainer as _tensorflow_trainer
from keras.src.backend.tensorflow.trainer import TensorFlowTrainer
from keras.src.layers.layer import CallContext as _CallContext
from keras.src.losses import loss as _loss_module
from keras.src.models.functional import Functional
from tensorflow.python.ops import control_flow_util as _control_flow_util
from tensorflow.python.ops.parallel_for import pfor as _pfor
from tensorflow.python.util import _pywrap_util_port

from pydp_r._versions import ONEDNN_SAFE_TENSORFLOW, major_minor

# The Keras and TensorFlow releases this seam and its contract tests were run against
# (inclusive floors).
SUPPORTED_KERAS = (3, 11)
SUPPORTED_TENSORFLOW = (2, 16)
# From this Keras on, a layer's activity regularization loss is a mean over the batch; before,
# it was a sum.
ACTIVITY_LOSS_MEAN_KERAS = (3, 14)

__all__ = [
    "Functional",
    "SUPPORTED_KERAS",
    "SUPPORTED_TENSORFLOW",
    "TensorFlowTrainer",
    "activity_losses_as_keras_sums",
    "call_has_training_arg",
    "causal_padding",
    "check_keras_version",
    "check_tensorflow",
    "compiled_loss_metrics",
    "compute_loss",
    "dataset_inputs",
    "dataset_transformation",
    "install",
    "optimizer_batches_seen",
    "flatten_layers",
    "is_graph_network",
    "loss_tracker",
    "unscale_loss_for_distribution",
]


def is_graph_network(model: Any) -> bool:
    """Whether `model` is exactly a Sequential or a functional model (not a subclass)."""
    return type(model) in (keras.Sequential, Functional)


def flatten_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer inside `model`, nested models and their layers included, `model` excluded."""
    return model._flatten_layers(include_self=False, recursive=True)


def causal_padding(layer: keras.layers.Layer) -> Any:
    """The padding a causal convolution layer applies before a "valid" convolution."""
    return layer._compute_causal_padding()


def call_has_training_arg(model: keras.Model) -> bool:
    """Whether `model.call` accepts a `training` argument."""
    return model._call_has_training_arg


def loss_tracker(model: keras.Model) -> keras.metrics.Metric:
    """The mean metric behind the `loss` entry of `fit()`'s logs."""
    return model._loss_tracker


def unscale_loss_for_distribution(loss: Any) -> Any:
    """Undo the 1 / num_replicas scaling Keras applies to losses under tf.distribute."""
    return _loss_module.unscale_loss_for_distribution(loss)


def compute_loss(model: keras.Model, x: Any, y: Any, y_pred: Any, sample_weight: Any) -> Any:
    """`model.compute_loss(..., training=True)`, also for user overrides without `training`."""
    return model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)


def compiled_loss_metrics(model: keras.Model) -> tuple[Any, list[keras.metrics.Metric]]:
    """The compiled loss object and its per-output loss metrics (`output_1_loss`, ...)."""
    compile_loss = getattr(model, "_compile_loss", None)
    return compile_loss, list(getattr(compile_loss, "metrics", None) or [])


def dataset_inputs(dataset: tf.data.Dataset) -> list[tf.data.Dataset]:
    """The datasets `dataset` was made from by its last transformation."""
    return list(dataset._inputs())


def dataset_transformation(dataset: tf.data.Dataset) -> str:
    """The tf.data operation that made `dataset`, as its op is named without TensorFlow's
    class decoration: "Map", "ParallelMap", "Prefetch", "Repeat", "Cache", "Batch",
    "TensorSlice", ... (TensorFlow 2.21 names its classes `_MapDataset`, earlier ones
    `MapDataset`; both give "Map")."""
    name = type(dataset).__name__.lstrip("_")
    for suffix in ("DatasetV2", "DatasetV1", "Dataset"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def optimizer_batches_seen(optimizer: keras.optimizers.Optimizer) -> Any:
    """Batches an optimizer has applied, each accumulation step counted (`iterations` counts
    logical batches under gradient accumulation)."""
    return optimizer._iterations


def check_keras_version(version: str = keras.__version__) -> None:
    """Refuse a Keras older than `SUPPORTED_KERAS`, naming the fix.

    Raises:
        ImportError: For Keras < 3.11: `import pydp_r` fails on 3.3-3.4, DP training on
            3.5-3.7, the LayerNormalization fast path and multi-worker training on 3.8-3.10.
    """
    if major_minor(version) < SUPPORTED_KERAS:
        floor = ".".join(map(str, SUPPORTED_KERAS))
        raise ImportError(
            f"pydp_r needs Keras >= {floor} (Keras 3 on the TensorFlow backend); found Keras "
            f"{version}. Upgrade with `pip install 'keras>={floor}'`."
        )


def check_tensorflow(version: str = tf.__version__, onednn_enabled: bool | None = None) -> None:
    """Refuse a TensorFlow that would train wrongly, naming the fix.

    Args:
        version: TensorFlow's version.
        onednn_enabled: Whether TensorFlow runs oneDNN's kernels (None: ask TensorFlow).

    Raises:
        ImportError: For TensorFlow < 2.16, and for 2.16-2.20 with oneDNN's kernels on (the
            default on x86 Linux): there `tf.vectorized_map` over a batched matrix product
            returns wrong per-example gradients for half the batch, or aborts the process,
            so clipping would not bound what it claims to. `import pydp_r` turns oneDNN off
            itself when it comes before TensorFlow's import.
    """
    found = major_minor(version)
    if found < SUPPORTED_TENSORFLOW:
        floor = ".".join(map(str, SUPPORTED_TENSORFLOW))
        raise ImportError(
            f"pydp_r needs TensorFlow >= {floor}; found {version}. Upgrade with "
            f"`pip install 'tensorflow>={floor}'`."
        )
    if onednn_enabled is None:
        onednn_enabled = bool(_pywrap_util_port.IsMklEnabled())
    if found < ONEDNN_SAFE_TENSORFLOW and onednn_enabled:
        safe = ".".join(map(str, ONEDNN_SAFE_TENSORFLOW))
        raise ImportError(
            f"TensorFlow {version} with oneDNN's kernels on computes wrong per-example "
            "gradients under tf.vectorized_map, so DP clipping would not hold. Set the "
            "environment variable TF_ENABLE_ONEDNN_OPTS=0 before TensorFlow is imported "
            f"(or import pydp_r first), or upgrade with `pip install 'tensorflow>={safe}'`."
        )


@contextlib.contextmanager
def activity_losses_as_keras_sums(model: keras.Model, num_units: Any) -> Iterator[None]:
    """Make each unit's activity regularization loss what Keras' own step counts for it.

    On Keras < 3.14 an activity regularization loss is summed over the batch, so a batch of
    `num_units` units counts each unit's loss `num_units` times over the mean the DP step
    takes; within this context it is scaled by `num_units`. On 3.14+ (a mean over the batch)
    nothing changes.
    """
    if major_minor(keras.__version__) >= ACTIVITY_LOSS_MEAN_KERAS:
        yield
        return
    regularized = [
        layer for layer in flatten_layers(model) if layer.activity_regularizer is not None
    ]
    originals = [layer.activity_regularizer for layer in regularized]

    def scaled(regularizer: Callable[[Any], Any]) -> Callable[[Any], Any]:
        return lambda outputs: regularizer(outputs) * tf.cast(num_units, outputs.dtype)

    try:
        for layer, regularizer in zip(regularized, originals, strict=True):
            layer.activity_regularizer = scaled(regularizer)
        yield
    finally:
        for layer, regularizer in zip(regularized, originals, strict=True):
            layer.activity_regularizer = regularizer


# --- Vectorizing matrix products without broadcast batch dimensions ---
#
# tf.vectorized_map turns `tf.matmul(x, w)` inside the loop into one BatchMatMulV2 whose batch
# dimensions broadcast (x `(examples, 1, T, k)` against w `(k, n)`). oneDNN's kernel for such a
# product (TensorFlow 2.16-2.21 on x86, its default) returns wrong values for part of the batch
# or corrupts the heap: per-example gradient norms then come out wrong and clipping would not
# bound them. A user's layer calling `tf.matmul` on sequences, or any Dense on Keras < 3.14,
# hits this. The converter below never asks a kernel to broadcast batch dimensions.


def _matrix_transpose(tensor: tf.Tensor, adjoint: bool) -> tf.Tensor:
    return tf.linalg.matrix_transpose(tensor, conjugate=True) if adjoint else tensor


def _batch_matmul_without_broadcast(pfor_input: Any) -> Any:
    """pfor converter for BatchMatMulV2 (per-iteration `x @ y`, with adjoint flags)."""
    x, y = pfor_input.input(0), pfor_input.input(1)
    adj_x, adj_y = pfor_input.get_attr("adj_x"), pfor_input.get_attr("adj_y")
    if x.is_stacked and not y.is_stacked and y.t.shape.rank == 2:
        # (loop, ..., m, k) @ (k, n): one plain matrix product over all leading dimensions.
        output = tf.tensordot(
            _matrix_transpose(x.t, adj_x), _matrix_transpose(y.t, adj_y), axes=[[-1], [0]]
        )
        return _pfor.wrap(output, True)
    if y.is_stacked and not x.is_stacked and x.t.shape.rank == 2:
        # (m, k) @ (loop, ..., k, n) as ((loop, ..., n, k) @ (k, m))^T.
        transposed = tf.tensordot(
            _matrix_transpose(_matrix_transpose(y.t, adj_y), True),
            _matrix_transpose(_matrix_transpose(x.t, adj_x), True),
            axes=[[-1], [0]],
        )
        return _pfor.wrap(_matrix_transpose(transposed, True), True)
    # Otherwise: both operands with the loop dimension, their batch dimensions broadcast
    # explicitly, so the kernel multiplies equal batch shapes.
    pfor_input.stack_inputs()
    pfor_input.expanddim_inputs_for_broadcast()
    x, y = pfor_input.input(0).t, pfor_input.input(1).t
    if x.shape.is_fully_defined() and y.shape.is_fully_defined():
        batch = tf.broadcast_static_shape(x.shape[:-2], y.shape[:-2]).as_list()
        x = tf.broadcast_to(x, [*batch, *x.shape[-2:]])
        y = tf.broadcast_to(y, [*batch, *y.shape[-2:]])
    else:
        batch = tf.broadcast_dynamic_shape(tf.shape(x)[:-2], tf.shape(y)[:-2])
        x = tf.broadcast_to(x, tf.concat([batch, tf.shape(x)[-2:]], 0))
        y = tf.broadcast_to(y, tf.concat([batch, tf.shape(y)[-2:]], 0))
    return _pfor.wrap(tf.linalg.matmul(x, y, adjoint_a=adj_x, adjoint_b=adj_y), True)


_pfor._pfor_converter_registry["BatchMatMulV2"] = _batch_matmul_without_broadcast


# --- Vectorizing a bias added on the channel axis ---
#
# `keras.ops.add(x, y)` becomes `tf.nn.bias_add(x, squeeze(y), "NCHW")` when `y` squeezes to a
# vector as long as `x`'s axis 1, as a residual `x + inputs` of shape (1, T, 1) does for each
# example. TensorFlow's pfor converter for BiasAdd (2.21) moves a per-example NCHW bias to the
# axis of a 4-D value whatever the value's rank, so vectorizing that residual fails (or adds
# the bias on the wrong axis). The converter below puts the bias on the channel axis of a
# value of any rank.


def _shape_of_ones(count: Any) -> Any:
    return [1] * count if isinstance(count, int) else tf.ones([count], tf.int32)


def _bias_add_on_channel_axis(pfor_input: Any) -> Any:
    """pfor converter for BiasAdd (per-iteration `bias_add(value, bias, data_format)`)."""
    value, bias = pfor_input.input(0), pfor_input.input(1)
    channels_last = pfor_input.get_attr("data_format") == b"NHWC"
    if channels_last and not bias.is_stacked:
        # (loop, ..., C) + (C,): the same bias for every iteration, on the last axis.
        return _pfor.wrap(tf.nn.bias_add(value.t, bias.t, data_format="NHWC"), True)
    # The per-iteration value has axes (N, ..., C) or (N, C, ...); the bias, (loop, C) when
    # stacked or (C,), is reshaped to broadcast onto C (and the loop axis).
    rank = value.t.shape.rank
    if rank is None:
        rank = tf.rank(value.t)
    if value.is_stacked:
        rank = rank - 1
    ones_before = (rank - 1 if channels_last else 1) if bias.is_stacked else 0
    ones_after = 0 if channels_last else rank - 2
    bias_shape = tf.shape(bias.t)
    broadcast_shape = tf.concat(
        [
            bias_shape[:-1],
            _shape_of_ones(ones_before),
            bias_shape[-1:],
            _shape_of_ones(ones_after),
        ],
        axis=0,
    )
    bias_on_channels = tf.reshape(tf.cast(bias.t, value.t.dtype), broadcast_shape)
    return _pfor.wrap(tf.add(value.t, bias_on_channels), True)


_pfor._pfor_converter_registry["BiasAdd"] = _bias_add_on_channel_axis


# --- Patches: the DP train step and fit() bookkeeping, and two multi-worker work-arounds ---

_original_train_step = TensorFlowTrainer.train_step
_original_fit = TensorFlowTrainer.fit
_original_maybe_symbolic_build = TensorFlowTrainer._maybe_symbolic_build
_original_reduce_per_replica = _tensorflow_trainer.reduce_per_replica
_FIT_SIGNATURE = inspect.signature(_original_fit)


def install(
    uses_dp: Callable[[keras.Model], bool],
    dp_train_step: Callable[[keras.Model, Any], Any],
    before_fit: Callable[[keras.Model, dict[str, Any]], Callable[[], None]],
) -> None:
    """Route `fit()` of DP models through `before_fit` and their steps through `dp_train_step`.

    `before_fit(model, arguments)` gets `fit()`'s bound arguments by name, may change them in
    place (e.g. add a callback), and returns a function run when `fit()` ends, also by an
    exception or an interrupt. Other models run Keras' own `fit()` and `train_step`; for every
    model, the two multi-worker work-arounds below replace `_maybe_symbolic_build` and
    `reduce_per_replica` (they change nothing outside MultiWorkerMirroredStrategy), and the
    BatchMatMulV2, BiasAdd and ZerosLike pfor converters in this module apply process-wide.
    Idempotent.
    """

    def train_step(self: keras.Model, data: Any) -> Any:
        if uses_dp(self):
            return dp_train_step(self, data)
        return _original_train_step(self, data)

    @functools.wraps(_original_fit)
    def fit(self: keras.Model, *args: Any, **kwargs: Any) -> Any:
        if not uses_dp(self):
            return _original_fit(self, *args, **kwargs)
        bound = _FIT_SIGNATURE.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        del arguments["self"]
        after_fit = before_fit(self, arguments)
        try:
            return _original_fit(self, **arguments)
        finally:
            after_fit()

    TensorFlowTrainer.train_step = train_step
    TensorFlowTrainer.fit = fit
    TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    _tensorflow_trainer.reduce_per_replica = _reduce_per_replica


# `fit()` under tf.distribute.MultiWorkerMirroredStrategy (Keras 3.15, TensorFlow 2.21) fails
# for any optimizer, in two places, worked around here:
# - To build the model symbolically, Keras reduces the first distributed batch with
#   `strategy.reduce("MEAN", ...)`, which that strategy cannot do eagerly on per-replica
#   tensors. Building only needs shapes and dtypes: we build from the local replica's part.
# - Each step's logs (scalar loss and metrics) are averaged with `strategy.reduce("MEAN", v,
#   axis=0)`, and a scalar has no axis 0. We average scalars over replicas with `axis=None`.


def _maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
    strategy = self.distribute_strategy
    if iterator is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return _original_maybe_symbolic_build(self, iterator=iterator, data_batch=data_batch)
    for _, _, batches in iterator:
        distributed_batch = next(batches)
        break

    def local_part(value: Any) -> Any:
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    with strategy.scope():
        self._symbolic_build(data_batch=keras.tree.map_structure(local_part, distributed_batch))


def _reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
    if reduction not in (
        "auto",
        "mean",
    ) or not _tensorflow_trainer._collective_all_reduce_multi_worker(strategy):
        return _original_reduce_per_replica(values, strategy, reduction)

    def mean(value: Any) -> Any:
        axis = 0 if value.shape.rank else None
        return strategy.reduce("MEAN", value, axis=axis)

    return keras.tree.map_structure(mean, values)


def direct_sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers tracked directly inside `layer` (one level deep, `layer` excluded)."""
    return list(layer._flatten_layers(include_self=False, recursive=False))


def functional_model_class() -> type:
    """Keras' `Functional`, the class `keras.Model(inputs=..., outputs=...)` builds.

    A `keras.Model` subclass constructed from inputs and outputs must derive from it: otherwise
    Keras rebases that subclass and its bases onto it at the first such construction, which
    then breaks subclassed (non-functional) use of those bases. Used by
    `pydp_r.tensorflow_privacy`'s `DPModel`.
    """
    return Functional


# --- Reading a model's call graph (used by `pydp_r.step.fast_clipping` to prove it per-example) ---


class GraphCall(NamedTuple):
    """One call in a Keras call graph: a layer or a `keras.ops` operation, its arguments (with
    `keras.KerasTensor` where a graph tensor was passed) and its output tensors."""

    operation: Any
    args: tuple
    kwargs: dict
    outputs: list


def _calls_in_order(nodes_by_depth: dict) -> list[GraphCall]:
    return [
        GraphCall(node.operation, node.arguments.args, node.arguments.kwargs, node.outputs)
        for depth in sorted(nodes_by_depth, reverse=True)
        for node in nodes_by_depth[depth]
    ]


def graph_calls(model: keras.Model) -> list[GraphCall] | None:
    """The calls of a functional (or built Sequential) model in execution order, input layers
    included; None for a Sequential model without a known input shape."""
    graph = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    if graph is None:
        return None
    return _calls_in_order(graph._nodes_by_depth)


def symbolic_calls(
    layer: keras.layers.Layer, args: tuple, kwargs: dict, batch_size: int | None = None
) -> list[GraphCall]:
    """The calls `layer.call` makes when run on symbolic tensors shaped like `args`/`kwargs`.

    Every `keras.KerasTensor` among the arguments is replaced by a fresh `keras.Input` of its
    shape (batch size `batch_size`, None: unknown) and dtype; sublayers called on them, and
    `keras.ops` applied to them, become graph calls. What `call` computes from anything else
    (constants, `keras.ops.arange(n)`, a sublayer called on such a tensor) runs eagerly and
    leaves no call. The sublayers' call history is restored afterwards, so the model's own graph is
    unchanged.

    Raises:
        Exception: Whatever `call` raises on symbolic tensors (e.g. a raw TensorFlow op).
    """
    return symbolic_calls_with_inputs(layer, args, kwargs, [], batch_size)[0]


def symbolic_calls_with_inputs(
    layer: keras.layers.Layer,
    args: tuple,
    kwargs: dict,
    extra_inputs: list,
    batch_size: int | None = None,
) -> tuple[list[GraphCall], list]:
    """`symbolic_calls`, where `call` may also compute from `extra_inputs`: symbolic tensors
    (`keras.Input`s) that the caller's hooks append to that list while `call` runs.

    A `call` that needs the batch size as a value (`keras.ops.broadcast_to(w,
    keras.ops.shape(inputs))`, Keras' image preprocessing) fails on an unknown one; traced
    with a known `batch_size`, what it computes from that size alone runs eagerly.

    Returns:
        The calls (those on the way from the arguments or `extra_inputs` to the outputs) and
        the outputs of `call` that are tensors, symbolic or not.
    """
    from keras.src.ops.function import map_graph

    def fresh_input(value: Any) -> Any:
        if isinstance(value, keras.KerasTensor):
            return keras.Input(batch_shape=(batch_size, *value.shape[1:]), dtype=value.dtype)
        return value

    symbolic_args = tf.nest.map_structure(fresh_input, args)
    symbolic_kwargs = tf.nest.map_structure(fresh_input, kwargs)
    if getattr(layer, "_call_has_training_arg", False) and "training" not in symbolic_kwargs:
        # Traced as DP training runs it: a branch taken only in training (one that mixes the
        # examples of a batch, say) must be seen; sublayers get training=True from the context.
        symbolic_kwargs = {**symbolic_kwargs, "training": True}
    inputs = [v for v in tf.nest.flatten((symbolic_args, symbolic_kwargs)) if is_symbolic(v)]
    operations = [layer, *flatten_layers(layer)]
    history = [(op, len(op._inbound_nodes), len(op._outbound_nodes)) for op in operations]
    previous_context = _global_state.get_global_attribute("current_call_ctx")
    training_context = _CallContext(entry_layer=layer)
    training_context.training = True
    _global_state.set_global_attribute("current_call_ctx", training_context)
    try:
        outputs = layer.call(*symbolic_args, **symbolic_kwargs)
        flat_outputs = [v for v in tf.nest.flatten(outputs) if hasattr(v, "shape")]
        symbolic_outputs = [v for v in flat_outputs if is_symbolic(v)]
        if not symbolic_outputs:
            return [], flat_outputs
        _, nodes_by_depth, _, _ = map_graph([*inputs, *extra_inputs], symbolic_outputs)
        return _calls_in_order(nodes_by_depth), flat_outputs
    finally:
        _global_state.set_global_attribute("current_call_ctx", previous_context)
        for op, inbound, outbound in history:
            del op._inbound_nodes[inbound:]
            del op._outbound_nodes[outbound:]


def in_xla_context() -> bool:
    """Whether the graph being built is compiled by XLA (`jit_compile=True`)."""
    return bool(_control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def is_symbolic(value: Any) -> bool:
    """Whether `value` is a `keras.KerasTensor` (a tensor of a symbolic call graph)."""
    return isinstance(value, keras.KerasTensor)


def keras_operation_name(operation: Any) -> str | None:
    """The class name of a `keras.ops` operation (`Add`, `Mean`, `Reshape`, ...), or None for
    anything else (layers, a user's own `keras.Operation` subclass)."""
    if isinstance(operation, keras.layers.Layer):
        return None
    if not type(operation).__module__.startswith("keras.src.ops."):
        return None
    return type(operation).__name__


_zeros_like_converter = _pfor._pfor_converter_registry["ZerosLike"]


def _zeros_like_of_tensor_lists(pfor_input: Any) -> Any:
    """pfor converter for ZerosLike that also takes a TensorList (TF 2.21's fails on variants)."""
    tensor = pfor_input.stacked_input(0)
    if tensor.dtype == tf.variant:
        # pfor stacks a TensorList's elements, not the list: zeros of each stacked element.
        return _pfor.wrap(tf.raw_ops.ZerosLike(x=tensor), True)
    return _zeros_like_converter(pfor_input)


_pfor._pfor_converter_registry["ZerosLike"] = _zeros_like_of_tensor_lists
