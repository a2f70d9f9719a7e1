// SPDX-License-Identifier: Apache-2.0
// Device helpers shared by every CUDA kernel: element conversion, warp reductions, the row
// finalizer (the same rule as the CPU engine's finalize_row) and the persistent work loop.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cuda/kernels.hpp"
#include "cuda/params.hpp"

#ifdef LONGATTN_CUDA_EMULATOR
#include "cuda/emu/emu_device.hpp"  // the CUDA built-ins for a host compiler
/// The block's dynamic shared memory as `type* name`.
// `type` is a type name, not an expression: it cannot be parenthesized.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define LONGATTN_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::longattn::emu::dynamic_shared_memory())
// NOLINTEND(bugprone-macro-parentheses)
/// A device function kept out of line on the GPU (the host compiler's headers own __noinline__).
#define LONGATTN_NOINLINE
#else
/// The block's dynamic shared memory as `type name[]`.
#define LONGATTN_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
/// A device function kept out of line on the GPU.
#define LONGATTN_NOINLINE __noinline__
#endif

namespace longattn::detail::cuda {

/// kernel<<<grid, block, smem, stream>>>(p); the launch status is read with cudaGetLastError()
/// as after any launch (the emulator runs the kernel here and records its status there).
template <class Kernel>
inline void launch_kernel(Kernel kernel, dim3 grid, dim3 block, std::size_t smem,
                          cudaStream_t stream, const AttnParams& p) {
#ifdef LONGATTN_CUDA_EMULATOR
  (void)::longattn::emu::launch(kernel, grid, block, smem, p);
  (void)stream;
#else
  // clang-format off
  kernel<<<grid, block, smem, stream>>>(p);
  // clang-format on
#endif
}

inline constexpr float kLog2eF = 1.4426950408889634F;
inline constexpr float kLn2F = 0.6931471805599453F;

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }
__device__ __forceinline__ float pos_inf() { return __int_as_float(0x7f800000); }

// ---- element conversion ----
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// ---- warp reductions (all 32 lanes take part) ----
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffU, x, o);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffU, x, o));
  return x;
}

/// Final scale of a softmax row and its natural-log lse from the running max m and sum l
/// (log2 units, l relative to m, or to 0 when m is -inf) and the row's sink logit (log2 units,
/// -inf without one). A row that saw nothing gets factor 0 and lse -inf (or the sink logit).
struct RowFinal {
  float factor;
  float lse;
};
__device__ __forceinline__ RowFinal finalize_row(float m, float l, float sink2) {
  const float mf = fmaxf(m, sink2);
  const float corr = m == neg_inf() ? 0.0F : exp2f(m - mf);
  const float lf = l * corr + (sink2 == neg_inf() ? 0.0F : exp2f(sink2 - mf));
  if (lf == 0.0F) return {0.0F, neg_inf()};
  return {corr / lf, (mf + log2f(lf)) * kLn2F};
}

/// Sink logit of head h in log2 units (-inf without sink logits).
__device__ __forceinline__ float sink_log2(const AttnParams& p, int h) {
  return p.sink_logits != nullptr ? p.sink_logits[h] * kLog2eF : neg_inf();
}

/// 2^x on the special-function unit alone (ex2.approx.ftz: relative error ~2^-22, subnormal
/// inputs and results flushed to zero): what FA2 gets from --use_fast_math. exp2f compiles to
/// the same instruction wrapped in a subnormal-result fix-up (a compare and two multiplies),
/// which the tensor-core kernels, whose probabilities are rounded to bf16/fp16, do not need.
__device__ __forceinline__ float exp2_ftz(float x) {
#ifdef LONGATTN_CUDA_EMULATOR
  if (std::fpclassify(x) == FP_SUBNORMAL) x = 0.0F;
  const float y = std::exp2(x);
  return std::fpclassify(y) == FP_SUBNORMAL ? 0.0F : y;
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}

/// The logit transform shared by forward and backward: softcap (c * tanh(x / c)).
__device__ __forceinline__ float capped_logit(const AttnParams& p, float dot) {
  const float x = dot * p.scale;
  return p.softcap > 0.0F ? p.softcap * tanhf(x * p.softcap_inverse) : x;
}

