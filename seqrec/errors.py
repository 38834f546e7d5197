"""Errors a user can cause. Each message names the problem and the fix; the CLI exits with code 2."""


class SeqrecError(Exception):
    """Base class for every error caused by input, configuration or a run directory."""


class DataError(SeqrecError):
    """The interaction log cannot be read or has the wrong shape."""


class ConfigError(SeqrecError):
    """An experiment config has an unknown key, a wrong type or an invalid value."""


class ArtifactError(SeqrecError):
    """A run directory is missing files or comes from an incompatible version."""


class UnknownUserError(SeqrecError):
    """A user id that the run has never seen."""


class UnknownItemError(SeqrecError):
    """Item ids that the run has never seen."""
