"""The command the user started qgm-ray with, as usage lines and the messages that say what to
run next name it (`resume with: qgm-ray --resume DIR`): a checkout's `python main.py`, the
installed `qgm-ray` (pyproject.toml's console script) or `python -m qgm_ray`."""
from __future__ import annotations

import os
import sys

MAIN_PY = "python main.py"
CONSOLE_SCRIPT = "qgm-ray"
MODULE = "python -m qgm_ray"


def command() -> str:
    """Read from sys.argv[0]; anything else (the Python API, a Tune trial, a Ray worker) is
    told the checkout's form, which the README documents."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    name = os.path.basename(argv0)
    if name == CONSOLE_SCRIPT:
        return CONSOLE_SCRIPT
    if name == "__main__.py" and os.path.basename(os.path.dirname(argv0)) == "qgm_ray":
        return MODULE
    return MAIN_PY
