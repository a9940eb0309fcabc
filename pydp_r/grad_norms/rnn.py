"""SimpleRNN, LSTM and GRU: per-example gradients over the unrolled steps.

At step t the cell's pre-activation is `z_t = x_t W + h_{t-1} U + b`. The input projection
`x W + b` is computed for all steps at once, outside the recurrence, and is the rule's `z`:
the loss gradient there is the gradient at every `z_t`, because `h_{t-1} U` only adds to it.
Then a unit's gradient of `[W; U]` is `sum_t [x_t, h_{t-1}]^T dz_t`, an outer product summed
over steps as for Dense, and of `b` the sum of `dz_t`. The per-example gradients are always
formed, because `U`'s share of the clipped sum cannot come from a backward pass from `z`
(which does not depend on `U`); they have the size `(d_in + units) x gates * units` per unit.

GRU (with `reset_after=True`, Keras' default) applies the reset gate to `h_{t-1} U + b_rec`, so
that product is not simply added to the input projection; a zero tensor ("probe") added to it
at every step exposes its gradient, and the rule's `z` is the pair (projection, probe).

The returned states (`return_state=True`, as lstm_seq2seq's encoder and decoder ask) are the
recurrence's last states. An initial state given as tensors (`initial_state=`) is a
per-example input of the rule (`forward`'s `initial_state`): it is `h_{-1}` in `U`'s gradient,
and the backward pass carries its gradient on to whatever computed it. Dropout, masks and
statefulness are not covered; such RNN layers are vectorized whole over the batch. A layer that goes
backwards (Bidirectional's backward layer) runs over the time-reversed input, and returns its
sequence in that order, as Keras does.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from pydp_r.grad_norms.registry import (
    UnitGradients,
    gradients_squared_norms,
    per_unit,
    register,
)


def _lstm_step(cell: Any, projected: tf.Tensor, state: tuple[tf.Tensor, tf.Tensor]):
    hidden, carry = state
    z = projected + tf.linalg.matmul(hidden, cell.recurrent_kernel)
    z_input, z_forget, z_carry, z_output = tf.split(z, 4, axis=-1)
    carry = cell.recurrent_activation(z_forget) * carry + cell.recurrent_activation(
        z_input
    ) * cell.activation(z_carry)
    hidden = cell.recurrent_activation(z_output) * cell.activation(carry)
    return hidden, (hidden, carry)


def _simple_step(cell: Any, projected: tf.Tensor, state: tuple[tf.Tensor]):
    (hidden,) = state
    hidden = projected + tf.linalg.matmul(hidden, cell.recurrent_kernel)
    if cell.activation is not None:
        hidden = cell.activation(hidden)
    return hidden, (hidden,)


_STEPS = {keras.layers.LSTM: (_lstm_step, 2), keras.layers.SimpleRNN: (_simple_step, 1)}


@register(keras.layers.LSTM, keras.layers.SimpleRNN)
class RecurrentRule:
    def supports(self, layer: keras.layers.Layer) -> bool:
        cell = layer.cell
        return (
            not layer.stateful
            and cell.dropout == 0
            and cell.recurrent_dropout == 0
            and len(layer.trainable_weights) == 2 + int(cell.use_bias)
        )

    def forward(
        self, layer: keras.layers.Layer, inputs: tf.Tensor, initial_state: Any = None
    ) -> tuple[tf.Tensor, Any, tuple[tf.Tensor, tf.Tensor]]:
        cell = layer.cell
        step, num_states = _STEPS[type(layer)]
        if layer.go_backwards:
            inputs = tf.reverse(inputs, [1])
        projected = tf.linalg.matmul(inputs, tf.cast(cell.kernel, inputs.dtype))
        if cell.use_bias:
            projected = projected + cell.bias
        initial = _initial_states(initial_state, num_states, inputs, cell.units, projected.dtype)

        def scan_step(carried, projected_t):
            _, state = carried
            return step(cell, projected_t, state)

        later_previous: list[tf.Tensor] = []
        z = projected
        if _may_use_ghost_norms(layer, inputs):
            z = _with_recurrent_kernel_gradient(
                projected, tf.cast(cell.recurrent_kernel, projected.dtype), later_previous
            )
        time_major = tf.transpose(z, [1, 0, 2])
        hiddens, states = tf.scan(scan_step, time_major, initializer=(initial[0], initial))
        hiddens = tf.transpose(hiddens, [1, 0, 2])  # (batch, steps, units)
        previous = tf.concat([initial[0][:, None], hiddens[:, :-1]], axis=1)
        later_previous.append(tf.stop_gradient(previous))
        outputs = hiddens if layer.return_sequences else hiddens[:, -1]
        if layer.return_state:
            outputs = [outputs, *(state[-1] for state in states)]
        return z, outputs, (inputs, previous)

    def unit_gradients(
        self,
        layer: keras.layers.Layer,
        saved: tuple[tf.Tensor, tf.Tensor],
        z_grad: tf.Tensor,
        num_units: Any,
    ) -> UnitGradients:
        cell = layer.cell
        inputs, previous = (tf.cast(t, z_grad.dtype) for t in saved)
        grads = per_unit(z_grad, num_units)  # (units, steps, gates * units)
        if _may_use_ghost_norms(layer, inputs) and _ghost_is_cheaper(
            grads.shape[1], inputs.shape[-1], cell.units, grads.shape[-1]
        ):
            return UnitGradients(
                _ghost_squared_norms(
                    per_unit(inputs, num_units), per_unit(previous, num_units), grads, cell.use_bias
                )
            )
        # a^T g in the kernels' layout: for these shapes faster than g^T a then transposed
        # (Keras' LSTM examples: 4.8 against 8.2 ms over 10 steps, 10.0 against 11.9 ms over
        # 200; benchmarks/README.md).
        gradients = [
            tf.linalg.matmul(per_unit(inputs, num_units), grads, transpose_a=True),
            tf.linalg.matmul(per_unit(previous, num_units), grads, transpose_a=True),
        ]
        if cell.use_bias:
            gradients.append(tf.reduce_sum(grads, axis=1))
        return UnitGradients(gradients_squared_norms(gradients), gradients)


def _initial_states(
    initial_state: Any, num_states: int, inputs: tf.Tensor, units: int, dtype: tf.DType
) -> tuple[tf.Tensor, ...]:
    """The recurrence's first states: the given `initial_state` (a tensor or a list of
    `num_states` tensors of shape `(batch, units)`), or zeros as Keras starts."""
    if initial_state is None:
        batch = tf.shape(inputs)[0]
        return tuple(tf.zeros(tf.stack([batch, units]), dtype) for _ in range(num_states))
    states = tf.nest.flatten(initial_state)
    if len(states) != num_states:
        raise ValueError(
            f"initial_state must hold {num_states} tensors of shape (batch, {units}); "
            f"received {len(states)}."
        )
    return tuple(tf.cast(state, dtype) for state in states)


def _ghost_is_cheaper(positions: int | None, d_in: int, units: int, gate_units: int) -> bool:
    """Whether Gram matrices over a unit's positions (steps of its examples) cost fewer
    multiply-adds than forming its gradient of `[W; U]`, `(d_in + units) x gate_units`."""
    if positions is None:
        return False
    return positions * (d_in + units + gate_units) < (d_in + units) * gate_units


def _may_use_ghost_norms(layer: keras.layers.Layer, inputs: tf.Tensor) -> bool:
    """Whether the rule exposes the recurrent kernel's share of the clipped sum to the
    backward pass from `z` (`_with_recurrent_kernel_gradient`), so that `unit_gradients` may
    take ghost norms: when they are cheaper for one example per unit. Decided from static
    shapes alone, so that `forward` and `unit_gradients` decide alike."""
    steps, d_in = inputs.shape[1], inputs.shape[-1]
    gate_units = layer.cell.recurrent_kernel.shape[-1]
    return d_in is not None and _ghost_is_cheaper(steps, d_in, layer.cell.units, gate_units)


def _with_recurrent_kernel_gradient(
    projected: tf.Tensor, recurrent_kernel: tf.Tensor, later_previous: list[tf.Tensor]
) -> tf.Tensor:
    """`projected` (the rule's `z`), through which a backward pass also reaches `U`.

    The value is `projected`; the gradient `dz` flows on to it unchanged, and to `U` as
    `sum_{t, examples} h_{t-1}^T dz_t`: the gradient of `U` with `h_{t-1}` held fixed, which
    is what `sum_t h_{t-1} U` would get if it were added at `z` (it is, inside the recurrence).
    The clip-weighted backward pass from `z` thus gives `U`'s share of the clipped sum, as it
    gives `W`'s and `b`'s, with no per-example gradients formed. `h_{t-1}` is computed after
    `z` (by the recurrence that reads `z`), so it is handed over in `later_previous` and read
    only when the gradient is taken. Any other gradient through `U` from this forward pass
    would count `U` twice; the fast path takes none (it differentiates the loss with respect
    to the `z`s only, and each `z` with respect to its own layer's weights).
    """

    @tf.custom_gradient
    def expose(projected: tf.Tensor, recurrent_kernel: tf.Tensor):
        def gradient(dz: tf.Tensor):
            (previous,) = later_previous
            units, gate_units = recurrent_kernel.shape
            recurrent_gradient = tf.linalg.matmul(
                tf.reshape(tf.cast(previous, dz.dtype), [-1, units]),
                tf.reshape(dz, [-1, gate_units]),
                transpose_a=True,
            )
            return dz, tf.cast(recurrent_gradient, recurrent_kernel.dtype)

        return tf.identity(projected), gradient

    return expose(projected, recurrent_kernel)


def _ghost_squared_norms(
    inputs: tf.Tensor, previous: tf.Tensor, grads: tf.Tensor, use_bias: bool
) -> tf.Tensor:
    """Per-unit squared norms of the `[W; U]` (and `b`) gradients from Gram matrices over
    positions: `sum_{t,s} (x_t.x_s + h_{t-1}.h_{s-1}) (g_t.g_s)`, and `sum_{t,s} g_t.g_s` for
    `b` (the squared norm of `sum_t g_t`)."""
    activation_gram = tf.linalg.matmul(inputs, inputs, transpose_b=True) + tf.linalg.matmul(
        previous, previous, transpose_b=True
    )
    grad_gram = tf.linalg.matmul(grads, grads, transpose_b=True)
    norms = tf.reduce_sum(activation_gram * grad_gram, [1, 2])
    if use_bias:
        norms += tf.reduce_sum(grad_gram, [1, 2])
    return norms


@register(keras.layers.GRU)
class GRURule:
    # Under XLA the probe's gradient came out wrong (TF 2.21, CPU); not used when a model is
    # compiled with jit_compile=True.
    exact_under_xla = False

    def supports(self, layer: keras.layers.GRU) -> bool:
        return layer.cell.reset_after and RecurrentRule.supports(self, layer)

    def forward(
        self, layer: keras.layers.GRU, inputs: tf.Tensor, initial_state: Any = None
    ) -> tuple[tuple[tf.Tensor, tf.Tensor], Any, tuple[tf.Tensor, tf.Tensor]]:
        cell = layer.cell
        if layer.go_backwards:
            inputs = tf.reverse(inputs, [1])
        projected = tf.linalg.matmul(inputs, tf.cast(cell.kernel, inputs.dtype))
        if cell.use_bias:
            projected = projected + cell.bias[0]
        probe = tf.zeros_like(projected)  # its gradient: that of h_{t-1} U + b_rec at each step
        (first_hidden,) = _initial_states(initial_state, 1, inputs, cell.units, projected.dtype)

        def scan_step(hidden, elements):
            projected_t, probe_t = tf.split(elements, 2, axis=-1)
            inner = tf.linalg.matmul(hidden, cell.recurrent_kernel) + probe_t
            if cell.use_bias:
                inner = inner + cell.bias[1]
            x_update, x_reset, x_candidate = tf.split(projected_t, 3, axis=-1)
            inner_update, inner_reset, inner_candidate = tf.split(inner, 3, axis=-1)
            update = cell.recurrent_activation(x_update + inner_update)
            reset = cell.recurrent_activation(x_reset + inner_reset)
            candidate = cell.activation(x_candidate + reset * inner_candidate)
            return update * hidden + (1 - update) * candidate

        hiddens = tf.scan(
            scan_step,
            tf.transpose(tf.concat([projected, probe], axis=-1), [1, 0, 2]),
            initializer=first_hidden,
        )
        hiddens = tf.transpose(hiddens, [1, 0, 2])
        previous = tf.concat([first_hidden[:, None], hiddens[:, :-1]], axis=1)
        outputs = hiddens if layer.return_sequences else hiddens[:, -1]
        if layer.return_state:
            outputs = [outputs, hiddens[:, -1]]
        return (projected, probe), outputs, (inputs, previous)

    def unit_gradients(
        self,
        layer: keras.layers.GRU,
        saved: tuple[tf.Tensor, tf.Tensor],
        z_grad: tuple[tf.Tensor, tf.Tensor],
        num_units: Any,
    ) -> UnitGradients:
        projected_grad, probe_grad = z_grad
        inputs, previous = (tf.cast(t, projected_grad.dtype) for t in saved)
        input_side = per_unit(projected_grad, num_units)
        recurrent_side = per_unit(probe_grad, num_units)
        gradients = [
            tf.linalg.matmul(per_unit(inputs, num_units), input_side, transpose_a=True),
            tf.linalg.matmul(per_unit(previous, num_units), recurrent_side, transpose_a=True),
        ]
        if layer.cell.use_bias:
            gradients.append(
                tf.stack(
                    [tf.reduce_sum(input_side, axis=1), tf.reduce_sum(recurrent_side, axis=1)],
                    axis=1,
                )
            )
        return UnitGradients(gradients_squared_norms(gradients), gradients)
