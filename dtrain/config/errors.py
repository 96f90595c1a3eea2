"""The one exception a user's mistake raises: which key is wrong and how to fix it."""


class ConfigError(ValueError):
    """A mistake in the run's configuration, reported as `key: problem` on one line."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