/// The schedule of (batch entry b, head h): its slot and the slot's first entry in the
/// concatenated key_tile / row_bits / q_tile / col_bits arrays.
struct SlotRef {
  SlotEntry entry;
  std::int64_t base;
};
__device__ __forceinline__ SlotRef schedule_of(const AttnParams& p, int b, int h) {
  const int slot = p.sched.slot_of[b * p.hq + h];
  return {p.sched.slots[slot], p.sched.entry_base[slot]};
}

/// The (head, query) of row `row` of query tile `qt` (tile height tq) of a work item for head h;
/// with GQA packing the rows are the group's heads' queries, head-major.
struct TileRow {
  int head;
  int query;
};
__device__ __forceinline__ TileRow tile_row(const AttnParams& p, int h, int qt, int tq, int sq,
                                            int row) {
  if (!p.pack_gqa) return {h, qt * tq + row};
  return {h + row / sq, row % sq};
}
/// Valid rows of that tile.
__device__ __forceinline__ int tile_rows(const AttnParams& p, int qt, int tq, int sq) {
  return p.pack_gqa ? min(tq, p.group * sq) : min(tq, sq - qt * tq);
}

/// Raises a kernel's dynamic shared memory limit to `smem` bytes (required above 48 KB).
template <class Kernel>
cudaError_t allow_dynamic_smem(Kernel* kernel, std::size_t smem) {
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(smem));
}

/// True when `bytes` of dynamic shared memory (plus the persistent loop's static slot) fit one
/// block on the current GPU. Asked before cudaFuncSetAttribute, whose failure would leave a
/// sticky "last error" that a later launch check would report.
inline bool fits_shared_memory(std::size_t bytes) {
  int device = 0;
  int limit = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
          cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return bytes + kStaticSmemBytes <= static_cast<std::size_t>(limit);
}

/// Raises the kernel's shared memory limit and reads its resident blocks per SM.
template <class Kernel>
cudaError_t blocks_per_sm(Kernel* kernel, int threads, std::size_t smem, int* blocks) {
  if (cudaError_t e = allow_dynamic_smem(kernel, smem); e != cudaSuccess) return e;
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, kernel, threads, smem);
}

