"""The one error type of the config package."""


class ConfigError(ValueError):
    """A config problem; the message names the offending key."""
