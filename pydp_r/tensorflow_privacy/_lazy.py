"""Lazy submodules (PEP 562) for the TF Privacy namespace packages.

TF Privacy's packages import their submodules eagerly, so `tensorflow_privacy.privacy.analysis`
works after `import tensorflow_privacy`. Ours import them on first attribute access, which keeps
the accounting modules free of TensorFlow until a training name is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from pydp_r.tensorflow_privacy import _unsupported


def package_getattr(
    package_name: str, submodules: tuple[str, ...], unsupported: tuple[str, ...] = ()
) -> Callable[[str], object]:
    """A PEP 562 `__getattr__` importing `submodules` on access and refusing `unsupported`.

    Args:
        package_name: The package's `__name__`.
        submodules: Names of its supported submodules.
        unsupported: Names of submodules TF Privacy has and pydp_r refuses; accessing one
            raises `NotSupportedOnKeras3Error`.

    Returns:
        The function to bind as the package's `__getattr__`.
    """
    refuse = _unsupported.module_getattr(package_name, unsupported)

    def __getattr__(name: str) -> object:
        if name in submodules or name in unsupported:
            # Unsupported submodules raise their own error on import.
            return importlib.import_module(f"{package_name}.{name}")
        return refuse(name)

    return __getattr__
