"""DP optimizer classes that take an older TF Privacy signature and build a pydp_r DP optimizer.

TF Privacy's 2019 Gaussian optimizers wrap `tf.compat.v1.train` optimizers (`beta1`,
`use_locking`, ...), its vectorized Keras optimizers put `unconnected_gradients_to_zero` where
pydp_r has `gradient_accumulation_steps`. Each class here is a subclass of the matching pydp_r DP
optimizer whose constructor accepts the old arguments, translates their names into Keras 3's and
calls the pydp_r constructor, so the optimizer trains with pydp_r's DP step and serializes with
Keras 3 names.
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import keras

from pydp_r import optimizers


class OldArgument(NamedTuple):
    """One argument of the old constructor after the DP arguments, in positional order."""

    old_name: str
    keras_name: str | None  # None: the argument has no Keras 3 counterpart and is checked
    default: Any  # `REQUIRED` when the old constructor had no default


REQUIRED = object()


def _check_boolean(class_name: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(
            f"{class_name}: {name} must be True or False; received {value!r}. It does not "
            "change the DP-SGD update on Keras 3 (see docs/migration.md)."
        )


def make_translated_class(
    class_name: str,
    dp_base: type,
    dp_extra_arguments: tuple[str, ...],
    old_arguments: tuple[OldArgument, ...],
    fixed_keras_arguments: dict[str, Any],
    doc: str,
    module: str,
) -> type:
    """A subclass of `dp_base` whose constructor takes TF Privacy's older signature.

    Args:
        class_name: Name of the class (TF Privacy's name).
        dp_base: The pydp_r DP optimizer class, e.g. `pydp_r.DPAdam`.
        dp_extra_arguments: Boolean arguments that follow `num_microbatches` in the old
            signature and do not change the update on Keras 3 (`unroll_microbatches`,
            `unconnected_gradients_to_zero`); accepted and checked to be booleans.
        old_arguments: The wrapped optimizer's arguments in the old signature's order; those
            with `keras_name=None` must be booleans (e.g. `use_locking`) and have no effect.
        fixed_keras_arguments: Keras 3 arguments that make its update equal the old one
            (e.g. Adagrad's `epsilon=0`), used unless given explicitly.
        doc: The class docstring.
        module: The module the class belongs to (its `__module__`).

    Returns:
        The class, registered for Keras serialization as `pydp_r.tensorflow_privacy>class_name`.
    """

    def __init__(
        self: Any,
        l2_norm_clip: float,
        noise_multiplier: float,
        num_microbatches: int | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        names = dp_extra_arguments + tuple(argument.old_name for argument in old_arguments)
        if len(args) > len(names):
            raise ValueError(
                f"{class_name} takes at most {3 + len(names)} positional arguments; received "
                f"{3 + len(args)}."
            )
        values = dict(zip(names, args, strict=False))
        for name, value in kwargs.items():
            if name in values:
                raise ValueError(f"{class_name} received {name} both by position and by name.")
            values[name] = value
        for name in dp_extra_arguments:
            _check_boolean(class_name, name, values.pop(name, False))
        keras_arguments = dict(fixed_keras_arguments)
        for argument in old_arguments:
            if argument.old_name in values:
                value = values.pop(argument.old_name)
            elif argument.default is not REQUIRED:
                value = argument.default
            elif argument.keras_name in values:
                continue  # given under its Keras 3 name
            else:
                raise ValueError(f"{class_name} requires the argument {argument.old_name}.")
            if argument.keras_name is None:
                _check_boolean(class_name, argument.old_name, value)
            elif value is not None:
                keras_arguments[argument.keras_name] = value
        keras_arguments.update(values)  # Keras 3 names, e.g. from get_config()
        accumulation = keras_arguments.pop("gradient_accumulation_steps", 1)
        dp_base.__init__(
            self, l2_norm_clip, noise_multiplier, num_microbatches, accumulation, **keras_arguments
        )

    translated = type(
        class_name,
        (dp_base,),
        {"__init__": __init__, "__doc__": doc, "__module__": module},
    )
    return keras.saving.register_keras_serializable(
        package="pydp_r.tensorflow_privacy", name=class_name
    )(translated)


def keras_arguments_of(dp_class: type) -> tuple[OldArgument, ...]:
    """The positional arguments of the Keras 3 optimizer that `dp_class` wraps, by Keras name.

    `name` is left out (pydp_r's DP classes default it to "dp_" + Keras' name).
    """
    keras_class = next(
        base
        for base in dp_class.__mro__
        if issubclass(base, keras.optimizers.Optimizer)
        and not issubclass(base, optimizers.DPOptimizerMixin)
    )
    return tuple(
        OldArgument(parameter.name, parameter.name, parameter.default)
        for parameter in inspect.signature(keras_class).parameters.values()
        if parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and parameter.name != "name"
    )


# tf.compat.v1.train constructors, after `learning_rate` (all of them start with it).
V1_GRADIENT_DESCENT = (
    OldArgument("learning_rate", "learning_rate", REQUIRED),
    OldArgument("use_locking", None, False),
    OldArgument("name", "name", None),
)
V1_ADAM = (
    OldArgument("learning_rate", "learning_rate", 0.001),
    OldArgument("beta1", "beta_1", 0.9),
    OldArgument("beta2", "beta_2", 0.999),
    OldArgument("epsilon", "epsilon", 1e-8),
    OldArgument("use_locking", None, False),
    OldArgument("name", "name", None),
)
V1_ADAGRAD = (
    OldArgument("learning_rate", "learning_rate", REQUIRED),
    OldArgument("initial_accumulator_value", "initial_accumulator_value", 0.1),
    OldArgument("use_locking", None, False),
    OldArgument("name", "name", None),
)

V1_CLASSES = {
    "GradientDescent": (optimizers.DPSGD, V1_GRADIENT_DESCENT, {}),
    "Adam": (optimizers.DPAdam, V1_ADAM, {}),
    # tf.compat.v1 Adagrad divides by sqrt(accumulator), Keras 3 by sqrt(accumulator + epsilon).
    "Adagrad": (optimizers.DPAdagrad, V1_ADAGRAD, {"epsilon": 0.0}),
}


def v1_doc(old_name: str, v1_optimizer: str, dp_base: type, extra: str) -> str:
    """Docstring of a class standing in for a TF Privacy tf.compat.v1 DP optimizer."""
    return (
        f"TF Privacy's `{old_name}` on Keras 3: a `pydp_r.{dp_base.__name__}` built from "
        f"`tf.compat.v1.train.{v1_optimizer}` arguments.\n\n"
        f"Signature `(l2_norm_clip, noise_multiplier, num_microbatches=None{extra}, "
        f"<tf.compat.v1.train.{v1_optimizer} arguments>)`. The v1 arguments are renamed to "
        "Keras 3's (`beta1` -> `beta_1`, ...), with the defaults of the v1 optimizer, so the "
        "update is the v1 one; `use_locking` has no effect. Use it as a Keras optimizer: "
        "`model.compile(optimizer=...)`; `minimize(loss, var_list)` with a vector loss is "
        "tf.compat.v1 graph-mode API that Keras 3 does not have (use `compute_dp_gradients` in "
        "custom loops). `name` defaults to pydp_r's name for the class.\n"
    )
