#!/usr/bin/env bash
# The prepared device check: one command that, on one H200, tests and measures vit_hf in <= 8 minutes.
#
#   bash benchmarks/gpu_check.sh          # on the device machine (run by the device tool; see below)
#   bash benchmarks/gpu_check.sh --cpu    # or GPU_CHECK_CPU=1: the same steps, tiny, on a CPU (< 1 minute);
#                                         # tests/e2e/test_gpu_check.py runs it, so this script cannot rot
#
# Steps, in order, each with its own time limit, none stopping the others:
#   wheels       on the device only: installs the wheels that benchmarks/gpu_wheels.sh put in .whl/ (the
#                device image has no `datasets`/`evaluate`, and transformers 5.17), into /tmp/site
#   env          nvidia-smi, python and the versions it runs with (transformers must be the carried 5.24.0)
#   tests        pytest -m gpu tests/e2e/test_gpu.py (in parallel with pytest-xdist when it is installed)
#   throughput   benchmarks/train_throughput.py --bf16, eager, then compiled when the script has --compile
#   overhead     benchmarks/step_overhead.py, when it exists
#   cifar10      python -m vit_hf.run recipes/cifar10_tiny.yaml on .device/cifar10 (gpu_wheels.sh copies it;
#                generated images when it is absent), --budget.time 4m; then python -m vit_hf.report
#   summary      every number in summary.json, and a table on stdout
#
# Every log and number goes to one folder: $OUT when set (the device tool brings it back: at most 8 files),
# else ./gpu_check_out. Files: env.txt tests.log throughput.log step_overhead.log cifar10.log report.txt
# summary.json curves.png. Training outputs go to $GPU_CHECK_WORK (default: a new folder under /tmp).
# Exit code: the number of steps that failed (0: all passed).
#
# Time: the whole script ends within GPU_CHECK_SECONDS (device: 470). The cifar10 run gets --budget.time
# GPU_CHECK_CIFAR_BUDGET (240 s), or what is left if the earlier steps ran long, never under
# GPU_CHECK_CIFAR_MIN (180 s): each earlier step's time limit stops short of that reserve.
# Other knobs (environment):
# GPU_CHECK_XDIST (pytest -n, device: 10), PYTEST_ARGS, THROUGHPUT_ARGS, STEP_OVERHEAD_ARGS, PYTHON.
#
# The device call (from this machine's session, after `bash benchmarks/gpu_wheels.sh`):
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl", ".device"], timeout_s=560)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CPU_MODE=${GPU_CHECK_CPU:-0}
for arg in "$@"; do
  case $arg in
    --cpu) CPU_MODE=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: bash benchmarks/gpu_check.sh [--cpu]" >&2; exit 2 ;;
  esac
done

