#!/usr/bin/env bash
# The asynchronous study (README.md here): 18 synchronous and 18 asynchronous trials of the
# default workload, each a few minutes on one core; then each sweep's report (table.md: final
# accuracy and simulated time to the target, figures). Run it on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/../../.."
here=docs/results/async
for sweep in sync async; do
  python main.py tune --config "$here/$sweep.yaml" --output-dir "$here/$sweep"
  python main.py report "$here/$sweep"
done
