"""An unsupported TF Privacy module: importing it raises NotSupportedOnKeras3Error, saying why."""

from pydp_r.tensorflow_privacy._unsupported import raise_for_module

raise_for_module(__name__)
