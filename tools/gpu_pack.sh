#!/usr/bin/env bash
# make gpu-pack: what `make gpu-check` needs on the GPU machine, which reaches no network and receives only
# this checkout. Writes .gpu/ (git-ignored; name it in the device tool's carry):
#   .gpu/data/mnist/  the four MNIST files and their README (checksums), copied from MNIST_DATA_DIR
#   .gpu/whl/         wheels of the sweep arm's packages that machine lacks (optuna and its needs), for Python 3.12
# About 12 MB. Re-running refreshes both.
set -euo pipefail
cd "$(dirname "$0")/.."
src="${MNIST_DATA_DIR:-${MNIST_DATA_ROOT:-../shared/data}/mnist}"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  if [ ! -e "$src/$f" ] && [ ! -e "$src/$f.gz" ]; then
    echo "gpu-pack: $src has no $f (set MNIST_DATA_DIR to the MNIST folder)" >&2
    exit 2
  fi
done
mkdir -p .gpu/data/mnist .gpu/whl
cp -f "$src"/*-ubyte* .gpu/data/mnist/
[ -f "$src/README.md" ] && cp -f "$src/README.md" .gpu/data/mnist/
# the versions requirements.txt pins (optuna) and this environment resolved for its needs
pins=$(.venv/bin/python -m pip freeze | grep -iE '^(optuna|alembic|colorlog|mako|sqlalchemy)==')
# shellcheck disable=SC2086
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu/whl $pins
du -sh .gpu
