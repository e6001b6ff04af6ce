#!/usr/bin/env bash
# The CuPy checks, in one go, on a machine with an NVIDIA GPU (BENCHMARKS.md, "GPU"):
#   1. the test suite with every backend built as CuPy (MCASIM_TEST_BACKEND=cupy, tests/conftest.py);
#      the RTL tests are left out (Verilator and Amaranth are not on the GPU machine; the RTL is
#      digital and the same on any host);
#   2. the CNN benchmark on CuPy (PCM vs fp32 epoch, conv cost vs a plain matmul);
#   3. a cProfile of fresh PCM CNN steps on CuPy (benchmarks.profile_steps --fresh).
# Results go to $OUT (default build/gpu): env.txt, pytest_cupy.txt, bench_cupy.txt, bench_cupy.json,
# profile_cupy.txt.
# Usage (from the checkout): bash benchmarks/gpu_check.sh      [PYTHON=python3] [WORKERS=8]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
{
  date -u
  nvidia-smi -L 2>&1
  "$PY" -c "import sys, numpy, cupy; print('python', sys.version.split()[0], 'numpy', numpy.__version__, 'cupy', cupy.__version__); print(cupy.cuda.runtime.getDeviceProperties(0)['name'].decode())"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

"$PY" -c "import cupy" 2>/dev/null || { echo "CuPy does not import with $PY: install cupy-cudaXXx for this CUDA"; exit 2; }

echo "== test suite on CuPy"
t0=$SECONDS
opts=()   # parallel workers and a per-test limit where the plugins are installed
"$PY" -c "import xdist" 2>/dev/null && opts+=(-n "${WORKERS:-8}")
"$PY" -c "import pytest_timeout" 2>/dev/null && opts+=(--timeout 150)
MCASIM_TEST_BACKEND=cupy timeout "${TEST_TIMEOUT:-300}" "$PY" -m pytest tests -q -p no:cacheprovider \
  "${opts[@]}" --ignore=tests/test_dpu_rtl.py --ignore=tests/test_dpu_synth.py \
  -k "not rtl" -rfEs --tb=short > "$OUT/pytest_cupy.txt" 2>&1
echo "pytest rc=$? in $((SECONDS - t0)) s"
tail -n 40 "$OUT/pytest_cupy.txt"

echo "== CNN benchmark on CuPy"
t0=$SECONDS
timeout "${BENCH_TIMEOUT:-200}" "$PY" -m benchmarks.run cnn --backend cupy --out "$OUT/bench_cupy.json" \
  > "$OUT/bench_cupy.txt" 2>&1
echo "bench rc=$? in $((SECONDS - t0)) s"
tail -n 30 "$OUT/bench_cupy.txt"

echo "== where a PCM CNN step's time goes on CuPy"
timeout "${PROFILE_TIMEOUT:-120}" "$PY" -m benchmarks.profile_steps --fresh cnn_cifar10_pcm --backend cupy \
  --steps 20 --warmup 10 > "$OUT/profile_cupy.txt" 2>&1
echo "profile rc=$?"
cat "$OUT/profile_cupy.txt"
