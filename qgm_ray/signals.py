"""The stop signals, at any moment of a run: SIGINT (Ctrl-C), SIGTERM (what Slurm, Kubernetes
and `kill` send), SIGHUP (a closed terminal or SSH session), SIGQUIT (Ctrl-\\) and SIGUSR1 (what
batch systems send ahead of a time limit). Each one stops a run the same way.

A run goes through three phases, and a signal means something different in each:

    starting    data, Ray, actors: nothing is trained, nothing written. The process exits at
                once (one line, 128 + signal number): waiting for Ray to finish starting only
                to shut it down would keep the user waiting (docs/results/processes).
    training    the first signal asks the engine to stop at the next round boundary; the run
                then checkpoints, writes summary.json (status stopped) and says how to resume.
                A second one calls `on_abort` (the summary, then an immediate exit).
    finishing   the run has ended and Ray is shutting down: the outcome is on disk or about to
                be. The process exits as soon as the summary is written, with 128 + signal
                number, and at the latest FINISH_GRACE_S later; a second signal exits at once.

Every exit without Python's unwinding (os._exit) leaves the Ray processes this process started
to the reaper (engine/reaper.py), which ends them within about a second. `cleanups` run first.
While a handler here is installed, qgm_ray/handler_guard.py keeps it in place at the C level.

Only the main thread can own signals: a Tune trial runs in another thread and is stopped by Tune.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Callable, Optional

from qgm_ray.handler_guard import HandlerGuard

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1)
# A terminal sends these to its whole foreground process group, Ray's processes included. Ray
# blocks SIGINT in the processes it starts; shielded_children blocks the others for them.
GROUP_SIGNALS = (signal.SIGHUP, signal.SIGQUIT)
FINISH_GRACE_S = 5.0

STARTING, TRAINING, FINISHING = "starting", "training", "finishing"

__all__ = ["FINISH_GRACE_S", "GROUP_SIGNALS", "SIGNALS", "Interrupted", "StopSignals", "exit_code",
           "hard_exit", "install_early", "quiet_exit_from_now", "shielded_children", "signal_name"]


class Interrupted(KeyboardInterrupt):
    """A stop signal that ends the command: `signum` gives the exit code (128 + signum),
    `message` is the one line to print (None: the command says what it was doing)."""

    def __init__(self, signum: int, message: Optional[str] = None):
        super().__init__(message or "")
        self.signum, self.message = signum, message


def signal_name(signum: Optional[int]) -> str:
    return signal.Signals(signum).name if signum else "stop"


def exit_code(exc: BaseException) -> int:
    """128 + signal number of an interruption, as a shell reports a death by that signal."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


def install_early(what: str = "stopped") -> None:
    """From the first line of a command until a phase-aware handler takes over (the run's
    StopSignals, the sweep's): a signal exits at once with one line, `NAME: what`, and
    128 + its number. Python's default for SIGTERM is a silent death; a KeyboardInterrupt
    raised instead is swallowed when it lands inside an import guarded by a bare `except:` (a
    sweep then runs to the end)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def early(signum, frame):
        hard_exit(signum, f"{signal_name(signum)}: {what}")
    for s in SIGNALS:
        signal.signal(s, early)


@contextlib.contextmanager
def shielded_children(signals=GROUP_SIGNALS):
    """Processes started inside (Ray's, from this thread) begin with `signals` blocked, as Ray
    does for SIGINT: a closed terminal or Ctrl-\\ then reaches this process, which stops the run
    gracefully, and not Ray's processes that the graceful stop still needs. A signal that arrives
    meanwhile waits and is handled when the block ends."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def hard_exit(signum: int, message: str = "", cleanups: tuple = ()) -> None:
    """Exit now, without unwinding (a signal can land anywhere, also inside Ray's start)."""
    for fn in cleanups:
        try:
            fn()
        except BaseException:  # noqa: BLE001 - exiting anyway
            pass
    if message:
        print(message, file=sys.stderr, flush=True)
    try:
        sys.stdout.flush()
    except Exception:  # noqa: BLE001
        pass
    os._exit(128 + signum)


def _exit_now(signum, frame):
    sys.stderr.flush()
    os._exit(128 + signum)


def quiet_exit_from_now() -> None:
    """The command is done (its outcome printed): a signal from here, also during the
    interpreter's exit, ends the process with 128 + its number and no traceback."""
    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, _exit_now)


class StopSignals:
    """The phase-aware handler of one run (see the module's docstring). `with` installs it;
    nested `with` blocks install it once. The runner marks the phases: `training()` once the
    engine is up (`reinstall()` does it too), `finishing()` once training is over (leaving a
    nested `with` that was entered in the training phase does it too)."""

    SIGNALS = SIGNALS

    def __init__(self):
        self.signum: Optional[int] = None        # the signal that stopped training
        self.late_signum: Optional[int] = None   # a signal after training ended
        self.on_abort: Optional[Callable[[int], None]] = None
        self.cleanups: list = []                 # run before any immediate exit
        self.phase = STARTING
        self._previous: dict = {}
        self._depth = 0
        self._timer: Optional[threading.Timer] = None
        self._guard: Optional[HandlerGuard] = None

    def __call__(self) -> bool:
        return self.signum is not None

    def training(self) -> None:
        self.phase = TRAINING
        self.reinstall()

    def finishing(self) -> None:
        self.phase = FINISHING

    def reinstall(self) -> None:
        """Take the handlers back (Ray has installed its own in the past; ray_setup keeps it
        from doing so now). The engine is up: from here a signal stops training gracefully."""
        if self.phase == STARTING:
            self.phase = TRAINING
        for s in self._previous:
            signal.signal(s, self._handler)

    def _handler(self, signum, frame):
        name = signal_name(signum)
        if self.phase == STARTING:
            hard_exit(signum, f"{name}: stopped before training started; nothing was written", self.cleanups)
        if self.signum is not None:   # a second signal after a graceful stop began
            if self.on_abort is not None:
                self.on_abort(signum)   # writes the summary, then exits; does not return
            hard_exit(signum, f"{name} again: stopped at once", self.cleanups)
        if self.late_signum is not None:
            hard_exit(signum, f"{name} again: stopped at once while Ray shut down", self.cleanups)
        if self.phase == FINISHING:
            # Training is over; only Ray's shutdown and the summary are left. Give them a few
            # seconds, then go whatever they are doing.
            self.late_signum = signum
            self._timer = threading.Timer(FINISH_GRACE_S, hard_exit, (
                signum, f"{name}: the run had ended; stopped at once while Ray shut down", self.cleanups))
            self._timer.daemon = True
            self._timer.start()
            return
        self.signum = signum
        print(f"\n{name}: stopping at the next round boundary, then checkpointing ({name} again: stop at once)",
              file=sys.stderr, flush=True)

    def __enter__(self):
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handler)
            self._guard = HandlerGuard(self.SIGNALS)
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth:
            if self.phase == TRAINING:   # the runner's training loop is the inner `with`
                self.finishing()
            return False
        if self._guard is not None:
            self._guard.stop()
            self._guard = None
        for s, previous in self._previous.items():
            # Once stopping, the outcome is on disk: a late second signal (while the summary is
            # printed, or at interpreter exit) just ends the process, without a traceback.
            stopping = self.signum is not None or self.late_signum is not None
            signal.signal(s, _exit_now if stopping else previous)
        self._previous = {}
        if self._timer is not None:
            self._timer.cancel()
        if self.late_signum is not None and exc[0] is None:
            raise Interrupted(self.late_signum, f"{signal_name(self.late_signum)}: the run had ended; its "
                                                f"summary is written; stopped while Ray shut down")
        return False
