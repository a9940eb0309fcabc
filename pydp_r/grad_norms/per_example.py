"""Keras layers declared per-example without a rule of their own.

Each computes every example's output from that example's inputs alone, with the batch on axis
0. Layers with weights among them get per-example gradients by vectorizing the layer alone
over the batch, unless `through_sublayers` hands their weights to their sublayers' rules.
"""

from __future__ import annotations

import keras

from pydp_r.grad_norms.registry import declare_known_per_example


def _layer_types(names: str) -> list[type]:
    return [getattr(keras.layers, name) for name in names.split() if hasattr(keras.layers, name)]


declare_known_per_example(
    *_layer_types(
        # Without weights.
        "InputLayer Activation ReLU LeakyReLU ELU Softmax Dropout SpatialDropout1D "
        "SpatialDropout2D SpatialDropout3D GaussianNoise GaussianDropout AlphaDropout Flatten "
        "Reshape Permute RepeatVector Cropping1D Cropping2D Cropping3D ZeroPadding1D "
        "ZeroPadding2D ZeroPadding3D UpSampling1D UpSampling2D UpSampling3D MaxPooling1D "
        "MaxPooling2D MaxPooling3D AveragePooling1D AveragePooling2D AveragePooling3D "
        "GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D GlobalAveragePooling1D "
        "GlobalAveragePooling2D GlobalAveragePooling3D Concatenate Add Subtract Multiply Average "
        "Maximum Minimum Dot Rescaling Identity UnitNormalization Masking "
        # Preprocessing with fixed (adapted) state, row by row. Not TextVectorization: without
        # output_sequence_length it pads every example to the batch's longest.
        "IntegerLookup StringLookup Normalization CategoryEncoding Hashing Discretization "
        "HashedCrossing "
        # With weights but no rule: vectorized over the batch, layer by layer.
        "PReLU RMSNormalization"
    )
)


def _one_batch_of_images(layer: keras.layers.Layer, args: tuple, kwargs: dict) -> str | None:
    """Image preprocessing layers take a rank-3 tensor as one unbatched image (its first axis,
    the batch here, would be the height) and a dict as images with boxes or masks."""
    images = args[0] if args else kwargs.get("inputs", kwargs.get("data"))
    if not isinstance(images, keras.KerasTensor):
        return "its input is not one batch of images (a dict of images with boxes or masks?)"
    if len(images.shape) != 4:
        return (
            f"takes its input of shape {tuple(images.shape)} as one image, not a batch of "
            "images (it is per-example on rank-4 inputs only)"
        )
    return None


# Image preprocessing that transforms each image alone: its random parameters (drawn per
# image or per batch) do not depend on the data, and its statistics (contrast's mean, auto
# contrast's range) are each image's own. Not MixUp or CutMix (they blend images of a batch),
# nor Equalization (its histogram counts the pixels of the whole batch), nor the layers
# that run other layers or pipelines (RandAugment, AugMix, RandomColorJitter, Pipeline).
declare_known_per_example(
    *_layer_types(
        "Resizing CenterCrop RandomCrop RandomFlip RandomRotation RandomZoom RandomTranslation "
        "RandomShear RandomContrast RandomBrightness AutoContrast Solarization RandomGrayscale "
        "RandomInvert RandomHue RandomSaturation RandomPosterization RandomColorDegeneration "
        "RandomSharpness"
    ),
    call_check=_one_batch_of_images,
)

# Attention mixes positions within an example only; the projections are EinsumDense layers.
# Bidirectional calls its forward and backward recurrent layers once each on the whole batch
# (`pydp_r.grad_norms.rnn` covers both directions).
declare_known_per_example(
    *_layer_types("MultiHeadAttention GroupQueryAttention Bidirectional"), through_sublayers=True
)
