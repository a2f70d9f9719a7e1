#!/usr/bin/env bash
# One run, both engines, same shapes, alternating: ggml's CPU flash attention (fp32 Q, f16 K/V,
# fp32 accumulation) and longattn (fp32, fp16 and bf16 inputs), 2 threads each.
#   bench/ggml/side_by_side.sh /path/to/fa_bench [build/release/longattn]
set -euo pipefail
fa=$1
la=${2:-build/release/longattn}
for shape in "4096 16" "16384 4"; do
  set -- $shape
  for mask in full causal; do
    "$fa" 128 "$1" "$2" "$mask" 2
    for dt in fp32 fp16 bf16; do
      OMP_NUM_THREADS=2 "$la" bench --S "$1" --H "$2" --D 128 --mask "$mask" --dtype "$dt" --fwd \
        --reps 3 --no-check 2>/dev/null | tail -n 1 | sed "s/^/longattn /"
    done
  done
done
