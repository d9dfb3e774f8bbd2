"""`python -m qgm_ray ...`: the same command line as `qgm-ray` and a checkout's `python main.py`."""
import sys

from qgm_ray.cli import main

if __name__ == "__main__":
    sys.exit(main())
