"""Errors with a message meant for the user: main.py prints them as one line and exits 2."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): what a
    one-line error quotes of an error raised by code outside qgm-ray."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def described(e: BaseException) -> str:
    """An exception from code outside qgm-ray in one line: its type and its first line."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


class ConfigError(ValueError):
    """A bad configuration value. The message names the key and the allowed values."""
