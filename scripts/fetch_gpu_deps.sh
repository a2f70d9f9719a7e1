#!/usr/bin/env bash
# Prepares .gpudeps/ (git-ignored) for bench/gpu_job.sh on the lent GPU machine, which cannot
# download anything: the Debian packages of the CLI's header libraries (fmt, CLI11,
# nlohmann-json; libgomp in case the image lacks it), a copy of ../shared/anchors (the device tool
# sends the repo only), and, when build/release is an up-to-date CUDA build, its CLI
# (xz-compressed; bench/gpu_job.sh runs it instead of building there, which saves device time).
# Call the device tool with carry [".gpudeps"].
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpudeps && mkdir -p .gpudeps/debs
(cd .gpudeps/debs && apt-get download libfmt-dev libfmt9 libcli11-dev nlohmann-json3-dev libgomp1 >/dev/null)
if [ -d ../shared/anchors ]; then cp -r ../shared/anchors .gpudeps/anchors; fi
if [ -x build/release/longattn ] && grep -q '^LONGATTN_CUDA:BOOL=ON' build/release/CMakeCache.txt &&
   cmake --build build/release --target longattn_cli >/dev/null; then
  mkdir -p .gpudeps/bin
  xz -T2 -6 -c build/release/longattn >.gpudeps/bin/longattn.xz
  git describe --always --dirty >.gpudeps/bin/commit
fi
# WHEEL=1: also a wheel for the device's Python 3.12 (sm_90 only), when this machine has one.
if [ "${WHEEL:-0}" = 1 ]; then
  for py in python3.12 /root/.pyenv/versions/3.12*/bin/python3.12; do
    "$py" -c 'import sys' 2>/dev/null || continue  # a pyenv shim without that version fails
    mkdir -p .gpudeps/wheels
    CMAKE_BUILD_PARALLEL_LEVEL=2 "$py" -m pip wheel . --no-deps -w .gpudeps/wheels \
      -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90 -C build-dir=build/wheel-cp312 >/dev/null
    break
  done
fi
du -sh .gpudeps
