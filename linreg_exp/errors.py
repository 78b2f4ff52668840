"""Errors meant for the user: the CLI prints their message as one line, without a traceback."""


class LinregError(Exception):
    """A problem the user can fix (bad config, unreachable store); exit code 2."""


class ConfigError(LinregError):
    """A config value that passed Hydra's type checks but is out of range or unusable here."""


class TrackingError(LinregError):
    """The MLflow tracking store cannot be opened or reached."""
