"""infopt: an inference-optimization lab for PyTorch models.

Import surface kept small; the submodules hold one concern each (models,
devices, env, timing, benchmark, profiling, roofline, memory, variants,
results, plots, runner).
"""

from .determinism import seed_everything, set_determinism
from .devices import DEVICE_CHOICES, resolve_device, synchronize
from .errors import (DeviceUnavailableError, InfoptError, InvalidInputError, UnknownModelError,
                     WeightsUnavailableError)
from .models import list_models, load_model, spec_folder_name, validate_spec

__version__ = "0.1.0"

__all__ = [
    "DEVICE_CHOICES", "DeviceUnavailableError", "InfoptError", "InvalidInputError", "UnknownModelError",
    "WeightsUnavailableError", "list_models", "load_model", "resolve_device", "seed_everything",
    "set_determinism", "spec_folder_name", "synchronize", "validate_spec", "__version__",
]
