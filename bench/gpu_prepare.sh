#!/usr/bin/env bash
# Run on the development machine (it has the package registry), from anywhere, BEFORE the
# device run: downloads the wheels bench/gpu.py needs on the GPU machine into .whl/ (git-
# ignored through .git/info/exclude) for its Python 3.12 / x86-64 image. That image has
# torch, numpy, Pillow, tokenizers 0.23, safetensors and huggingface_hub, but transformers
# 5.17 (this package needs >= 5.20) and no pydantic; regex and tqdm come along because
# transformers checks their versions at import. Versions are the ones this checkout is
# tested with. About 17 MiB (the `carry` limit is 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .git/info
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    transformers==5.24.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated_types==0.8.0 \
    typing_inspection==0.4.5 typing_extensions==4.16.0 regex==2026.11.19 tqdm==4.70.1
ls -la .whl
du -sh .whl
