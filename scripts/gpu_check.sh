#!/usr/bin/env bash
# The GPU check in one command: CUDA correctness tests, the MPL step against the baseline step, and the input
# pipelines against compute. Everything goes under $OUT (default: a new temp dir); a table is printed last.
#
#   make gpu-wheels                        # once, on a machine with the package index: fills .whl/ (~5 MB)
#   OUT=/path scripts/gpu_check.sh         # on the GPU machine (PyTorch, torchvision, TensorBoard, scikit-learn,
#                                          # matplotlib, pytest; no Hydra, OmegaConf, Optuna: carry .whl/ along)
#   scripts/gpu_check.sh --dry-run         # the same stages on the CPU at tiny sizes (or DEVICE=cpu)
#
# Stages (log of each: $OUT/<stage>.log; status and seconds: $OUT/stages.tsv):
#   setup       installs what the Python lacks from .whl/ (--target $SITE, /tmp/site), and the project there
#   cuda-tests  pytest -m cuda (tests/test_cuda.py, the CUDA cases of tests/test_batched_augment.py)
#   step        scripts/bench_cifar_step.py: baseline, fp32, bf16, bf16+cl, bf16+cl+compile, bf16+compile at
#               B = 128, mu = 7, WRN-28-2 -> $OUT/bench_cifar_step_cuda.json (also docs/ on a real run)
#   data        scripts/bench_cifar_data.py --device cuda: the device pipeline and 4, 8, 15 workers in views/s, then
#               the fastest step setting fed by each -> $OUT/bench_cifar_data_cuda.json (also docs/ on a real run)
# The dry run writes $OUT/bench_cifar_*_cpu_dry.json and nothing under docs/.
#
# Budget: the whole run must fit in 8 minutes on one H100. Each stage has a cap (the run_stage lines at the end:
# 45 + 150 + 150 + 125 s) and gets no more than what is left of BUDGET (470 s), so a hung stage cannot eat the rest.
# Estimate (not yet checked on a GPU), from the steps each stage runs and the cost of a step. One MPL step at
# B = 128, mu = 7 is 3.7 TFLOP (WRN-28-2 forward: 0.43 GFLOP an image, by torch.utils.flop_counter; teacher forward
# and backward on 1,920 images, student on 896, two no-grad forwards on 128); at an assumed 25-50 TFLOP/s reached
# (a small fraction of the H100's peak: small convolutions), an eager step takes 75-150 ms.
#   setup       ~15 s: pip from local wheels, one import of torch.
#   cuda-tests  ~110 s: 37 tests on WRN-10-1 at batch 8 + 16 + 16 (~1 s each, ~35 s), two of them torch.compile it
#               (~30 s each), three mpl-run processes (~12 s each: start-up, CUDA, 8 or ~100 tiny steps).
#   step        ~130 s: 4 eager rows (baseline, fp32, bf16, bf16+cl) x 23 steps x <= 0.15 s + cudnn autotuning
#               (~5 s a row); 2 compiled rows, ~45 s of compilation each (the student's graphs are the teacher's,
#               from the inductor cache); rows not started after 100 s are skipped (--time-budget 100).
#   data        ~80 s: the device pipeline and 3 worker pipelines x ~5 s (start-up + 5 batches of 1,920 views);
#               the fed step compiled once (~15 s from the cache the step stage filled, ~60 s without) and fed
#               5 x 23 steps (alone, device, 4, 8, 15 workers) at <= 0.2 s.
# Sum ~335 s, about 5.5 minutes; the caps bound it at 7.8 minutes. The dry run takes about 40 s on an idle 2-core
# CPU (60-130 s on a busy one): the same stages and rows at WRN-10-2, B = 2, mu = 1, one timed step a row, 2,000
# random images, the bf16 and compiled rows listed as skipped.

set -uo pipefail

