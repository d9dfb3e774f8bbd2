"""Process memory from /proc (Linux): peak RSS (VmHWM), proportional set size, process trees.

Peak RSS is what the records report (`peak_rss_mb`: the sum over
the backend's processes of each one's high-water mark). It counts shared pages (torch's
libraries, the Ray object store) once per process, so it overstates what n processes
really cost together; `pss_mb` (proportional set size, shared pages split between their
users) sampled after the measured rounds is the honest footprint and is recorded next to it.
"""
from __future__ import annotations

import os


def _status(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                out[key] = rest.strip()
    except OSError:
        pass
    return out


def _kb(value: str | None) -> float:
    return float(value.split()[0]) if value else 0.0


def peak_rss_mb(pid: int) -> float:
    return _kb(_status(pid).get("VmHWM")) / 1024


def rss_mb(pid: int) -> float:
    return _kb(_status(pid).get("VmRSS")) / 1024


def pss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return _kb(line.split(":", 1)[1]) / 1024
    except OSError:
        pass
    return 0.0


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        ppid = _status(int(name)).get("PPid")
        if ppid is not None:
            kids.setdefault(int(ppid), []).append(int(name))
    return kids


def descendants(pid: int) -> list[int]:
    kids = children_map()
    out, stack = [], [pid]
    while stack:
        for c in kids.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


def summary(pids: list[int]) -> dict:
    pids = [p for p in pids if os.path.exists(f"/proc/{p}")]
    return {"peak_rss_mb": round(sum(peak_rss_mb(p) for p in pids), 1),
            "pss_mb": round(sum(pss_mb(p) for p in pids), 1),
            "processes": len(pids)}


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def mem_available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return _kb(line.split(":", 1)[1]) / 1024
    return 0.0


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time consumed so far by these processes (all their threads)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
        except (OSError, IndexError, ValueError):
            pass
    return total / _TICK
