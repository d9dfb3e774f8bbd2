#!/usr/bin/env python
"""qgm-ray entry point: `python main.py [run|tune|report|bench|config] --help`.

The same command line as the installed `qgm-ray` (qgm_ray.cli.main), plus `bench`: the
harness lives in the checkout's bench/, outside the package."""
import sys

import bench
from qgm_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(bench=bench.command))
