"""TF Privacy's `privacy.keras_models.dp_keras_model` on Keras 3: `DPModel`, `DPSequential`.

A DP model carries the DP-SGD settings (`l2_norm_clip`, `noise_multiplier`, `num_microbatches`)
and is compiled with a standard Keras optimizer, as in TF Privacy. TF Privacy overrides
`train_step`; here `compile()` wraps the given optimizer into its pydp_r DP version with the
model's settings (`SGD` -> `pydp_r.DPSGD`, any other Keras 3 optimizer through
`make_dp_optimizer_class`), so `fit()` runs pydp_r's DP step: per-example (or per-microbatch)
clipping of the whole loss gradient, Gaussian noise of std `noise_multiplier * l2_norm_clip`
on the sum, then the optimizer's update. `model.optimizer` is that DP copy of the optimizer
passed in (same configuration, fresh state).

Differences from TF Privacy 0.9.0: regularization losses are part of each example's clipped
loss (TF Privacy adds their gradient after noising); `layer_registry` is refused, pydp_r picks
its ghost-norm fast path itself; `use_xla=False` turns XLA off, `use_xla=True` leaves Keras'
`jit_compile="auto"`.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
from typing import Any

import keras

from pydp_r import _keras_seam
from pydp_r._checks import check_count, check_real
from pydp_r.optimizers import DPOptimizerMixin
from pydp_r.tensorflow_privacy.privacy.optimizers import dp_optimizer_keras

__all__ = ["DPModel", "DPSequential", "make_dp_model_class"]


@dataclasses.dataclass(frozen=True)
class _DPSettings:
    l2_norm_clip: float
    noise_multiplier: float
    num_microbatches: int | None
    use_xla: bool


_SETTING_NAMES = ("l2_norm_clip", "noise_multiplier", "num_microbatches", "use_xla")

# The settings `from_config` read from a saved config, for the constructor it calls.
_settings_from_config: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "pydp_r_dp_model_settings_from_config", default=None
)


def _check_settings(
    l2_norm_clip: Any, noise_multiplier: Any, num_microbatches: Any, use_xla: Any
) -> _DPSettings:
    if isinstance(num_microbatches, bool):
        raise ValueError(
            "num_microbatches must be None or a positive integer; received a boolean "
            f"({num_microbatches!r}). Did you mean it for use_xla (TF Privacy's older "
            "positional order)?"
        )
    if not isinstance(use_xla, bool):
        raise ValueError(f"use_xla must be True or False; received {use_xla!r}.")
    return _DPSettings(
        l2_norm_clip=check_real(
            "l2_norm_clip", l2_norm_clip, "a finite number > 0", lambda v: 0 < v < math.inf
        ),
        noise_multiplier=check_real(
            "noise_multiplier",
            noise_multiplier,
            "a finite number >= 0",
            lambda v: 0 <= v < math.inf,
        ),
        num_microbatches=None
        if num_microbatches is None
        else check_count("num_microbatches", num_microbatches),
        use_xla=use_xla,
    )


def _dp_copy(optimizer: keras.optimizers.Optimizer, settings: _DPSettings) -> Any:
    """The pydp_r DP version of `optimizer`: same class and configuration, fresh state."""
    dp_class = dp_optimizer_keras.make_keras_optimizer_class(type(optimizer))
    config = optimizer.get_config()
    config.update(
        l2_norm_clip=settings.l2_norm_clip,
        noise_multiplier=settings.noise_multiplier,
        num_microbatches=settings.num_microbatches,
    )
    return dp_class.from_config(config)


def _functional(model_args: tuple[Any, ...], model_kwargs: dict[str, Any]) -> bool:
    """Whether `keras.Model(*model_args, **model_kwargs)` would build a functional model."""
    return (
        len(model_args) == 2
        or (len(model_args) == 1 and "outputs" in model_kwargs)
        or ("inputs" in model_kwargs and "outputs" in model_kwargs)
    )


_FUNCTIONAL_VARIANTS: dict[type, type] = {}


def _functional_variant(dp_model_class: type) -> type:
    """`DPModel` built from inputs and outputs: a subclass of it and of Keras' Functional.

    Without it Keras would rebase `DPModel` itself onto Functional at the first functional
    construction, breaking later subclassed use of `DPModel`.
    """
    if dp_model_class not in _FUNCTIONAL_VARIANTS:
        variant = type(
            dp_model_class.__name__,
            (dp_model_class, _keras_seam.functional_model_class()),
            {"__module__": dp_model_class.__module__, "__doc__": dp_model_class.__doc__},
        )
        _FUNCTIONAL_VARIANTS[dp_model_class] = variant
    return _FUNCTIONAL_VARIANTS[dp_model_class]


def make_dp_model_class(cls: type) -> type:
    """The DP-SGD version of a Keras 3 model class, as TF Privacy's `make_dp_model_class`.

    Args:
        cls: `keras.Model`, `keras.Sequential` or a subclass of `keras.Model`.

    Returns:
        A subclass named `"DP" + cls.__name__` whose constructor takes `(l2_norm_clip,
        noise_multiplier, num_microbatches=None, use_xla=True, layer_registry=None, *args,
        **kwargs)`, the rest going to `cls`, and whose `compile()` takes a standard Keras
        optimizer (name, instance or config) and trains with pydp_r's DP step.

    Raises:
        ValueError: When `cls` is not a subclass of `keras.Model`.
    """
    if not (isinstance(cls, type) and issubclass(cls, keras.Model)):
        raise ValueError(f"cls must be a subclass of keras.Model; received {cls!r}.")

    class DPModelClass(cls):
        def __new__(cls_: type, *args: Any, **kwargs: Any) -> Any:
            if cls_ is DPModelClass and cls is keras.Model and _functional(args[5:], kwargs):
                cls_ = _functional_variant(DPModelClass)
            return super().__new__(cls_, *args, **kwargs)

        def __init__(
            self,
            l2_norm_clip: float | None = None,
            noise_multiplier: float | None = None,
            num_microbatches: int | None = None,
            use_xla: bool = True,
            layer_registry: Any = None,
            *args: Any,
            **kwargs: Any,
        ) -> None:
            saved = _settings_from_config.get()
            if saved is not None and l2_norm_clip is None and noise_multiplier is None:
                _settings_from_config.set(None)  # for this model only, not its sublayers
                l2_norm_clip = saved.get("l2_norm_clip")
                noise_multiplier = saved.get("noise_multiplier")
                num_microbatches = saved.get("num_microbatches")
                use_xla = saved.get("use_xla", True)
            settings = _check_settings(l2_norm_clip, noise_multiplier, num_microbatches, use_xla)
            if layer_registry is not None:
                raise ValueError(
                    f"layer_registry must be None; received {layer_registry!r}. pydp_r takes "
                    "its fast (ghost-norm) clipping path by itself for the layers it supports "
                    "(pydp_r.step.fast_clipping); TF Privacy's layer registries do not apply."
                )
            super().__init__(*args, **kwargs)
            self._dp_settings = settings

        @property
        def l2_norm_clip(self) -> float:
            """Clipping bound C (> 0) of each example's (microbatch's) gradient; read-only."""
            return self._dp_settings.l2_norm_clip

        @property
        def noise_multiplier(self) -> float:
            """Noise std over C (>= 0); read-only."""
            return self._dp_settings.noise_multiplier

        @property
        def num_microbatches(self) -> int | None:
            """None (clip each example) or the number of microbatches per batch; read-only."""
            return self._dp_settings.num_microbatches

        @property
        def use_xla(self) -> bool:
            """False compiles the step without XLA; True leaves Keras' jit_compile="auto"."""
            return self._dp_settings.use_xla

        def compile(self, optimizer: Any = "rmsprop", *args: Any, **kwargs: Any) -> None:
            """Keras' `compile`, with `optimizer` replaced by its pydp_r DP version.

            Args:
                optimizer: A standard Keras 3 optimizer: name, instance or config (not a DP
                    optimizer: the model adds the privacy).
                *args, **kwargs: Keras' `compile` arguments (`loss`, `metrics`, ...).

            Raises:
                ValueError: When `optimizer` is already a DP optimizer.
            """
            keras_optimizer = keras.optimizers.get(optimizer)
            if isinstance(keras_optimizer, DPOptimizerMixin):
                raise ValueError(
                    f"optimizer must be a standard Keras optimizer for {type(self).__name__}, "
                    f"which adds the privacy itself; received the DP optimizer "
                    f"{type(keras_optimizer).__name__}. Pass e.g. keras.optimizers.SGD(...), or "
                    "compile a plain keras.Model with the DP optimizer instead."
                )
            if not self.use_xla:
                kwargs.setdefault("jit_compile", False)
            super().compile(_dp_copy(keras_optimizer, self._dp_settings), *args, **kwargs)

        def get_config(self) -> dict[str, Any]:
            config = super().get_config()
            config.update(dataclasses.asdict(self._dp_settings))
            return config

        @classmethod
        def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> Any:
            config = dict(config)
            saved = {name: config.pop(name) for name in _SETTING_NAMES if name in config}
            token = _settings_from_config.set(saved)
            try:
                return super().from_config(config, custom_objects=custom_objects)
            finally:
                _settings_from_config.reset(token)

    DPModelClass.__name__ = DPModelClass.__qualname__ = "DP" + cls.__name__
    DPModelClass.__doc__ = (
        f"DP-SGD version of `{cls.__module__}.{cls.__name__}` (TF Privacy's "
        f"`DP{cls.__name__}`).\n\n"
        "Construct with `(l2_norm_clip, noise_multiplier, num_microbatches=None, use_xla=True, "
        f"layer_registry=None, <{cls.__name__} arguments>)`, then compile with a standard Keras "
        "optimizer and loss; `fit()` clips each example's gradient to L2 norm `l2_norm_clip` "
        "(each microbatch's mean gradient with `num_microbatches`) and adds Gaussian noise of std "
        "`noise_multiplier * l2_norm_clip` to their sum.\n"
    )
    return keras.saving.register_keras_serializable(
        package="pydp_r.tensorflow_privacy", name=DPModelClass.__name__
    )(DPModelClass)


DPModel = make_dp_model_class(keras.Model)
DPSequential = make_dp_model_class(keras.Sequential)
