"""Round-barrier steps: work that needs every client's state at the end of a round, between
that round's post_mix and the next round's pre_mix (SlowMo's outer step is one).

A barrier is a plug-in of the engines, not of the rules: both engines run every barrier the
same generic way, so a new one is one module that defines a `Barrier` and registers a factory:

    from qgm_ray.engine.barriers import register

    @register
    def my_barrier(algorithm):        # the run's (possibly wrapped) rule
        return MyBarrier(...) if <the run asks for it> else None

and one line naming that module in `BUILT_IN` (a module outside qgm_ray registers itself when
it is imported, e.g. by the plug-in that needs it).

How the engines run a due barrier, with the same values in the same order on both:

    parts   = [barrier.gather(block) for block in blocks]      # in each block's process
    reduced = barrier.reduce(parts)                              # at one place, block order
    barrier.apply(block, reduced, lr)                            # in each block's process

`gather` returns CPU tensors (or tuples / lists of them, None allowed): the Ray engine turns
them into numpy arrays for the object store and back, which changes no bit.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Optional, Protocol, Sequence

# Modules of qgm-ray that register a barrier; imported the first time barriers are asked for.
BUILT_IN: tuple[str, ...] = ("qgm_ray.engine.slowmo",)


class Barrier(Protocol):
    name: str

    def due(self, t: int) -> bool:
        """Whether round t (from 0) ends with this barrier."""

    def nbytes(self, n: int, t: int, payload_bytes: int) -> int:
        """Bytes this barrier puts on the wire at the end of round t (0 where it is not due)."""

    def gather(self, block) -> Any:
        """What a block contributes, after its post_mix (CPU tensors)."""

    def reduce(self, parts: Sequence[Any]) -> Any:
        """Every block's `gather`, in block (= position) order -> what every block applies."""

    def apply(self, block, reduced: Any, lr: float) -> None:
        """In place on the block's state, with the round's lr."""

    def joiner_state(self, block) -> Any:
        """What an elastic joiner adopts (read from a block that stays), or None."""

    def adopt(self, block, rows: list[int], state: Any) -> None:
        """Rows of `block` (joiners) take `joiner_state`."""


_FACTORIES: list[Callable[[Any], Optional[Barrier]]] = []
_loaded = False


def register(factory: Callable[[Any], Optional[Barrier]]) -> Callable[[Any], Optional[Barrier]]:
    """Add a factory `algorithm -> Barrier or None`; returns it (usable as a decorator)."""
    if factory not in _FACTORIES:
        _FACTORIES.append(factory)
    return factory


def barriers_for(algorithm) -> list[Barrier]:
    """The barriers a run with this (built) algorithm takes, in registration order."""
    global _loaded
    if not _loaded:
        for module in BUILT_IN:
            importlib.import_module(module)
        _loaded = True
    return [b for b in (f(algorithm) for f in _FACTORIES) if b is not None]
