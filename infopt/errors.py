"""Exception types that carry one clear, user-facing sentence.

Everything the lab raises on purpose derives from :class:`InfoptError`, so the
command line can print ``str(error)`` as a single line and exit non-zero
instead of showing a traceback.
"""


class InfoptError(Exception):
    """Base class for errors whose message is meant for the user as-is."""


class UnknownModelError(InfoptError, ValueError):
    """A model name that is not in the registry."""


class InvalidInputError(InfoptError, ValueError):
    """A batch size, sequence length or other input outside what the model allows."""


class DeviceUnavailableError(InfoptError, RuntimeError):
    """An explicitly requested device cannot be used (never silently replaced)."""


class WeightsUnavailableError(InfoptError, RuntimeError):
    """Pretrained weights are neither cached nor downloadable."""
