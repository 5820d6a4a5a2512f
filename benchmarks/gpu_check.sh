#!/usr/bin/env bash
# The CUDA path, run for real on a GPU machine in one go (about 5 minutes on an H100/H200):
#   1. the CUDA-marked tests, 2. the whole notebook pipeline on CUDA (--quick),
#   3. full-size figures: timer agreement and device peaks / roofline.
# Jupyter/papermill/plotly may be missing there: put their wheels in .whl/ (see README, "GPU check").
# Logs and the run manifest go to $OUT (or /tmp/gpu_check).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/nvidia-smi.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

status=0
timeout 150 python3 -m pytest -m cuda -q -p no:cacheprovider 2>&1 | tee "$OUT/cuda_tests.log" || status=1
timeout 240 python3 run_notebooks.py --device cuda --quick --output /tmp/gpu_results --run-name gpu-quick 2>&1 \
    | tee "$OUT/quick_run.log" || status=1
cp /tmp/gpu_results/gpu-quick/run.json "$OUT/run.json" 2>/dev/null
(cd /tmp/gpu_results && tar czf "$OUT/gpu_quick_results.tgz" gpu-quick) 2>/dev/null
timeout 90 python3 benchmarks/peaks_roofline.py --device cuda 2>&1 | tee "$OUT/peaks_roofline.log" || status=1
exit $status
