"""A broken contract as one line: `ContractError`, and the words its lines are made of (the
rule's key, a value's kind, a dtype, an exception's first line)."""
from __future__ import annotations

import torch

from qgm_ray import errors
from qgm_ray.errors import ConfigError


class ContractError(ConfigError):
    """A plug-in broke its contract: one line naming it (main.py prints it and exits 2)."""

    def __init_subclass__(cls, **kwargs):
        # Ray re-raises an error from an actor as a subclass of both RayTaskError and the error's
        # own class, whose str() is the remote traceback (nested once per actor it crossed). The
        # plug-in's line is what the driver prints: str() of the innermost ContractError.
        super().__init_subclass__(**kwargs)
        cls.__str__ = ContractError.__str__

    def __str__(self) -> str:
        # args[0]: the line, or (in Ray's wrapper) the ContractError it wraps
        return str(self.args[0]) if self.args else ""


def crossing_ray(e: ConfigError) -> ContractError:
    """`e` as a ContractError: raised inside an actor, its line is what the driver prints."""
    return e if isinstance(e, ContractError) else ContractError(str(e))


def first_line(e: BaseException) -> str:
    """`Type: first line of the message`, or the type alone when the message is empty."""
    return f"{type(e).__name__}: {errors.first_line(e)}" if str(e).strip() else type(e).__name__


def rule_key(rule) -> str:
    return f"algorithm.name={getattr(rule, 'name', type(rule).__qualname__)!r}"


def _describe(value) -> str:
    if value is None:
        return "None"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")
