"""Errors with a message meant for the user: main.py prints them as one line and exits 2."""


class ConfigError(ValueError):
    """A bad configuration value. The message names the key and the allowed values."""
