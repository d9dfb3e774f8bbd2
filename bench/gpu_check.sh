#!/usr/bin/env bash
# The checks that need a GPU machine (H100/H200, no package index, no Ray), for whoever is
# lent one: ~8 minutes. Everything it produces goes under $OUT.
#
# Here first (package access), from the project root:
#   bash ../shared/offline-gpu/wheelhouse.sh && cp ../shared/offline-gpu/install.py .whl/
# then through the device tool, carrying .whl:
#   run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=600)
#
# Steps (each bounded by `timeout`, each writing its log; a failing step does not stop the next):
#   1. install Ray from .whl/ into /tmp/site (../shared/offline-gpu/README.md)
#   2. the GPU tests (tests/test_gpu.py, incl. 1024 ResNet-20 clients in vmap chunks, the memory
#      probe and vmapped local-model evaluation) on the GPU machine's torch (CI runs the rest)
#   3. python main.py bench --device cuda --quick        -> $OUT/gpu_bench.{json,md}
#   4. the default `python main.py` with the clients on the GPU (Ray, its own local Ray), and
#      the same on the local engine: wall times and final accuracies side by side
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
PY=${PY:-python3}
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
  git log --oneline -1 2>/dev/null
} > "$OUT/machine.txt" 2>&1

if [ -f .whl/install.py ]; then
  timeout 60 $PY .whl/install.py > "$OUT/install.log" 2>&1 || echo "install failed: see install.log" >> "$OUT/machine.txt"
  export PYTHONPATH=/tmp/site:$PWD
else
  echo "no .whl/install.py: assuming Ray is importable" >> "$OUT/machine.txt"
  export PYTHONPATH=$PWD
fi
unset RAY_ADDRESS   # tests and runs below start their own local Ray (no dashboard packages: main.py falls back)

step() {  # step NAME SECONDS CMD...: run with a timeout, log to $OUT/NAME.log, record rc and seconds
  local name=$1 secs=$2; shift 2
  local t0=$(date +%s)
  timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc seconds=$(( $(date +%s) - t0 ))" | tee -a "$OUT/steps.txt"
}

step gpu_tests 240 $PY -m pytest -q -p no:cacheprovider -s tests/test_gpu.py -x
step gpu_bench 200 $PY main.py bench --device cuda --quick --output "$OUT/gpu_bench.json"
step default_ray_cuda 80 $PY main.py --quiet --set device=cuda --output-dir "$OUT/default_ray_cuda"
step default_local_cuda 80 $PY main.py --quiet --set device=cuda --set backend=local --output-dir "$OUT/default_local_cuda"
for d in default_ray_cuda default_local_cuda; do
  [ -f "$OUT/$d/summary.json" ] && $PY -c "import json,sys; s=json.load(open(sys.argv[1])); print(sys.argv[2], s.get('status'), s.get('final_test_accuracy'), s.get('wall_seconds'))" "$OUT/$d/summary.json" "$d" >> "$OUT/steps.txt"
  rm -rf "$OUT/$d/checkpoints"   # keep what comes back small
done
cat "$OUT/steps.txt"
