#!/usr/bin/env bash
# Prepares, on this machine (which reaches the package index), what benchmarks/gpu_check.sh needs on the
# device machine, which reaches nothing: the wheels its image lacks, in .whl/, and a copy of CIFAR-10 in
# .device/cifar10 (both ignored by git; both travel with `carry: [".whl", ".device"]`).
#
#   bash benchmarks/gpu_wheels.sh            # PYTHON picks the pip here (default .venv/bin/python)
#
# The device's python3 (3.12, /opt/torch/.venv; /work/.library/device/KINDS.md) has torch 2.11,
# transformers 5.17, accelerate 1.15, huggingface_hub 1.33, tokenizers 0.23.2, xxhash, pandas, pyarrow,
# requests, but not `datasets` or `evaluate`. Carried (pure-Python wheels, one version each):
#   transformers 5.24.0  the version vit_hf is checked against; needs huggingface-hub>=1.31 (1.33 there),
#                        tokenizers>=0.23.1,<0.24 (0.23.2 there), regex>=2025.10.22 (5.17 there needs the same)
#   datasets 5.2.0       + dill<0.4.2 and multiprocess<0.70.20 (absent there)
#   evaluate 0.4.6       (its needs are datasets' own)
#   fsspec 2026.9.0      datasets 5.2 caps fsspec at <=2026.9.0, the version it is checked with here; the
#                        image's fsspec version is not recorded, so the checked one travels
# The dataset copy: the test shard and as many train shards of ../shared/datasets/cifar10 as keep the
# whole transfer (repo + .whl + .device) under the device call's 64 MiB, with MARGIN_MIB to spare.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CIFAR_SRC=${CIFAR_SRC:-../shared/datasets/cifar10}
LIMIT_BYTES=$((64 * 1024 * 1024))
MARGIN_MIB=${MARGIN_MIB:-2}   # for files the repo gains before the device call (logs, new sources)

WHEELS=(
  transformers==5.24.0
  datasets==5.2.0
  dill==0.4.1
  multiprocess==0.70.19
  evaluate==0.4.6
  fsspec==2026.9.0
)

rm -rf .whl
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}" 2>&1 \
  | { grep -v "^WARNING: Location" || true; }

# One version of each distribution: two stop the whole install there.
dupes=$(ls .whl/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)
[ -z "$dupes" ] || { echo "error: several versions of: $dupes" >&2; exit 1; }

echo "wheels in .whl/ and what each requires (the device must hold the rest):"
for wheel in .whl/*.whl; do
  echo "  $(basename "$wheel")"
  { unzip -p "$wheel" '*.dist-info/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' || true; } \
    | sed 's/^Requires-Dist: /      /'
done

# What travels besides .device: the repo's tracked and untracked-not-ignored files, and the wheels.
repo_bytes=$(git ls-files -co --exclude-standard -z | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
wheel_bytes=$(du -cb .whl | tail -1 | cut -f1)
room=$((LIMIT_BYTES - MARGIN_MIB * 1024 * 1024 - repo_bytes - wheel_bytes))

rm -rf .device/cifar10
mkdir -p .device/cifar10/plain_text
cp "$CIFAR_SRC/README.md" .device/cifar10/
cp "$CIFAR_SRC"/plain_text/test-*.parquet .device/cifar10/plain_text/
used=$(du -cb .device/cifar10 | tail -1 | cut -f1)
shards=0
for shard in "$CIFAR_SRC"/plain_text/train-*.parquet; do
  size=$(stat -c %s "$shard")
  if [ $((used + size)) -le "$room" ]; then
    cp "$shard" .device/cifar10/plain_text/
    used=$((used + size))
    shards=$((shards + 1))
  fi
done
chmod -R u+w .device/cifar10
[ "$shards" -gt 0 ] || { echo "error: no train shard of CIFAR-10 fits in what travels" >&2; exit 1; }

# load_dataset reads the copy as the Hub's layout (the README's configs name the files by pattern); in a
# fresh cache, so that what is counted is this copy and not a cached load of another.
check_cache=$(mktemp -d)
HF_DATASETS_CACHE=$check_cache HF_DATASETS_OFFLINE=1 "$PY" - <<'PYEOF'
from datasets import load_dataset

ds = load_dataset(".device/cifar10")
print(f".device/cifar10: train {len(ds['train'])}, test {len(ds['test'])} images; columns {ds['train'].column_names}")
PYEOF
rm -rf "$check_cache"

device_bytes=$(du -cb .device | tail -1 | cut -f1)
total=$((repo_bytes + wheel_bytes + device_bytes))
awk -v r="$repo_bytes" -v w="$wheel_bytes" -v d="$device_bytes" -v t="$total" -v s="$shards" -v l="$LIMIT_BYTES" 'BEGIN {
  m = 1024 * 1024
  printf "cifar10 copy: %d of 8 train shards + the test shard\n", s
  printf "travels: repo %.1f MiB + .whl %.1f MiB + .device %.1f MiB = %.1f MiB of %.0f MiB\n", r/m, w/m, d/m, t/m, l/m
}'
