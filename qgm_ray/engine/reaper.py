"""A watchdog that ends the Ray processes a driver started, however the driver ends.

Ray's kernel fate-sharing (PR_SET_PDEATHSIG) takes down the processes the driver itself
spawned (GCS, raylet, dashboard) when it dies, but not what those spawned: the raylet's
DashboardAgent, RuntimeEnvAgent and workers notice their parent's death only by polling, so
they outlive a driver SIGKILL or a second Ctrl-C by many seconds (docs/results/processes).
Ray's own reaper needs the driver to become a process-group leader, which takes it out of the
shell's foreground group, where Ctrl-C does not reach it.

This process is started by the driver, in a session of its own (a Ctrl-C sent to the
terminal's process group does not reach it), with a pipe on stdin: the kernel closes the
pipe when the driver dies, by whatever means. Meanwhile it records, every POLL_S, the
driver's Ray children and everything below them; the driver also sends the Ray session
directory, which every Ray daemon of the session names in its command line. On EOF it sends
SIGTERM to all of those still alive (same pid *and* start time: a reused pid is left alone),
and SIGKILL after GRACE_S to what remains.

The driver also puts QGM_RAY_DRIVER=TAG into its environment before it starts Ray: every Ray
process inherits it, forks included, so one whose parent died first (and that went to init
before the last poll saw it) is still found.

Run as a script (`python reaper.py DRIVER_PID TAG`); it imports nothing from qgm_ray, so it starts
in tens of milliseconds.
"""
from __future__ import annotations

import os
import select
import signal
import sys
import time

POLL_S = 0.25
TAG_ENV = "QGM_RAY_DRIVER"
GRACE_S = 1.0


def _proc_table() -> dict:
    """pid -> (ppid, start time in clock ticks) for every process we can read."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()   # the command name may hold spaces
        table[int(name)] = (int(fields[1]), int(fields[19]))
    return table


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _tagged(pid: int, tag: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return tag in f.read().split(b"\0")
    except OSError:
        return False


def _is_ray(pid: int) -> bool:
    cmd = _cmdline(pid)
    return "/ray/" in cmd or "ray::" in cmd or "ray_" in cmd


def _below(roots: set, table: dict) -> set:
    """roots and every process descended from them."""
    children: dict = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.add(pid)
        todo.extend(children.get(pid, ()))
    return out


class Watch:
    def __init__(self, driver: int, tag: str = ""):
        self.driver = driver
        # TAG_ENV=tag is in the environment of every process the driver started after setting
        # it, forks included: found again when its parent died first and it went to init.
        self.tag = f"{TAG_ENV}={tag}".encode() if tag else b""
        self.session = None
        self.known: dict = {}     # pid -> start time: ours, to end with the driver
        self.checked: dict = {}   # pid -> start time: command line already looked at

    def _ours(self, pid: int, ppid: int) -> bool:
        """A Ray process the driver started, or one naming the driver's Ray session."""
        if ppid == self.driver and _is_ray(pid):
            return True
        return bool(self.session) and self.session in _cmdline(pid)

    def record(self) -> None:
        table = _proc_table()
        me = os.getpid()
        for pid, (ppid, start) in table.items():
            if pid in (me, self.driver) or pid in self.known:
                continue
            if self.checked.get(pid) == start and ppid != self.driver:
                continue   # read once per process; the driver's children again (caught before exec)
            self.checked[pid] = start
            if self._ours(pid, ppid):
                self.known[pid] = start
        roots = {pid for pid, start in self.known.items() if table.get(pid, (0, None))[1] == start}
        for pid in _below(roots, table) - {me, self.driver}:
            self.known.setdefault(pid, table[pid][1])

    def session_known(self, session: str) -> None:
        self.session = session
        self.checked.clear()   # look again at everything with the session's name in hand

    def find_tagged(self) -> None:
        if not self.tag:
            return
        me = os.getpid()
        for pid, (_, start) in _proc_table().items():
            if pid not in (me, self.driver) and pid not in self.known and _tagged(pid, self.tag):
                self.known[pid] = start

    def alive(self) -> list:
        table = _proc_table()
        return [pid for pid, start in self.known.items() if pid in table and table[pid][1] == start]

    def reap(self) -> int:
        self.record()
        self.find_tagged()
        targets = self.alive()
        for pid in targets:
            _kill(pid, signal.SIGTERM)
        deadline = time.time() + GRACE_S
        while time.time() < deadline:
            time.sleep(0.05)
            self.record()   # something forked meanwhile
            if not self.alive():
                return len(targets)
        for pid in self.alive():
            _kill(pid, signal.SIGKILL)
        return len(targets)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def main(argv: list) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # only the driver's death ends this process
    watch = Watch(int(argv[1]), argv[2] if len(argv) > 2 else "")
    buf = b""
    while True:
        ready, _, _ = select.select([0], [], [], POLL_S)
        if ready:
            data = os.read(0, 4096)
            if not data:
                break
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.startswith(b"session "):
                    watch.session_known(line[len(b"session "):].decode())
        watch.record()
    watch.reap()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
