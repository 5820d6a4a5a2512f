"""infopt: an inference-optimization lab for PyTorch models.

Import surface kept small: the models, devices, seeding and error types. The
layers live in sub-packages (``measure``, ``analyze``, ``optimize``, ``report``,
``run``), one concern per module; ARCHITECTURE.md lists them.
"""

from infopt.determinism import seed_everything, set_determinism
from infopt.devices import DEVICE_CHOICES, resolve_device, synchronize
from infopt.errors import (DeviceUnavailableError, InfoptError, InvalidInputError, UnknownModelError,
                     WeightsUnavailableError)
from infopt.models import list_models, load_model, spec_folder_name, validate_spec

__version__ = "0.1.0"

__all__ = [
    "DEVICE_CHOICES", "DeviceUnavailableError", "InfoptError", "InvalidInputError", "UnknownModelError",
    "WeightsUnavailableError", "list_models", "load_model", "resolve_device", "seed_everything",
    "set_determinism", "spec_folder_name", "synchronize", "validate_spec", "__version__",
]
