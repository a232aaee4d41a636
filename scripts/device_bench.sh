#!/usr/bin/env bash
# The issue-3 GPU measurements as one prepared command, for a session that is lent a device
# (none has been so far). The device image has jax, flax, optax, h5py and Pillow but no jaxopt,
# which travels as a wheel. Here, once:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl jaxopt==0.8.5
# then run(command="bash scripts/device_bench.sh", carry=[".whl"], timeout_s=560): about 6-8
# minutes including the compiles; results in $OUT/bench.{txt,json}. Arguments after the
# script's name are passed on to bench.py and override the ones below (last one wins).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-$(mktemp -d)}"
if command -v nvidia-smi > /dev/null; then nvidia-smi | tee "$out/gpu.txt"; fi
# Targets: 512 px evaluation <= 2 ms (H100); remat+bfloat16 <= 1.5 GB and <= half of float32
# at 512 px; sweep of 8 at 256 px >= 4x the throughput of 8 sequential runs.
timeout 540 python3 scripts/bench.py --sizes 256,512,1024 --repeats 20 --variant-size 512 \
  --memory-sizes 256,512,1024,2048 --memory-plan-sizes 4096 --e2e-size 512 \
  --e2e-iterations 100 --sweep-size 256 --sweep-batch 8 --sweep-iterations 50 \
  --sweep-timeout 240 --json "$out/bench.json" "$@" 2>&1 | tee "$out/bench.txt"
echo "results in $out"
