// SPDX-License-Identifier: Apache-2.0
// The CPU engine compiled for one instruction set (flags set in CMakeLists.txt).
#define LONGATTN_ENGINE_NS avx512
#include "cpu/engine.inc"