OUTDIR=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=${GPU_CHECK_WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=$ROOT/.venv/bin/python
else PY=python3
fi

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 MPLBACKEND=Agg

if [ "$CPU_MODE" = 1 ]; then
  # One thread: the tiny steps gain nothing from two, and on a shared 2-core machine OpenMP's spinning
  # threads made them 5x slower (25 s instead of 5 s for train_throughput.py).
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  TOTAL=${GPU_CHECK_SECONDS:-120}
  CIFAR_BUDGET=${GPU_CHECK_CIFAR_BUDGET:-10}
  CIFAR_MIN=${GPU_CHECK_CIFAR_MIN:-10}
  XDIST=${GPU_CHECK_XDIST:-0}
  THROUGHPUT_ARGS=${THROUGHPUT_ARGS:---steps 2 --warmup 1 --batch 8 --model cpu}
  CIFAR_ARGS=(--model.hidden_size 32 --model.num_hidden_layers 2 --model.num_attention_heads 2
              --model.intermediate_size 64 --training.per_device_train_batch_size 32
              --training.per_device_eval_batch_size 64 --training.logging_steps 2 --training.eval_strategy '"no"'
              --training.dataloader_num_workers 0)
else
  TOTAL=${GPU_CHECK_SECONDS:-470}
  CIFAR_BUDGET=${GPU_CHECK_CIFAR_BUDGET:-240}
  CIFAR_MIN=${GPU_CHECK_CIFAR_MIN:-180}
  XDIST=${GPU_CHECK_XDIST:-10}
  THROUGHPUT_ARGS=${THROUGHPUT_ARGS:---steps 100 --warmup 10 --bf16}
  CIFAR_ARGS=()
fi
CIFAR_RESERVE=$((CIFAR_MIN + 25))  # the cifar10 run (its budget covers the whole process), report, summary

declare -A STATUS SECS
ORDER=()
FAILED=0

say() { echo "[gpu_check $(printf '%3d' "$SECONDS")s] $*"; }

# Seconds a step before the cifar10 run may take: at most $1, and never into the run's reserve.
limit_before_cifar() {
  local left=$((TOTAL - SECONDS - CIFAR_RESERVE))
  [ "$left" -lt "$1" ] && echo "$left" || echo "$1"
}

# run_step NAME LIMIT_SECONDS LOGFILE COMMAND...: runs it under `timeout`, appends its output to LOGFILE.
run_step() {
  local name=$1 limit=$2 logfile=$3
  shift 3
  ORDER+=("$name")
  if [ "$limit" -lt 10 ]; then
    say "$name: skipped, ${limit}s left before the cifar10 run's reserve" | tee -a "$logfile"
    STATUS[$name]=skipped SECS[$name]=0
    return
  fi
  say "$name: $* (limit ${limit}s)"
  echo "==> $name: $*" >>"$logfile"
  local started=$SECONDS
  timeout --kill-after=15 "$limit" "$@" >>"$logfile" 2>&1
  local code=$?
  SECS[$name]=$((SECONDS - started))
  if [ "$code" = 0 ]; then
    STATUS[$name]=ok
  else
    STATUS[$name]="failed (exit $code$([ "$code" = 124 ] && echo ', time limit'))"
    FAILED=$((FAILED + 1))
    tail -n 30 "$logfile" | sed "s/^/  [$name] /"
  fi
  say "$name: ${STATUS[$name]} in ${SECS[$name]}s"
}

note() {  # note NAME WHY LOGFILE: a step that did not run, and why
  ORDER+=("$1")
  STATUS[$1]="skipped: $2" SECS[$1]=0
  say "$1: skipped: $2" | tee -a "$3"
}

# 1. Wheels -------------------------------------------------------------------------------------------
# The device image lacks datasets/evaluate and has transformers 5.17: install what gpu_wheels.sh carried,
# exactly as /work/.library/device/README.md says. Here (datasets imports, or --cpu) nothing is installed.
needs_wheels() {
  "$PY" - <<'EOF' 2>/dev/null
import importlib.metadata as md
import datasets, evaluate  # noqa: F401
assert md.version("transformers") == "5.24.0"
EOF
  [ $? != 0 ]
}
if [ "$CPU_MODE" != 1 ] && ls .whl/*.whl >/dev/null 2>&1 && needs_wheels; then
  ORDER+=(wheels)
  say "wheels: installing $(ls .whl/*.whl | wc -l) carried wheels into /tmp/site"
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl >"$WORK/wheels.log" 2>&1; then
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    STATUS[wheels]=ok SECS[wheels]=$SECONDS
  else
    STATUS[wheels]="failed" SECS[wheels]=$SECONDS
    FAILED=$((FAILED + 1))
    cat "$WORK/wheels.log"
  fi
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

# 2. What it runs with ----------------------------------------------------------------------------------
{
  echo "date: $(date -u +%FT%TZ)   mode: $([ "$CPU_MODE" = 1 ] && echo cpu || echo device)   host: $(hostname)"
  echo "cpu: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "memory: $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB"}')"
  if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not on this machine"; fi
  "$PY" - <<'EOF'
import importlib.metadata as md
import platform
import sys

print(f"python {platform.python_version()} at {sys.executable}")
for name in ("torch", "transformers", "accelerate", "datasets", "evaluate", "huggingface_hub", "tokenizers",
             "safetensors", "pyarrow", "fsspec", "dill", "multiprocess", "numpy", "pillow", "matplotlib",
             "tensorboard", "nvidia-ml-py", "pytest", "pytest-xdist", "timm", "torchvision"):
    try:
        version = md.version(name)
    except md.PackageNotFoundError:
        version = "absent"
    print(f"  {name:16s} {version}")
import datasets
import torch
import transformers

print(f"transformers from {transformers.__file__}")
print(f"datasets from {datasets.__file__}")
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print(f"cuda: {torch.version.cuda}, {torch.cuda.get_device_name(0)}, capability {props.major}.{props.minor}, "
          f"{props.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}")
else:
    print(f"cuda: not available (torch {torch.__version__}, {torch.get_num_threads()} threads)")
if transformers.__version__ != "5.24.0":
    print(f"WARNING: transformers {transformers.__version__}, not the 5.24.0 vit_hf is checked against")
    sys.exit(3)
EOF
} >"$OUTDIR/env.txt" 2>&1
env_code=$?
ORDER+=(env)
SECS[env]=0
if [ "$env_code" = 0 ]; then STATUS[env]=ok; else STATUS[env]="failed (exit $env_code)"; FAILED=$((FAILED + 1)); fi
cat "$OUTDIR/env.txt"

# Data for the measured runs: the CIFAR-10 copy, or generated images in its layout.
if [ "$CPU_MODE" != 1 ] && [ -d .device/cifar10 ]; then
  DATA=$ROOT/.device/cifar10
else
  DATA=$WORK/cifar_like
  per_class=$([ "$CPU_MODE" = 1 ] && echo 32 || echo 1000)
  "$PY" -c "from tests.helpers.datagen import make_parquet_dataset as m; m('$DATA', folder='plain_text', shards=2, \
image_column='img', per_class=$per_class, size=32)" || { echo "error: could not generate data" >&2; exit 1; }
fi
say "data for the measured runs: $DATA"

# 3. The GPU tier -----------------------------------------------------------------------------------------
pytest_parallel=()
if [ "$XDIST" -gt 0 ] 2>/dev/null && "$PY" -c "import xdist" 2>/dev/null; then pytest_parallel=(-n "$XDIST"); fi
run_step tests "$(limit_before_cifar 180)" "$OUTDIR/tests.log" env OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" \
  "$PY" -m pytest -m gpu tests/e2e/test_gpu.py -q -rfEs --durations=12 -p no:cacheprovider \
  "${pytest_parallel[@]}" ${PYTEST_ARGS:-}

# 4. Training throughput, eager and compiled ---------------------------------------------------------------
# shellcheck disable=SC2206
throughput=("$PY" benchmarks/train_throughput.py --dataset "$DATA" $THROUGHPUT_ARGS)
run_step throughput_eager "$(limit_before_cifar 60)" "$OUTDIR/throughput.log" "${throughput[@]}"
if [ "$CPU_MODE" = 1 ]; then
  note throughput_compiled "CPU mode (a compile takes minutes on 2 cores)" "$OUTDIR/throughput.log"
elif grep -q -- '"--compile"' benchmarks/train_throughput.py; then
  run_step throughput_compiled "$(limit_before_cifar 120)" "$OUTDIR/throughput.log" "${throughput[@]}" --compile
else
  note throughput_compiled "benchmarks/train_throughput.py has no --compile flag" "$OUTDIR/throughput.log"
fi

# 5. Per-step host overhead ---------------------------------------------------------------------------------
if [ -f benchmarks/step_overhead.py ]; then
  if [ -n "${STEP_OVERHEAD_ARGS:-}" ]; then read -r -a given <<<"$STEP_OVERHEAD_ARGS"
  elif [ "$CPU_MODE" = 1 ]; then given=(--only b --steps 2 --warmup 1 --repeats 1)  # the plain Trainer alone: ~12 s
  else given=(--quick)
  fi
  overhead_args=()
  for ((i = 0; i < ${#given[@]}; i++)); do  # only the flags the script (still being written) knows
    token=${given[$i]}
    if [[ $token == --* ]] && ! grep -q -- "\"$token\"" benchmarks/step_overhead.py; then
      [[ ${given[$((i + 1))]:-} != --* ]] && i=$((i + 1))
      continue
    fi
    overhead_args+=("$token")
  done
  run_step overhead "$(limit_before_cifar 90)" "$OUTDIR/step_overhead.log" \
    "$PY" benchmarks/step_overhead.py "${overhead_args[@]}"
else
  note overhead "benchmarks/step_overhead.py does not exist" "$OUTDIR/step_overhead.log"
fi

# 6. cifar10_tiny on a budget ------------------------------------------------------------------------------
budget=$((TOTAL - SECONDS - 25))  # what is left, less the report and summary
[ "$budget" -gt "$CIFAR_BUDGET" ] && budget=$CIFAR_BUDGET
[ "$budget" -lt 10 ] && budget=10
RUN_DIR=$WORK/cifar10_tiny
run_step cifar10 $((budget + 60)) "$OUTDIR/cifar10.log" "$PY" -m vit_hf.run recipes/cifar10_tiny.yaml \
  --data.dataset "$DATA" --budget.time "${budget}s" --training.output_dir "$RUN_DIR" --resume never \
  "${CIFAR_ARGS[@]}"
"$PY" -m vit_hf.report "$RUN_DIR" >"$OUTDIR/report.txt" 2>&1 || echo "(vit_hf.report failed)" >>"$OUTDIR/report.txt"
[ -f "$RUN_DIR/curves.png" ] && cp "$RUN_DIR/curves.png" "$OUTDIR/"

# 7. Summary ---------------------------------------------------------------------------------------------
steps_json=$(for name in "${ORDER[@]}"; do printf '%s\t%s\t%s\n' "$name" "${STATUS[$name]}" "${SECS[$name]}"; done)
STEPS="$steps_json" MODE=$([ "$CPU_MODE" = 1 ] && echo cpu || echo device) BUDGET=$budget \
  "$PY" - "$OUTDIR" "$RUN_DIR" <<'EOF'
import json
import math
import os
import re
import statistics
import sys
from pathlib import Path

out, run = Path(sys.argv[1]), Path(sys.argv[2])


def read(name: str) -> str:
    path = out / name
    return path.read_text(errors="replace") if path.is_file() else ""


def numbers(text: str, pattern: str) -> list[float]:
    return [float(m) for m in re.findall(pattern, text)]


summary = {"mode": os.environ["MODE"], "steps": {}}
for line in os.environ["STEPS"].splitlines():
    name, status, seconds = line.split("\t")
    summary["steps"][name] = {"status": status, "seconds": int(seconds or 0)}

env = read("env.txt")
summary["versions"] = dict(re.findall(r"^  (\S+) +(\S+)$", env, re.M))
summary["device"] = next(iter(re.findall(r"^cuda: (.*)$", env, re.M)), None)

tests = read("tests.log")
counts = re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", tests.splitlines()[-1] if tests else "")
summary["tests"] = {kind: int(n) for n, kind in counts}

sections = dict(re.findall(r"^==> (\S+): .*?\n(.*?)(?=^==> |\Z)", read("throughput.log"), re.M | re.S))
for label in ("eager", "compiled"):
    if f"throughput_{label}" not in sections:
        continue
    text = sections[f"throughput_{label}"]
    end_to_end = numbers(text, r"end to end.*?:\s+([\d.]+) img/s")
    bound = numbers(text, r"model only.*?:\s+([\d.]+) img/s")
    efficiency = numbers(text, r"data_efficiency: ([\d.]+)")
    summary[f"throughput_{label}"] = {
        "images_per_second": end_to_end[-1] if end_to_end else None,
        "model_only_images_per_second": bound[-1] if bound else None,
        "data_efficiency": efficiency[-1] if efficiency else None,
    }

overhead = numbers(read("step_overhead.log"), r"overhead_vs_trainer_ms: (-?[\d.]+)")
summary["step_overhead_vs_trainer_ms"] = overhead[-1] if overhead else None

cifar = {"budget_seconds": int(os.environ["BUDGET"])}
state_file, results_file = run / "trainer_state.json", run / "eval_results.json"
if state_file.is_file():
    state = json.loads(state_file.read_text())
    history = state.get("log_history", [])

    def values(key):
        return [e[key] for e in history if isinstance(e.get(key), (int, float)) and math.isfinite(e[key])]

    def median(key):
        found = values(key)
        return statistics.median(found) if found else None

    def mean(key):
        found = values(key)
        return sum(found) / len(found) if found else None

    cifar |= {
        "global_step": state.get("global_step"),
        "epoch": state.get("epoch"),
        "images_per_second": median("images_per_second"),
        "data_wait_fraction": median("data_wait_fraction"),
        "gpu_utilization": mean("gpu_utilization"),
        "gpu_max_memory_allocated_gb": max(values("gpu_max_memory_allocated_gb"), default=None),
        "elapsed_seconds": (values("elapsed_seconds") or [None])[-1],
    }
if results_file.is_file():
    results = json.loads(results_file.read_text())
    cifar |= {"eval_accuracy": results.get("eval_accuracy"), "eval_top5_accuracy": results.get("eval_top5_accuracy")}
summary["cifar10"] = cifar

(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def show(value) -> str:
    if value is None:
        return "-"
    return f"{value:,.4g}" if isinstance(value, float) else str(value)


print("\n== summary (summary.json) ==")
for name, step in summary["steps"].items():
    print(f"  step {name:20s} {step['status']} ({step['seconds']} s)")
print(f"  device: {summary['device']}")
print(f"  versions: " + ", ".join(f"{k} {summary['versions'].get(k, '?')}" for k in
                                    ("torch", "transformers", "accelerate", "datasets")))
print(f"  tests: {summary['tests']}")
for label in ("eager", "compiled"):
    t = summary.get(f"throughput_{label}")
    if t:
        print(f"  train_throughput {label}: {show(t['images_per_second'])} img/s end to end, "
              f"{show(t['model_only_images_per_second'])} model only, data_efficiency {show(t['data_efficiency'])}")
print(f"  step_overhead: {show(summary['step_overhead_vs_trainer_ms'])} ms/step vs the plain Trainer")
c = summary["cifar10"]
print(f"  cifar10_tiny ({c['budget_seconds']} s budget): images/s {show(c.get('images_per_second'))}, "
      f"data_wait_fraction {show(c.get('data_wait_fraction'))}, gpu_utilization {show(c.get('gpu_utilization'))}, "
      f"eval_accuracy {show(c.get('eval_accuracy'))}, steps {show(c.get('global_step'))}, "
      f"epochs {show(c.get('epoch'))}")
EOF
[ $? = 0 ] || FAILED=$((FAILED + 1))
cat "$OUTDIR/report.txt"
say "done: $FAILED failed step(s); logs and numbers in $OUTDIR"
exit "$FAILED"
