"""A ClientActor's part in fused rounds (engine/fused.py): its plan, its outbox
(engine/mailbox.py), and whole rounds run back to back with the rows other actors mix swapped
through the outboxes. The same operations on the same rows as a round-per-call `step` each
round (engine/round_calls.py), so the same bits.

A chunk opens the parts in three steps of every actor before any `rounds` call runs: every
actor opens its own (`FusedPart.open`), then every actor attaches to its peers' outboxes, then
every actor unlinks its names."""
from __future__ import annotations

import os
from typing import Optional, Sequence, Union

from qgm_ray.engine import mailbox
from qgm_ray.engine.base import block_mix


class FusedPart:
    """One actor's part from the round its outbox opened: `plan` (engine/fused.py `plans`) and
    `box`, its outbox (None when it exchanges with no other actor)."""

    def __init__(self, plan: dict, box: Optional[mailbox.Mailbox]):
        self.plan, self.box = plan, box

    @classmethod
    def open(cls, prefix: str, me: int, plan: dict, start: int) -> Union["FusedPart", str]:
        """The part of actor `me` from round `start`, its outbox made; or why it could not be
        (no room in the node's shared memory)."""
        try:
            return cls(plan, mailbox.open_for(prefix, me, plan, start))
        except OSError as e:
            return f"{os.path.dirname(prefix)}: {e.strerror or e}"

    def close(self) -> None:
        if self.box is not None:
            self.box.close()

    def attach(self) -> None:
        """Open the peers' outboxes (once every actor has opened its own)."""
        if self.box is not None:
            self.box.attach()

    def unlink(self) -> None:
        """Remove this actor's outbox names (once every actor has attached): from here on a
        killed process leaves nothing in /dev/shm."""
        if self.box is not None:
            self.box.unlink()

    def rounds(self, block, positions: Sequence[int], wire, t0: int, lrs: Sequence[float]) -> list[list[float]]:
        """Rounds t0 .. t0 + len(lrs) - 1 of `block` (rows at `positions`, payloads on `wire`),
        each whole (pre-mix, exchange, mix, post-mix); returns each round's losses in row order."""
        box, plan = self.box, self.plan
        if box is not None and box.broken:   # an earlier call of this chunk failed: the blocks are not where the peers are
            raise mailbox.PeerLost("an earlier call of this chunk failed")
        losses = []
        try:
            for i, lr in enumerate(lrs):
                t = t0 + i
                payload = block.pre_mix(lr)
                losses.append(block.losses.tolist())
                received = []
                if box is not None:
                    if plan["export"]:
                        box.publish(t, wire.host(payload[plan["export"]]))
                    received = wire.decode(box.received(t, plan["at"]))
                mixed = block_mix(payload, positions, plan["rows"], plan["sources"], received)
                if box is not None:
                    box.consumed(t)
                block.post_mix(mixed, lr)
        except BaseException:
            if box is not None:
                box.abort()
            raise
        return losses
