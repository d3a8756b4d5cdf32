#!/usr/bin/env bash
# Downloads into .whl/ the wheels that a CUDA image (Python 3.12, with jax, flax,
# optax, orbax, chex, torch, torchvision, scikit-learn...) lacks to run jaxvision,
# for benchmarks/gpu_suite.sh on a machine without internet:
#   bash benchmarks/make_wheels.sh   # here, with PyPI reachable (~30 MB)
# then carry .whl/ with the checkout. PYTHON_VERSION picks another Python.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON_VERSION:-3.12}"
mkdir -p .whl
# What jaxvision needs beyond such an image, at the versions tested here.
packages=(
  tensorflow-datasets==4.9.10 grain==0.2.18 array-record==0.8.6 ml-collections==1.1.0
  pycocotools==2.0.11 tensorboardx==2.6.5 dm-tree==0.1.10 tensorflow-metadata==1.21.0
  googleapis-common-protos==1.76.0 immutabledict==4.3.1 simple-parsing==0.1.9
  docstring-parser==0.18.0 termcolor==3.3.0 toml==0.10.2 portpicker==1.6.0
)
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
         manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 any; do
  platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" \
  --implementation cp "${platforms[@]}" -d .whl "${packages[@]}"
# promise (a tensorflow-datasets dependency) is published as source only: build it.
python3 -m pip wheel -q --no-deps -w .whl promise==2.3
du -sh .whl
