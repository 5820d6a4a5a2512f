#!/usr/bin/env bash
# Every CUDA-only path, run for real on a GPU machine in one go (each step capped; at most 560 s in all):
#   0. the environment (nvidia-smi, versions, TF32 switches, ONNX Runtime providers, NVML),
#   1. the CUDA-marked tests: fp16 / bf16 / channels-last / compile variants, torchao int8 / int4 / float8,
#      ONNX Runtime on the CUDA execution provider (provider asserted), NVML checks, step events on the
#      model's GPU, the baseline parked off the GPU while a variant lives,
#   2. the runtime and quantization paths side by side on tiny models (compile, fp16/bf16, torchao, ORT CUDA EP,
#      generation variants; benchmarks/faster_paths.py --quick),
#   3. the whole notebook pipeline on CUDA (--quick),
#   4. timer agreement (infopt's CUDA-event timer against torch.utils.benchmark, tiny resnet50),
#   5. device peaks and roofline (quick).
# Logs and results go to $OUT when it is set (the device runner collects it), else /tmp/gpu_check.
# Jupyter/papermill/plotly may be missing there: put their wheels in .whl/ (see README, "GPU check").
# Exit status: 0 when every step passed, 1 otherwise (each step's log says which).
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0
step() {  # step NAME SECONDS COMMAND...: run with a cap, log to $OUT/NAME.log, remember a failure
    local name=$1 seconds=$2
    shift 2
    echo "== $name (at most ${seconds} s)" | tee -a "$OUT/steps.txt"
    local started=$SECONDS
    timeout "$seconds" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 5 "$OUT/$name.log"
    echo "   $name: exit $rc after $((SECONDS - started)) s" | tee -a "$OUT/steps.txt"
    [ "$rc" -eq 0 ] || status=1
}

nvidia-smi --query-gpu=name,driver_version,memory.total,mig.mode.current,power.limit --format=csv \
    | tee "$OUT/nvidia-smi.txt"
step environment 30 python3 - <<'EOF'
import json, os
import torch
from infopt import env
record = env.collect()
print(json.dumps({key: record[key] for key in ("versions", "precision", "cuda_version", "gpus", "cuda_driver")},
                 indent=2))
try:
    import onnxruntime
    print("onnxruntime available providers:", onnxruntime.get_available_providers())
except Exception as error:  # noqa: BLE001
    print("onnxruntime not importable:", error)
from infopt.measure.interference import watch
with watch("cuda:0") as window:
    torch.ones(1, device="cuda").sum().item()
print("NVML:", window.result.gpu)
with open(os.path.join(os.environ["OUT"], "environment.json"), "w") as handle:
    json.dump(record, handle, indent=2, default=str)
EOF
step cuda_tests 150 python3 -m pytest -m cuda -q -p no:cacheprovider -rs tests
step faster_paths 100 python3 benchmarks/faster_paths.py --device cuda --quick --out "$OUT/faster_paths"
step quick_run 180 python3 run_notebooks.py --device cuda --quick --output /tmp/gpu_results --run-name gpu-quick
cp /tmp/gpu_results/gpu-quick/run.json "$OUT/run.json" 2>/dev/null
(cd /tmp/gpu_results && tar czf "$OUT/gpu_quick_results.tgz" gpu-quick) 2>/dev/null
step timer_agreement 50 python3 benchmarks/timer_agreement.py --device cuda --size tiny --batch-sizes 1 8 \
    --rounds 3 --min-run-time 1 --output "$OUT/timer_agreement.json"
step peaks_roofline 50 python3 benchmarks/peaks_roofline.py --device cuda --quick --output "$OUT/peaks_roofline"
echo "gpu_check: exit $status (logs in $OUT)" | tee -a "$OUT/steps.txt"
exit $status
