#!/usr/bin/env bash
# The one prepared command for a GPU machine (one H100/H200); about 11 minutes:
#
#   bash benchmarks/make_wheels.sh   # once, where PyPI is reachable: fills .whl/
#   bash benchmarks/gpu_suite.sh     # on the GPU machine, .whl/ carried along
#
# 1. Installs what a CUDA image lacks (tensorflow-datasets, grain, ml-collections,
#    ...) from the wheels in .whl/ into /tmp/site, when it lacks them; jaxvision
#    runs from this checkout.
# 2. `scripts/benchmark.py --suite gpu`: jaxvision next to torchvision (eager and
#    torch.compile), one markdown table.
# 3. `benchmarks/train_cpu_vs_gpu.py`: digits_cnn trained by the same command on
#    the GPU and on the CPU, wall time and final accuracy.
# Everything goes under $OUT (default runs/gpu_suite): suite.md, suite.json,
# train_cpu_vs_gpu.md and log.txt. Each step has its own time limit
# (SUITE_TIMEOUT, TRAIN_TIMEOUT seconds), and the suite's JSON is rewritten
# after every row, so a cut-short run keeps its rows. TRAIN_CONFIG picks
# another config for step 3 (the tests use digits_cnn.py:smoke).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu_suite}"
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
needs="import tensorflow_datasets, grain, ml_collections, array_record, pycocotools, tensorboardX"
if ! python3 -c "$needs" 2> /dev/null; then
  if ! compgen -G ".whl/*.whl" > /dev/null; then
    echo "error: this Python lacks jaxvision's data packages and .whl/ holds no wheels;" \
      "run 'bash benchmarks/make_wheels.sh' where PyPI is reachable and bring .whl/ along."
    exit 1
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="$PYTHONPATH:/tmp/site"  # After the checkout and the image's own packages.
fi
date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
python3 -c "import jax, torch; print('jax', jax.__version__, jax.devices()); print('torch', torch.__version__)"

if python3 -c "import jax; jax.devices('gpu')" 2> /dev/null; then
  timeout "${SUITE_TIMEOUT:-540}" python3 scripts/benchmark.py --suite gpu --timeout 150 \
    --json "$OUT/suite.json" | tee "$OUT/suite.md"
else
  echo "JAX sees no GPU here: the GPU suite is skipped (CUDA jax wheels installed?)." \
    | tee "$OUT/suite.md"
fi
timeout "${TRAIN_TIMEOUT:-90}" python3 benchmarks/train_cpu_vs_gpu.py \
  --config "${TRAIN_CONFIG:-configs/digits_cnn.py}" --timeout 80 --out "$OUT/train_cpu_vs_gpu.md"
date -u
