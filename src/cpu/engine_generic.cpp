// SPDX-License-Identifier: Apache-2.0
// The CPU engine for the baseline instruction set of the build (SSE2 on x86-64).
#define LONGATTN_ENGINE_NS generic
#define LONGATTN_ISA_AVX512 0
#define LONGATTN_ISA_AVX2 0
#define LONGATTN_ISA_F16C 0
#define LONGATTN_ISA_AVX512BF16 0
#define LONGATTN_ISA_AMX 0
#include "cpu/engine.inc"
