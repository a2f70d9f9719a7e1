// SPDX-License-Identifier: Apache-2.0
// The CPU engine for AVX2 + FMA + F16C.
// The instruction set is enabled for engine.inc's target region only; see the note there.
#define LONGATTN_ENGINE_NS avx2
#define LONGATTN_ISA_TARGET "avx2,fma,f16c"
#define LONGATTN_ISA_AVX512 0
#define LONGATTN_ISA_AVX2 1
#define LONGATTN_ISA_F16C 1
#define LONGATTN_ISA_AVX512BF16 0
#define LONGATTN_ISA_AMX 0
#include "cpu/engine.inc"
