"""pydp_r: differentially private deep learning for Keras 3 (TensorFlow backend)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
