"""What every benchmark's output carries: the machine, versions and load it ran under
(`metadata`), and its table printed and written beside its records (`report`). Each benchmark
renders its own records (its `markdown`); these are the parts they share.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

from bench import procs


def metadata() -> dict:
    from importlib.metadata import version

    def v(pkg):
        try:
            return version(pkg)
        except Exception:  # noqa: BLE001
            return "?"

    mem = 0.0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = float(line.split()[1]) / 1024 / 1024
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} CPU cores ({cpu}), {mem:.0f} GiB RAM, no GPU",
        "versions": f"Python {platform.python_version()}, torch {v('torch')}, ray {v('ray')}",
        "load_start": procs.load_avg(),
    }


def report(table: str, meta: dict, records: list[dict], output: str | None) -> None:
    """Print a benchmark's table; with `output`, write {"meta", "records"} to it as JSON and
    the table beside it (FILE.md)."""
    print()
    print(table)
    if output:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"meta": meta, "records": records}, indent=1) + "\n")
        out.with_suffix(".md").write_text(table)
