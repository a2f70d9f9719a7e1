#!/usr/bin/env bash
# Compiles the Hopper forward and backward (kernels.list kinds fwdh, fwdhk, bwdh) for sm_90a and
# fails when ptxas reports that it serialized a kernel's wgmma (C7510-C7520: "wgmma.mma_async
# instructions are serialized ..."). ptxas says so only as an info line, and the kernel stays
# correct, so neither the build nor any check would notice: each mma_async would then wait for
# the previous one and the pipelining the kernel exists for would be gone (a branch the
# compiler cannot prove warp-uniform between an issue and its wait is enough).
# Usage: scripts/check_wgmma_pipelining.sh [build dir with generated/cuda] (default build/emu)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/emu}
nvcc=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if [ ! -x "$nvcc" ]; then
  echo "check_wgmma_pipelining: no nvcc, skipped"
  exit 0
fi
status=0
for tu in fwdh_bf16_d128 fwdh_fp16_d64 fwdhk_bf16_d128 fwdhk_fp16_d64 bwdh_bf16_d128 bwdh_fp16_d64; do
  src="$build/generated/cuda/$tu.cu"
  [ -f "$src" ] || { echo "check_wgmma_pipelining: $src missing (configure $build first)"; exit 1; }
  log=$("$nvcc" -std=c++17 -O3 --expt-relaxed-constexpr -gencode arch=compute_90a,code=sm_90a \
    -Xptxas -v -I src -I include -c "$src" -o /dev/null 2>&1)
  if grep -q "serialized" <<<"$log"; then
    echo "check_wgmma_pipelining: $tu: ptxas serialized its wgmma:"
    grep "serialized" <<<"$log"
    status=1
  else
    # The wgmma kernels' lines (the TU also holds other kernels; bwdh has two variants).
    regs=$(awk '/Compiling entry function/ { k = /wgmma_kernel/ } k && /Used [0-9]+ registers/ {
      match($0, /Used [0-9]+ registers/); out = out sep substr($0, RSTART, RLENGTH); sep = " / "; k = 0 }
      END { print out }' <<<"$log")
    echo "check_wgmma_pipelining: $tu: $regs, wgmma not serialized"
  fi
done
exit $status
