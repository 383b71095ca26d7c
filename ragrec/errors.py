"""The one family of errors ragrec raises on bad input.

Every error names what was wrong (a file, a parameter, a dataset) and, where it can, how to fix
it. Catch :class:`RagrecError` to handle all of them.
"""


class RagrecError(Exception):
    """Base class of every error ragrec raises on purpose."""


class DataError(RagrecError):
    """A dataset is missing, malformed, or a split/sample request cannot be met."""


class ConfigError(RagrecError, ValueError):
    """A parameter, profile, or name is invalid."""


class ModelError(RagrecError):
    """A model, checkpoint or head layout is missing or does not fit."""