if [[ "${1:-}" == "--dry-run" || "${DEVICE:-cuda}" == "cpu" ]]; then GPU_CHECK_DRY=1; fi
DRY=${GPU_CHECK_DRY:-0}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
if [[ "$PYTHON" == */* ]]; then PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"; fi
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
WHEELS=${WHEELS:-$REPO/.whl}
if (( DRY )); then SITE=${SITE:-$OUT/site}; else SITE=${SITE:-/tmp/site}; fi
BUDGET=${BUDGET:-470}
if [[ ":${PYTHONPATH:-}:" != *":$SITE:"* ]]; then export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"; fi
export PYTHONUNBUFFERED=1 GPU_CHECK_DRY=$DRY OUT PYTHON WHEELS SITE

if (( DRY )); then
    export CUDA_VISIBLE_DEVICES=""  # (the CPU, even on a machine with a GPU)
    TAG=cpu_dry
    STEP_ARGS=(--device cpu --depth 10 --batch 2 --mu 1 --steps 1 --warmup 0 --baseline-amp fp32 --methods mpl
               --settings baseline fp32 fp32+cl bf16 bf16+cl bf16+cl+compile bf16+compile
               --skip bf16 bf16+cl bf16+cl+compile bf16+compile --skip-reason "skipped on CPU dry run")
    DATA_ARGS=(--device cpu --depth 10 --batch 2 --mu 1 --steps 1 --workers 1 --no-e2e --fed-steps 1 --fed-warmup 1
               --train-images 2000)
else
    TAG=cuda
    STEP_ARGS=(--device cuda --batch 128 --mu 7 --steps 20 --warmup 3 --methods mpl --time-budget 100
               --settings baseline fp32 bf16 bf16+cl bf16+cl+compile bf16+compile)
    DATA_ARGS=(--device cuda --batch 128 --mu 7 --steps 5 --workers 4 8 15 --no-e2e --fed-steps 20 --fed-warmup 3)
fi
STEP_JSON=$OUT/bench_cifar_step_$TAG.json
DATA_JSON=$OUT/bench_cifar_data_$TAG.json

stage_setup() {
    # Wheels for what this Python lacks (or has older), of those that fit it; then the project, unless importable.
    mkdir -p "$SITE"
    local chosen
    chosen=$(cd "$OUT" && "$PYTHON" - "$WHEELS" <<'EOF'
import importlib.metadata as md
import sys
from pathlib import Path

try:
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename
    from packaging.version import Version
except ImportError:  # (pip's own copy)
    from pip._vendor.packaging.tags import sys_tags
    from pip._vendor.packaging.utils import parse_wheel_filename
    from pip._vendor.packaging.version import Version

supported = set(sys_tags())
for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    name, version, _, tags = parse_wheel_filename(wheel.name)
    if not tags & supported:
        continue
    try:
        if Version(md.version(name)) >= version:
            continue
    except md.PackageNotFoundError:
        pass
    print(wheel)
EOF
) || return 1
    if [[ -n "$chosen" ]]; then
        echo "installing into $SITE:"; echo "$chosen"
        # shellcheck disable=SC2086
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" $chosen || return 1
    elif [[ -d "$WHEELS" ]]; then
        echo "every wheel in $WHEELS is installed here already, or does not fit this Python"
    else
        echo "no $WHEELS (make gpu-wheels makes it): nothing to install from"
    fi
    if (cd "$OUT" && "$PYTHON" -c "import mpl_runner.conf" 2>/dev/null); then
        echo "mpl_runner is installed already"
    else  # (built from a copy, so that conf/ ships as mpl_runner.conf and the checkout gets no build/; setuptools
          # from .whl/ where this Python's is older)
        local src="$OUT/project-src"
        rm -rf "$src" && mkdir -p "$src"
        cp -r "$REPO"/{pyproject.toml,README.md,mpl_runner,conf,hydra_plugins} "$src"/
        "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade --target "$SITE" \
            "$src" || return 1
        rm -rf "$src"
    fi
    cd "$OUT" && "$PYTHON" - <<'EOF' || { echo "missing a package: are the wheels for this Python (make gpu-wheels \
GPU_PYTHON=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])'))?"; return 1; }
import platform, shutil, subprocess

import hydra, omegaconf, optuna, torch, torchvision
import mpl_runner.conf

print(f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"hydra {hydra.__version__}, omegaconf {omegaconf.__version__}, optuna {optuna.__version__}")
print(f"mpl_runner from {mpl_runner.conf.__path__}")
if torch.cuda.is_available():
    print(f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name(0)}, "
          f"bf16 {torch.cuda.is_bf16_supported()}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
else:
    print("no CUDA")
print(f"C compiler for torch.compile: {shutil.which('cc') or shutil.which('gcc') or 'none'}; "
      f"/dev/shm (data-loader workers): {shutil.disk_usage('/dev/shm').free / 2**20:,.0f} MiB free")
if shutil.which("nvidia-smi"):
    print(subprocess.run(["nvidia-smi"], capture_output=True, text=True).stdout)
EOF
}

stage_cuda_tests() {
    # From $OUT, so that the checkout's mpl_runner/ (no conf package) does not shadow the installed one.
    cd "$OUT" && "$PYTHON" -m pytest -c "$REPO/pyproject.toml" --rootdir "$REPO" -p no:cacheprovider -q -rs -m cuda \
        --junitxml "$OUT/cuda_tests.xml" "$REPO/tests/test_cuda.py" "$REPO/tests/test_batched_augment.py"
}

stage_step() {
    "$PYTHON" "$REPO/scripts/bench_cifar_step.py" "${STEP_ARGS[@]}" --out "$STEP_JSON"
}

stage_data() {
    local best
    best=$("$PYTHON" -c "import json, sys; print(json.load(open(sys.argv[1])).get('best') or '')" "$STEP_JSON" \
           2>/dev/null)
    best=${best:-$( (( DRY )) && echo fp32 || echo bf16+cl)}
    echo "fed step setting: $best"
    "$PYTHON" "$REPO/scripts/bench_cifar_data.py" "${DATA_ARGS[@]}" --fed-setting "$best" --out "$DATA_JSON"
}

if [[ "${1:-}" == "__stage" ]]; then  # (one stage, under timeout, from run_stage below)
    cd "$REPO" && "stage_${2//-/_}"
    exit $?
fi

FAILED=0
run_stage() {  # run_stage NAME CAP_SECONDS
    local name=$1 cap=$2 left timeout start rc status
    left=$(( BUDGET - SECONDS ))
    timeout=$(( cap < left ? cap : left ))
    if (( timeout < 10 )); then
        printf '%s\t%s\t%s\n' "$name" "skipped: budget spent" 0 >> "$OUT/stages.tsv"; FAILED=1; return
    fi
    echo "== $name (up to ${timeout} s; log: $OUT/$name.log)"
    start=$SECONDS
    timeout --kill-after=10 "$timeout" bash "${BASH_SOURCE[0]}" __stage "$name" > "$OUT/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124|137) status="timed out after ${timeout} s" ;;
        *) status="failed (exit $rc)" ;;
    esac
    printf '%s\t%s\t%s\n' "$name" "$status" $(( SECONDS - start )) >> "$OUT/stages.tsv"
    echo "   $status, $(( SECONDS - start )) s"
    if (( rc != 0 )); then FAILED=1; tail -n 25 "$OUT/$name.log" | sed 's/^/   | /'; fi
    return $rc
}

: > "$OUT/stages.tsv"
SECONDS=0
echo "gpu_check ($( (( DRY )) && echo "CPU dry run" || echo "CUDA")): OUT=$OUT"
if run_stage setup 45; then
    run_stage cuda-tests 150
    run_stage step 150
    run_stage data 125
fi
if (( ! DRY )); then  # the benchmark records land in docs/ too (a dry run leaves docs/ alone)
    for json in "$STEP_JSON" "$DATA_JSON"; do [[ -f "$json" ]] && cp "$json" "$REPO/docs/"; done
fi
echo
"$PYTHON" "$REPO/scripts/gpu_check_table.py" "$OUT" "$STEP_JSON" "$DATA_JSON"
exit $FAILED