/// Resident blocks per SM of one kernel, or 0 when it cannot be configured on this GPU (its
/// shared memory does not fit; the error is cleared, not sticky: the caller falls back).
template <class Kernel>
int resident_blocks(Kernel* kernel, int threads, std::size_t smem) {
  if (!fits_shared_memory(smem)) return 0;
  int blocks = 0;
  if (blocks_per_sm(kernel, threads, smem, &blocks) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return blocks;
}

/// The recomputed probability and the scaled score gradient of one (query, key) element of the
/// backward (0 and 0 when not visible): softmax P = exp2(x log2e - lse2), dS = P (dP - D_i);
/// sigmoid P = sigmoid(x + bias), dS = dP P (1 - P); times the softcap chain factor and scale.
/// kFastExp: the softmax exponential by exp2_ftz (the tensor-core kernels).
template <bool kFastExp = false>
__device__ __forceinline__ void pair_gradient(const AttnParams& p, float dot, float dp, float lse2,
                                              float rowdot, bool visible, float& prob,
                                              float& dscore) {
  const float x = capped_logit(p, dot);
  float pr;
  float ds;
  if (p.softmax) {
    pr = kFastExp ? exp2_ftz(fmaf(x, kLog2eF, -lse2)) : exp2f(x * kLog2eF - lse2);
    ds = pr * (dp - rowdot);
  } else {
    pr = 1.0F / (1.0F + expf(-(x + p.sigmoid_bias)));
    ds = dp * pr * (1.0F - pr);
  }
  if (p.softcap > 0.0F) {
    const float t = x * p.softcap_inverse;  // tanh(raw / softcap)
    ds *= 1.0F - t * t;
  }
  prob = visible ? pr : 0.0F;
  // A pair of probability 0 has no gradient, also where dP is Inf/NaN (0 * NaN would be NaN).
  dscore = visible && pr != 0.0F ? ds * p.scale : 0.0F;
}

/// The tensor-core backward's kernels return at once when the prologue found an Inf/NaN in
/// the inputs: the generic kernels then compute the gradients exactly (AttnParams::nonfinite).
__device__ __forceinline__ bool exact_path_taken(const AttnParams& p) {
  return p.nonfinite != nullptr && *p.nonfinite != 0;
}

/// pair_gradient for a FULL tile of a plain softmax (every pair visible, no softcap): P =
/// 2^(dot * raw_to_log2 - lse2) (raw_to_log2 = scale * log2 e), dS = P (dP - D_i) scale; an
/// FFMA and the exponential instead of the masked path's transform, tests and selects.
/// Whether a key tile takes plain_pair_gradient: FULL (no bitmask), every key in the sequence,
/// softmax without softcap. Read from the parameters at each use rather than kept in registers.
__device__ __forceinline__ bool plain_full_tile(const AttnParams& p, int bits_index, int jn,
                                                int tile_k) {
  return bits_index < 0 && jn == tile_k && p.softmax && p.softcap <= 0.0F;
}
__device__ __forceinline__ void plain_pair_gradient(float dot, float dp, float lse2, float rowdot,
                                                    float raw_to_log2, float scale, float& prob,
                                                    float& dscore) {
  const float pr = exp2_ftz(fmaf(dot, raw_to_log2, -lse2));
  prob = pr;
  dscore = pr * (dp - rowdot) * scale;
}

/// The batch entry, head and token of a packed per-row workspace index ([b][h][i] packing).
struct PackedRow {
  BatchEntry entry;
  int h;
  std::int64_t i;
};
/// The batch entry holding packed row r: the last one whose first row (first(entry) * heads) is
/// <= r (entries with no rows share their first row with the next).
template <class First>
__device__ __forceinline__ const BatchEntry& entry_of_row(const AttnParams& p, std::int64_t r,
                                                          std::int64_t heads, First first) {
  int lo = 0;
  int hi = p.num_batch - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (first(p.batch[mid]) * heads <= r) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return p.batch[lo];
}
__device__ __forceinline__ PackedRow packed_row(const AttnParams& p, std::int64_t r) {
  const BatchEntry be = entry_of_row(p, r, p.hq, [](const BatchEntry& e) { return e.row; });
  const std::int64_t local = r - be.row * p.hq;
  return {be, static_cast<int>(local / be.sq), local % be.sq};
}
/// The same for the K/V rows ([b][kvh][j] packing, p.packed_kv_rows of them): h is the KV head.
__device__ __forceinline__ PackedRow packed_kv_row(const AttnParams& p, std::int64_t r) {
  const BatchEntry be = entry_of_row(p, r, p.hkv, [](const BatchEntry& e) { return e.kv_row; });
  const std::int64_t local = r - be.kv_row * p.hkv;
  return {be, static_cast<int>(local / be.skv), local % be.skv};
}

/// Per-row kernels (one warp per packed row) run blocks of kRowWarps warps over a flat grid.
inline constexpr int kRowWarps = 4;
inline int packed_row_blocks(std::int64_t rows) {
  return static_cast<int>(
      std::min<std::int64_t>((rows + kRowWarps - 1) / kRowWarps, std::int64_t{1} << 20));
}
/// body(r, packed_row(p, r)) for this warp's packed rows (grid-stride over p.packed_rows).
template <class Body>
__device__ __forceinline__ void for_each_packed_row(const AttnParams& p, Body&& body) {
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * kRowWarps;
  for (std::int64_t r = blockIdx.x * kRowWarps + threadIdx.x / 32; r < p.packed_rows; r += warps)
    body(r, packed_row(p, r));
}

/// Persistent-block work loop: every block takes the next item from a global counter until
/// the list runs out. Items are sorted longest-first on the host, so this is LPT scheduling.
/// `body(item)` may use __syncthreads(); the loop syncs before the shared slot is reused.
template <class Body>
__device__ __forceinline__ void for_each_work_item(std::int32_t* counter, int count, Body&& body) {
  __shared__ int next;
  while (true) {
    if (threadIdx.x == 0) next = atomicAdd(counter, 1);
    __syncthreads();
    const int item = next;
    __syncthreads();
    if (item >= count) return;
    body(item);
  }
}

}  // namespace longattn::detail::cuda
