#!/usr/bin/env bash
# Builds ggml's CPU backend from a checkout of its public source (not part of this repository)
# and the fa_bench driver beside it, for side-by-side numbers (bench/NOTES.md).
#   bench/ggml/build.sh /path/to/ggml-checkout /path/to/builddir
# Measured against ggml-org/ggml d99724f (2026-08-21).
set -euo pipefail
src=$(realpath "$1")
out=$(realpath -m "$2")
here=$(cd "$(dirname "$0")" && pwd)
cmake -S "$src" -B "$out/ggml" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_BLAS=OFF \
  -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
ninja -C "$out/ggml" -j2 >/dev/null
g++ -O3 -march=native -std=c++17 "$here/fa_bench.cpp" -I"$src/include" -o "$out/fa_bench" \
  "$out/ggml/src/libggml.a" "$out/ggml/src/libggml-cpu.a" "$out/ggml/src/libggml-base.a" \
  -fopenmp -lpthread -lm
echo "built $out/fa_bench"
