"""Errors meant for the user, and the one way an error gets past Hydra (app.py reports them)."""


class LinregError(Exception):
    """A problem the user can fix (bad config, unusable store): one line, exit code 2."""


class ConfigError(LinregError):
    """A config value that passed Hydra's type checks but is out of range or unusable here."""


class TrackingError(LinregError):
    """The MLflow tracking store cannot be opened or reached."""


class Diverged(Exception):
    """A single run whose loss blew up: it ran and is recorded (FAILED, `diverged`), and the
    command exits 3, so that a script or CI step sees it did not train. A sweep's diverged jobs
    are counted by its parent instead, and the sweep exits 0."""

    EXIT_CODE = 3


class Abort(BaseException):
    """Carries `error` past Hydra to the app's error policy.

    Hydra 1.3 turns an Exception raised in a callback into a warning and goes on, and records an
    Exception raised by a job as a failed job while the sweep goes on. What must stop the whole
    command (a store no job can use, a sweep that cannot open) travels as this BaseException.
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error
