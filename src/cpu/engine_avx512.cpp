// SPDX-License-Identifier: Apache-2.0
// The CPU engine for AVX-512 (with AVX512-BF16 and AMX-BF16 paths taken where the CPU has them).
// The instruction set is enabled for engine.inc's target region only; see the note there.
#define LONGATTN_ENGINE_NS avx512
#define LONGATTN_ISA_TARGET \
  "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16,fma,f16c"
#define LONGATTN_ISA_AVX512 1
#define LONGATTN_ISA_AVX2 1
#define LONGATTN_ISA_F16C 1
#define LONGATTN_ISA_AVX512BF16 1
#define LONGATTN_ISA_AMX 1
#include "cpu/engine.inc"
