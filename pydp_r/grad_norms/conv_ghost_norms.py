"""Per-example (per-unit) kernel gradient norms of convolutions from their input patches.

A convolution is a Dense layer applied to its input's patches, so its kernel gradient norms
follow from `outer_product_gradients` of the patches and the gradient at the output: the ghost
norm from Gram matrices, or (when Dense's rule finds that cheaper) the gradients formed.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from pydp_r.grad_norms.conv_views import extracted_patches, positions_last_patches
from pydp_r.grad_norms.registry import UnitGradients, outer_product_gradients, per_unit


def patch_kernel_gradients(
    layer: keras.layers.Layer,
    views_of: tf.Tensor,
    grads: tf.Tensor,
    output_spatial: list[int] | None,
    num_units: Any,
) -> UnitGradients:
    """Per-unit squared kernel gradient norms from the patches of `views_of`.

    Args:
        layer: The convolution whose kernel `(k..., d_in, d_out)` the norms are for.
        views_of: `(batch, *spatial, d_in)`, the tensor whose patches meet `grads`.
        grads: `(units, positions, d_out)`, the other side per unit (`per_unit`).
        output_spatial: The spatial sizes of `grads`' positions per example, or None when
            unknown at trace time (then `tf.image.extract_patches`, 1-D and 2-D only).
        num_units: Units the batch splits into; None for one per example.

    Returns:
        The squared norms, and the gradients `[(units, *layer.kernel.shape)]` when forming them
        was the cheaper way to the norms.

    Raises:
        NotSupported: For a 3-D convolution whose output sizes are unknown at trace time.
    """
    if output_spatial is None:
        patches = per_unit(extracted_patches(layer, views_of), num_units)
        norms, kernel_grads = outer_product_gradients(patches, grads)
    else:
        patches = positions_last_patches(layer, views_of, output_spatial, num_units)
        norms, kernel_grads = outer_product_gradients(patches, grads, positions_last=True)
    if kernel_grads is None:
        return UnitGradients(norms)
    return UnitGradients(norms, [tf.reshape(kernel_grads, [-1, *layer.kernel.shape])])
