#!/usr/bin/env python
"""qgm-ray entry point: `python main.py [run|tune|report|bench] --help`."""
import sys

import bench
from qgm_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(bench=bench.command))
