#!/usr/bin/env bash
# The prepared GPU check of issue #16, one command on a GPU machine (about 4 minutes on an H100):
# the CUDA tests, the vectorised-training tests, then benchmarks/many_models.py on the GPU: throughput
# with and without CUDA graph replays, and one Frankle & Carbin training timed on the GPU (one at a
# time with and without replays, and as a vectorised group of one) and on the same machine's CPU.
#   bash benchmarks/gpu_check.sh            (logs and the result JSON go to $OUT, default /tmp/gpu-check)
set -o pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import sys, torch, pydantic, prunelab; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)" || exit 1
python3 -m pytest -q -p no:cacheprovider -rs tests/test_device.py tests/test_vectorized.py 2>&1 | tee "$OUT/tests.log"
python3 benchmarks/many_models.py --device cuda --full-training --device-iterations 5000 --repeats 3 2>&1 | tee "$OUT/bench.log"
cp benchmarks/results/many_models.json "$OUT/"
