"""Sample the memory of a process tree while it runs: `python -m bench.memwatch PID [OUT.json]`.

Records the peak over time of the tree's total RSS and PSS (the sum at one instant, which is
what the machine must hold), the per-process high-water marks at the end, and per-role
PSS (driver, ClientActor, Coordinator, Ray system) at the moment of peak PSS.
"""
from __future__ import annotations

import json
import sys
import time

from bench import procs


def role(pid: int, root: int) -> str:
    if pid == root:
        return "driver"
    cmd = procs.cmdline(pid)
    if cmd.startswith("ray::") and not cmd.startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent")):
        return cmd.split()[0]
    return "system"


def watch(root: int, every: float = 1.0) -> dict:
    best = {"pss_mb": 0.0, "rss_mb": 0.0}
    hwm: dict[int, float] = {}
    while procs._status(root):
        pids = [root] + procs.descendants(root)
        pss = {p: procs.pss_mb(p) for p in pids}
        rss = sum(procs.rss_mb(p) for p in pids)
        for p in pids:
            hwm[p] = max(hwm.get(p, 0.0), procs.peak_rss_mb(p))
        total = sum(pss.values())
        if total > best["pss_mb"]:
            by_role: dict = {}
            for p, v in pss.items():
                r = role(p, root)
                by_role.setdefault(r, {"processes": 0, "pss_mb": 0.0})
                by_role[r]["processes"] += 1
                by_role[r]["pss_mb"] = round(by_role[r]["pss_mb"] + v, 1)
            best = {"pss_mb": round(total, 1), "rss_mb": round(rss, 1), "at": time.time(), "by_role": by_role}
        best["rss_mb"] = max(best["rss_mb"], round(rss, 1))
        time.sleep(every)
    best["sum_of_peak_rss_mb"] = round(sum(hwm.values()), 1)
    return best


if __name__ == "__main__":
    out = watch(int(sys.argv[1]))
    text = json.dumps(out, indent=1)
    if len(sys.argv) > 2:
        open(sys.argv[2], "w").write(text + "\n")
    print(text)
