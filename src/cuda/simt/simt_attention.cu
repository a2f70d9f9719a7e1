// SPDX-License-Identifier: Apache-2.0
// The generic CUDA kernels: fp32 SIMT arithmetic for every input type, head dim <= 256, every
// option and mask (through the 16x32 block schedule). They are the correctness path: fp32
// inputs, head dims the tensor-core kernels do not cover, unaligned views, and the backward.
//
// Layout of the work: a block of 4 warps owns a 16-row query tile; warp w owns rows 4w..4w+3.
// For scores, lane j owns key j of the 32-key tile (K in shared memory with a padded row so
// the 32 lanes hit 32 banks); for outputs, lane owns dims lane + 32c (c < CHUNKS).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "cuda/common/device.cuh"
#include "cuda/kernels.hpp"

namespace longattn::detail::cuda {
namespace {

constexpr int TQ = kSimtTileQ;
constexpr int TK = kSimtTileK;
constexpr int kWarps = kSimtThreads / 32;
constexpr int kRowsPerWarp = TQ / kWarps;
constexpr unsigned kFull = 0xffffffffU;

static_assert(TQ <= 64 && TK == 32 && TQ % kWarps == 0, "one bitmask word per key row");

template <class T>
__device__ __forceinline__ float ld(const void* base, std::int64_t index) {
  return to_float(static_cast<const T*>(base)[index]);
}

/// Copies rows [r0, r0 + n) (token stride ts, head offset ho) of an operand to shared memory as
/// fp32 rows of `pitch` floats; rows n..rows-1 are zero.
template <class T>
__device__ void load_rows(float* dst, int pitch, int rows, const void* src, std::int64_t base,
                          std::int64_t ts, int r0, int n, int dim) {
  for (int e = threadIdx.x; e < rows * dim; e += blockDim.x) {
    const int r = e / dim;
    const int d = e - r * dim;
    dst[r * pitch + d] =
        r < n ? ld<T>(src, base + static_cast<std::int64_t>(r0 + r) * ts + d) : 0.0F;
  }
}

/// The PARTIAL-tile bitmask word of key `lane` of a 32-key sub-tile that starts `key0` keys
/// into its schedule tile (bit i = query row i of the schedule tile sees it); all ones for a
/// FULL tile, zero past the sub-tile's last key (jn keys).
__device__ __forceinline__ std::uint64_t mask_word(const AttnParams& p, const SlotEntry& se,
                                                   int bits_index, int lane, int jn, int key0 = 0) {
  if (lane >= jn) return 0;
  if (bits_index < 0) return ~0ULL;
  return p.sched
      .bits[se.bits + static_cast<std::int64_t>(bits_index) * p.sched.tile_k + key0 + lane];
}

/// The backward's two dot products of one (query, key) pair from shared rows: q . k and dO . v.
__device__ __forceinline__ void pair_dots(const float* q, const float* dout, const float* k,
                                          const float* v, int dim, float& dot, float& dp) {
  dot = 0.0F;
  dp = 0.0F;
  for (int d = 0; d < dim; ++d) {
    dot = fmaf(q[d], k[d], dot);
    dp = fmaf(dout[d], v[d], dp);
  }
}

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

template <class T, int CHUNKS>
__global__ void __launch_bounds__(kSimtThreads) forward_kernel(const AttnParams p) {
  LONGATTN_DYNAMIC_SHARED(float, smem);
  const int dim = p.dim;
  const int kpitch = dim + 1;
  float* qs = smem;              // [TQ][dim]
  float* ks = qs + TQ * dim;     // [TK][dim + 1]
  float* vs = ks + TK * kpitch;  // [TK][dim]
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const bool softmax = p.softmax;
  const float post = softmax ? kLog2eF : 1.0F;  // logits enter softmax in log2 units

  for_each_work_item(p.work_counter, p.num_row_work, [&](int item) {
    const RowWork w = p.row_work[item];
    const BatchEntry be = p.batch[w.b];
    const int kvh = w.h / p.group;
    const int q0 = w.qt * TQ;
    const int qn = min(TQ, be.sq - q0);
    const SlotRef sr = schedule_of(p, w.b, w.h);
    const SlotEntry& se = sr.entry;
    const std::int64_t ebase = sr.base;
    load_rows<T>(qs, dim, TQ, p.q, be.q + w.h * p.q_hs, p.q_ts, q0, qn, dim);

    float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][CHUNKS];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      m[r] = neg_inf();
      l[r] = 0.0F;
#pragma unroll
      for (int c = 0; c < CHUNKS; ++c) acc[r][c] = 0.0F;
    }

    for (std::int64_t e = w.begin; e < w.end; ++e) {
      const int kt = p.sched.key_tile[ebase + e];
      const int bits_index = p.sched.row_bits[ebase + e];
      const int k0 = kt * TK;
      const int jn = min(TK, be.skv - k0);
      __syncthreads();  // the previous tile's K/V (and Q on the first pass) are no longer read
      load_rows<T>(ks, kpitch, TK, p.k, be.k + kvh * p.k_hs, p.k_ts, k0, jn, dim);
      load_rows<T>(vs, dim, TK, p.v, be.v + kvh * p.v_hs, p.v_ts, k0, jn, dim);
      __syncthreads();
      const std::uint64_t word = mask_word(p, se, bits_index, lane, jn);

#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const int row = warp * kRowsPerWarp + r;
        const float* qrow = qs + row * dim;
        const float* krow = ks + lane * kpitch;
        float dot = 0.0F;
        for (int d = 0; d < dim; ++d) dot = fmaf(qrow[d], krow[d], dot);
        const bool visible = ((word >> row) & 1U) != 0 && row < qn;
        const float x = capped_logit(p, dot) * post;
        float prob;
        if (softmax) {
          const float xm = visible ? x : neg_inf();
          const float m_new = fmaxf(m[r], warp_max(xm));
          const float m_use = m_new == neg_inf() ? 0.0F : m_new;
          const float alpha = exp2f(m[r] - m_use);
          prob = exp2f(xm - m_use);
          l[r] = l[r] * alpha + warp_sum(prob);
          m[r] = m_new;
          if (alpha != 1.0F) {
#pragma unroll
            for (int c = 0; c < CHUNKS; ++c) acc[r][c] *= alpha;
          }
        } else {
          prob = visible ? 1.0F / (1.0F + expf(-(x + p.sigmoid_bias))) : 0.0F;
        }
        // O += P V; a zero weight never touches V (Inf/NaN in V spread only where weighted).
        for (int j = 0; j < jn; ++j) {
          const float pj = __shfl_sync(kFull, prob, j);
          if (pj == 0.0F) continue;
#pragma unroll
          for (int c = 0; c < CHUNKS; ++c) {
            const int d = lane + 32 * c;
            if (d < dim) acc[r][c] = fmaf(pj, vs[j * dim + d], acc[r][c]);
          }
        }
      }
    }

    // Epilogue: a split-KV part keeps (acc, m, l); a whole row is normalized and written.
    const float sink2 = sink_log2(p, w.h);
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int row = warp * kRowsPerWarp + r;
      if (row >= qn) continue;
      if (w.part >= 0) {
        const std::int64_t prow = static_cast<std::int64_t>(w.part) * TQ + row;
#pragma unroll
        for (int c = 0; c < CHUNKS; ++c) {
          const int d = lane + 32 * c;
          if (d < dim) p.part_acc[prow * dim + d] = acc[r][c];
        }
        if (lane == 0) {
          p.part_ml[2 * prow] = m[r];
          p.part_ml[2 * prow + 1] = l[r];
        }
        continue;
      }
      const RowFinal f = softmax ? finalize_row(m[r], l[r], sink2) : RowFinal{1.0F, 0.0F};
      T* orow = static_cast<T*>(p.out) + be.out + static_cast<std::int64_t>(q0 + row) * p.o_ts +
                w.h * p.o_hs;
#pragma unroll
      for (int c = 0; c < CHUNKS; ++c) {
        const int d = lane + 32 * c;
        if (d < dim) orow[d] = from_float<T>(acc[r][c] * f.factor);
      }
      if (lane == 0 && p.lse != nullptr && softmax) {
        p.lse[be.lse + w.h * p.lse_hs + static_cast<std::int64_t>(q0 + row) * p.lse_ts] = f.lse;
      }
    }
  });
}

/// Merges the split-KV parts of each query tile in a fixed order (deterministic).
template <class T, int CHUNKS>
__global__ void __launch_bounds__(kSimtThreads) merge_kernel(const AttnParams p) {
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int dim = p.dim;
  for (int item = blockIdx.x; item < p.num_merge_work; item += gridDim.x) {
    const MergeWork w = p.merge_work[item];
    const BatchEntry be = p.batch[w.b];
    const int tq = p.sched.tile_q;  // part rows: the producing kernel's query tile
    const int qn = tile_rows(p, w.qt, tq, be.sq);
    for (int row = warp; row < qn; row += kWarps) {
      const TileRow tr = tile_row(p, w.h, w.qt, tq, be.sq, row);
      const float sink2 = sink_log2(p, tr.head);
      float m_all = neg_inf();
      for (int s = 0; s < w.count; ++s) {
        m_all = fmaxf(m_all, p.part_ml[2 * ((w.first + s) * tq + row)]);
      }
      const float m_use = m_all == neg_inf() ? 0.0F : m_all;
      float l_all = 0.0F;
      float acc[CHUNKS];
#pragma unroll
      for (int c = 0; c < CHUNKS; ++c) acc[c] = 0.0F;
      for (int s = 0; s < w.count; ++s) {
        const std::int64_t prow = (w.first + s) * tq + row;
        float weight = 1.0F;
        if (p.softmax) {
          const float ms = p.part_ml[2 * prow];
          weight = ms == neg_inf() ? 0.0F : exp2f(ms - m_use);
          if (weight == 0.0F) continue;
          l_all = fmaf(p.part_ml[2 * prow + 1], weight, l_all);
        }
#pragma unroll
        for (int c = 0; c < CHUNKS; ++c) {
          const int d = lane + 32 * c;
          if (d < dim) acc[c] = fmaf(p.part_acc[prow * dim + d], weight, acc[c]);
        }
      }
      const RowFinal f = p.softmax ? finalize_row(m_all, l_all, sink2) : RowFinal{1.0F, 0.0F};
      T* orow = static_cast<T*>(p.out) + be.out + static_cast<std::int64_t>(tr.query) * p.o_ts +
                tr.head * p.o_hs;
#pragma unroll
      for (int c = 0; c < CHUNKS; ++c) {
        const int d = lane + 32 * c;
        if (d < dim) orow[d] = from_float<T>(acc[c] * f.factor);
      }
      if (lane == 0 && p.lse != nullptr && p.softmax) {
        p.lse[be.lse + tr.head * p.lse_hs + static_cast<std::int64_t>(tr.query) * p.lse_ts] = f.lse;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

/// True when one of the `dim` elements of this lane's share of a row is Inf or NaN (lanes
/// stride by 32).
template <class T>
__device__ __forceinline__ bool row_has_nonfinite(const void* base, std::int64_t row, int dim,
                                                  int lane) {
  bool bad = false;
  for (int d = lane; d < dim; d += 32) {
    const float x = ld<T>(base, row + d);
    bad |= (x - x) != 0.0F;  // NaN for Inf and NaN, 0 otherwise (no fast-math in this build)
  }
  return bad;
}

/// Per row: D_i = dO_i . O_i and the lse in log2 units (+inf for a row that saw nothing, so that
/// exp2(x - lse) is 0). One warp per packed row over a flat grid (balanced whatever B and H are).
/// With p.nonfinite set (tensor-core backward), the same warps also scan the Q and dO rows and
/// then the packed K/V rows for Inf/NaN.
template <class T>
__global__ void __launch_bounds__(32 * kRowWarps) row_constants_kernel(const AttnParams p) {
  const int lane = threadIdx.x % 32;
  bool bad = false;
  for_each_packed_row(p, [&](std::int64_t r, const PackedRow& pr) {
    const BatchEntry& be = pr.entry;
    const std::int64_t orow = be.out + pr.i * p.o_ts + pr.h * p.o_hs;
    const std::int64_t drow = be.dout + pr.i * p.do_ts + pr.h * p.do_hs;
    float acc = 0.0F;
    for (int d = lane; d < p.dim; d += 32)
      acc = fmaf(ld<T>(p.out, orow + d), ld<T>(p.dout, drow + d), acc);
    acc = warp_sum(acc);
    if (p.nonfinite != nullptr) {
      bad |= row_has_nonfinite<T>(p.dout, drow, p.dim, lane) ||
             row_has_nonfinite<T>(p.q, be.q + pr.i * p.q_ts + pr.h * p.q_hs, p.dim, lane);
    }
    if (lane == 0) {
      p.row_dot[r] = acc;
      float lse2 = 0.0F;
      if (p.softmax) {
        const float lse = p.lse[be.lse + pr.h * p.lse_hs + pr.i * p.lse_ts];
        lse2 = lse == neg_inf() ? pos_inf() : lse * kLog2eF;
      }
      p.row_lse2[r] = lse2;
    }
  });
  if (p.nonfinite == nullptr) return;
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * kRowWarps;
  for (std::int64_t r = blockIdx.x * kRowWarps + threadIdx.x / 32; r < p.packed_kv_rows;
       r += warps) {
    const PackedRow kr = packed_kv_row(p, r);
    const BatchEntry& be = kr.entry;
    bad |= row_has_nonfinite<T>(p.k, be.k + kr.i * p.k_ts + kr.h * p.k_hs, p.dim, lane) ||
           row_has_nonfinite<T>(p.v, be.v + kr.i * p.v_ts + kr.h * p.v_hs, p.dim, lane);
  }
  if (__any_sync(kFull, bad) && lane == 0) *p.nonfinite = 1;
}

/// dsink_h = -sum_i exp(sink_h - lse_i) D_i, in double, reduced in a fixed order.
__global__ void __launch_bounds__(kSimtThreads) sink_grad_kernel(const AttnParams p) {
  __shared__ double partial[kSimtThreads];
  const int h = blockIdx.x;
  const double sink = p.sink_logits[h];
  double g = 0.0;
  for (int b = 0; b < p.num_batch; ++b) {
    const BatchEntry be = p.batch[b];
    for (int i = threadIdx.x; i < be.sq; i += blockDim.x) {
      const std::int64_t r = be.row * p.hq + static_cast<std::int64_t>(h) * be.sq + i;
      const double lse = p.lse[be.lse + h * p.lse_hs + static_cast<std::int64_t>(i) * p.lse_ts];
      g -= exp(sink - lse) * static_cast<double>(p.row_dot[r]);
    }
  }
  partial[threadIdx.x] = g;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (static_cast<int>(threadIdx.x) < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) p.dsink[h * p.dsink_stride] = static_cast<float>(partial[0]);
}

// The generic backward walks a schedule of any tile shape that is a multiple of its own 16 x 32
// (its own schedule, or the tensor-core kernels' 64 x 64 / 64 x 128 when it stands in for them
// on inputs with Inf/NaN): each schedule tile is taken as 16-row x 32-key sub-tiles, with the
// bitmask word of a key shifted to the sub-tile's first row. A pair of probability 0 touches
// nothing (a masked Q, K, V or dO row may hold Inf/NaN).

/// dK, dV of one key tile of one (batch entry, KV head), summed over the group's query heads
/// and the query tiles that see it (column schedule). Lane j owns key j of a 32-key sub-tile
/// for scores; for the accumulators warp w owns keys 8w..8w+7 and lane owns dims lane + 32c.
template <class T, int CHUNKS>
__device__ void dkdv_items(const AttnParams& p, float* smem) {
  const int dim = p.dim;
  const int pitch = dim + 1;
  float* ks = smem;             // [TK][dim + 1]
  float* vs = ks + TK * pitch;  // [TK][dim + 1]
  float* qs = vs + TK * pitch;  // [TQ][dim]
  float* dos = qs + TQ * dim;   // [TQ][dim]
  float* ps = dos + TQ * dim;   // [TQ][TK]
  float* dss = ps + TQ * TK;    // [TQ][TK]
  float* rlse = dss + TQ * TK;  // [TQ]
  float* rdot = rlse + TQ;      // [TQ]
  constexpr int kKeysPerWarp = TK / kWarps;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int tile_q = p.sched.tile_q;
  const int tile_k = p.sched.tile_k;

  for_each_work_item(p.work_counter + 1, p.num_col_work, [&](int item) {
    const ColWork w = p.col_work[item];
    const BatchEntry be = p.batch[w.b];
    const int tile_end = min((w.kt + 1) * tile_k, be.skv);
    for (int k0 = w.kt * tile_k; k0 < tile_end; k0 += TK) {
      const int jn = min(TK, tile_end - k0);
      const int key0 = k0 - w.kt * tile_k;  // this sub-tile's first key in the schedule tile
      load_rows<T>(ks, pitch, TK, p.k, be.k + w.kvh * p.k_hs, p.k_ts, k0, jn, dim);
      load_rows<T>(vs, pitch, TK, p.v, be.v + w.kvh * p.v_hs, p.v_ts, k0, jn, dim);
      float dk[kKeysPerWarp][CHUNKS], dv[kKeysPerWarp][CHUNKS];
#pragma unroll
      for (int jj = 0; jj < kKeysPerWarp; ++jj) {
#pragma unroll
        for (int c = 0; c < CHUNKS; ++c) dk[jj][c] = dv[jj][c] = 0.0F;
      }

      for (int h = w.kvh * p.group; h < (w.kvh + 1) * p.group; ++h) {
        const SlotRef sr = schedule_of(p, w.b, h);
        const SlotEntry& se = sr.entry;
        const std::int64_t ebase = sr.base;
        const std::int64_t c0 = p.sched.col_offsets[se.col_offsets + w.kt];
        const std::int64_t c1 = p.sched.col_offsets[se.col_offsets + w.kt + 1];
        const std::int64_t rbase = be.row * p.hq + static_cast<std::int64_t>(h) * be.sq;
        for (std::int64_t e = c0; e < c1; ++e) {
          const int qt = p.sched.q_tile[ebase + e];
          const int bits_index = p.sched.col_bits[ebase + e];
          const std::uint64_t tile_word = mask_word(p, se, bits_index, lane, jn, key0);
          const int q_end = min((qt + 1) * tile_q, be.sq);
          for (int q0 = qt * tile_q; q0 < q_end; q0 += TQ) {
            const int qn = min(TQ, q_end - q0);
            __syncthreads();  // the previous query tile's Q/dO/P/dS are no longer read
            load_rows<T>(qs, dim, TQ, p.q, be.q + h * p.q_hs, p.q_ts, q0, qn, dim);
            load_rows<T>(dos, dim, TQ, p.dout, be.dout + h * p.do_hs, p.do_ts, q0, qn, dim);
            if (threadIdx.x < TQ) {
              const int i = threadIdx.x;
              rlse[i] = i < qn ? p.row_lse2[rbase + q0 + i] : pos_inf();
              rdot[i] = i < qn ? p.row_dot[rbase + q0 + i] : 0.0F;
            }
            __syncthreads();
            const std::uint64_t word = tile_word >> (q0 - qt * tile_q);
#pragma unroll
            for (int r = 0; r < kRowsPerWarp; ++r) {
              const int row = warp * kRowsPerWarp + r;
              float dot;
              float dp;
              pair_dots(qs + row * dim, dos + row * dim, ks + lane * pitch, vs + lane * pitch, dim,
                        dot, dp);
              const bool visible = ((word >> row) & 1U) != 0 && row < qn;
              pair_gradient(p, dot, dp, rlse[row], rdot[row], visible, ps[row * TK + lane],
                            dss[row * TK + lane]);
            }
            __syncthreads();
#pragma unroll
            for (int jj = 0; jj < kKeysPerWarp; ++jj) {
              const int j = warp * kKeysPerWarp + jj;
              for (int i = 0; i < qn; ++i) {
                const float pij = ps[i * TK + j];
                const float dsij = dss[i * TK + j];
                // (Warp-uniform tests.) A zero weight never touches the Q / dO row.
                if (pij != 0.0F) {
#pragma unroll
                  for (int c = 0; c < CHUNKS; ++c) {
                    const int d = lane + 32 * c;
                    if (d < dim) dv[jj][c] = fmaf(pij, dos[i * dim + d], dv[jj][c]);
                  }
                }
                if (dsij != 0.0F) {
#pragma unroll
                  for (int c = 0; c < CHUNKS; ++c) {
                    const int d = lane + 32 * c;
                    if (d < dim) dk[jj][c] = fmaf(dsij, qs[i * dim + d], dk[jj][c]);
                  }
                }
              }
            }
          }
        }
      }
#pragma unroll
      for (int jj = 0; jj < kKeysPerWarp; ++jj) {
        const int j = warp * kKeysPerWarp + jj;
        if (j >= jn) continue;
        T* dkrow = static_cast<T*>(p.dk) + be.dk + static_cast<std::int64_t>(k0 + j) * p.dk_ts +
                   w.kvh * p.dk_hs;
        T* dvrow = static_cast<T*>(p.dv) + be.dv + static_cast<std::int64_t>(k0 + j) * p.dv_ts +
                   w.kvh * p.dv_hs;
#pragma unroll
        for (int c = 0; c < CHUNKS; ++c) {
          const int d = lane + 32 * c;
          if (d < dim) {
            dkrow[d] = from_float<T>(dk[jj][c]);
            dvrow[d] = from_float<T>(dv[jj][c]);
          }
        }
      }
      __syncthreads();  // K/V of this sub-tile are read until here
    }
  });
}

/// dQ of one query tile over its row schedule (recomputing P and dS), 16 rows at a time.
template <class T, int CHUNKS>
__device__ void dq_items(const AttnParams& p, float* smem) {
  const int dim = p.dim;
  const int pitch = dim + 1;
  float* qs = smem;             // [TQ][dim]
  float* dos = qs + TQ * dim;   // [TQ][dim]
  float* ks = dos + TQ * dim;   // [TK][dim + 1]
  float* vs = ks + TK * pitch;  // [TK][dim + 1]
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int tile_q = p.sched.tile_q;
  const int tile_k = p.sched.tile_k;

  for_each_work_item(p.work_counter, p.num_row_work, [&](int item) {
    const RowWork w = p.row_work[item];
    const BatchEntry be = p.batch[w.b];
    const int kvh = w.h / p.group;
    const SlotRef sr = schedule_of(p, w.b, w.h);
    const SlotEntry& se = sr.entry;
    const std::int64_t ebase = sr.base;
    const std::int64_t rbase = be.row * p.hq + static_cast<std::int64_t>(w.h) * be.sq;
    const int q_end = min((w.qt + 1) * tile_q, be.sq);
    for (int q0 = w.qt * tile_q; q0 < q_end; q0 += TQ) {
      const int qn = min(TQ, q_end - q0);
      const int qshift = q0 - w.qt * tile_q;
      __syncthreads();  // the previous sub-tile's Q/dO are no longer read
      load_rows<T>(qs, dim, TQ, p.q, be.q + w.h * p.q_hs, p.q_ts, q0, qn, dim);
      load_rows<T>(dos, dim, TQ, p.dout, be.dout + w.h * p.do_hs, p.do_ts, q0, qn, dim);
      float lse2[kRowsPerWarp], rowdot[kRowsPerWarp], acc[kRowsPerWarp][CHUNKS];
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const int row = warp * kRowsPerWarp + r;
        lse2[r] = row < qn ? p.row_lse2[rbase + q0 + row] : pos_inf();
        rowdot[r] = row < qn ? p.row_dot[rbase + q0 + row] : 0.0F;
#pragma unroll
        for (int c = 0; c < CHUNKS; ++c) acc[r][c] = 0.0F;
      }
      for (std::int64_t e = w.begin; e < w.end; ++e) {
        const int kt = p.sched.key_tile[ebase + e];
        const int bits_index = p.sched.row_bits[ebase + e];
        const int tile_end = min((kt + 1) * tile_k, be.skv);
        for (int k0 = kt * tile_k; k0 < tile_end; k0 += TK) {
          const int jn = min(TK, tile_end - k0);
          __syncthreads();
          load_rows<T>(ks, pitch, TK, p.k, be.k + kvh * p.k_hs, p.k_ts, k0, jn, dim);
          load_rows<T>(vs, pitch, TK, p.v, be.v + kvh * p.v_hs, p.v_ts, k0, jn, dim);
          __syncthreads();
          const std::uint64_t word =
              mask_word(p, se, bits_index, lane, jn, k0 - kt * tile_k) >> qshift;
#pragma unroll
          for (int r = 0; r < kRowsPerWarp; ++r) {
            const int row = warp * kRowsPerWarp + r;
            float dot;
            float dp;
            pair_dots(qs + row * dim, dos + row * dim, ks + lane * pitch, vs + lane * pitch, dim,
                      dot, dp);
            const bool visible = ((word >> row) & 1U) != 0 && row < qn;
            float prob;
            float ds;
            pair_gradient(p, dot, dp, lse2[r], rowdot[r], visible, prob, ds);
            for (int j = 0; j < jn; ++j) {
              const float dsj = __shfl_sync(kFull, ds, j);
              if (dsj == 0.0F) continue;
#pragma unroll
              for (int c = 0; c < CHUNKS; ++c) {
                const int d = lane + 32 * c;
                if (d < dim) acc[r][c] = fmaf(dsj, ks[j * pitch + d], acc[r][c]);
              }
            }
          }
        }
      }
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const int row = warp * kRowsPerWarp + r;
        if (row >= qn) continue;
        T* dqrow = static_cast<T*>(p.dq) + be.dq + static_cast<std::int64_t>(q0 + row) * p.dq_ts +
                   w.h * p.dq_hs;
#pragma unroll
        for (int c = 0; c < CHUNKS; ++c) {
          const int d = lane + 32 * c;
          if (d < dim) dqrow[d] = from_float<T>(acc[r][c]);
        }
      }
    }
  });
}

/// The generic backward: dK/dV over p.col_work, then dQ over p.row_work, in one launch (the two
/// lists are independent; a block that runs out of dK/dV items takes dQ items). Standing in for
/// the tensor-core kernels (p.nonfinite set), it runs only when the prologue found an Inf/NaN.
template <class T, int CHUNKS>
__global__ void __launch_bounds__(kSimtThreads) backward_kernel(const AttnParams p) {
  if (p.nonfinite != nullptr && *p.nonfinite == 0) return;
  LONGATTN_DYNAMIC_SHARED(float, smem);
  dkdv_items<T, CHUNKS>(p, smem);
  dq_items<T, CHUNKS>(p, smem);
}

// ---------------------------------------------------------------------------------------------
// Dispatch over (input type, dims per lane)
// ---------------------------------------------------------------------------------------------

template <template <class, int> class Fn, class... Args>
cudaError_t dispatch(const AttnParams& p, Args&&... args) {
  auto by_chunks = [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    if (p.dim <= 32) return Fn<T, 1>::run(p, args...);
    if (p.dim <= 64) return Fn<T, 2>::run(p, args...);
    if (p.dim <= 128) return Fn<T, 4>::run(p, args...);
    return Fn<T, 8>::run(p, args...);
  };
  switch (p.elem) {
    case ElemType::kF32:
      return by_chunks(float{});
    case ElemType::kF16:
      return by_chunks(__half{});
    case ElemType::kBF16:
      return by_chunks(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

template <class T, int CHUNKS>
struct ForwardLaunch {
  static cudaError_t run(const AttnParams& p, int grid, cudaStream_t stream) {
    const std::size_t smem = simt_forward_smem(p.dim);
    if (cudaError_t e = allow_dynamic_smem(forward_kernel<T, CHUNKS>, smem); e != cudaSuccess)
      return e;
    launch_kernel(forward_kernel<T, CHUNKS>, grid, kSimtThreads, smem, stream, p);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    return launch_merge(p, stream);
  }
};

template <class T, int CHUNKS>
struct PrologueLaunch {
  static cudaError_t run(const AttnParams& p, cudaStream_t stream) {
    const std::int64_t scanned = p.nonfinite != nullptr ? p.packed_kv_rows : 0;
    if (p.packed_rows > 0 || scanned > 0) {
      launch_kernel(row_constants_kernel<T>, packed_row_blocks(std::max(p.packed_rows, scanned)),
                    32 * kRowWarps, 0, stream, p);
    }
    if (p.dsink != nullptr && p.hq > 0)
      launch_kernel(sink_grad_kernel, p.hq, kSimtThreads, 0, stream, p);
    return cudaGetLastError();
  }
};

template <class T, int CHUNKS>
struct MergeLaunch {
  static cudaError_t run(const AttnParams& p, cudaStream_t stream) {
    if (p.num_merge_work == 0) return cudaSuccess;
    launch_kernel(merge_kernel<T, CHUNKS>, min(p.num_merge_work, 65535), kSimtThreads, 0, stream,
                  p);
    return cudaGetLastError();
  }
};

template <class T, int CHUNKS>
struct ForwardOccupancy {
  static cudaError_t run(const AttnParams& p, int* blocks) {
    const std::size_t smem = simt_forward_smem(p.dim);
    if (cudaError_t e = allow_dynamic_smem(forward_kernel<T, CHUNKS>, smem); e != cudaSuccess)
      return e;
    return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, forward_kernel<T, CHUNKS>,
                                                         kSimtThreads, smem);
  }
};

template <class T, int CHUNKS>
struct BackwardOccupancy {
  static cudaError_t run(const AttnParams& p, int* blocks) {
    const std::size_t smem = simt_backward_smem(p.dim);
    if (cudaError_t e = allow_dynamic_smem(backward_kernel<T, CHUNKS>, smem); e != cudaSuccess)
      return e;
    return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, backward_kernel<T, CHUNKS>,
                                                         kSimtThreads, smem);
  }
};

/// The generic backward kernel alone (the prologue is the caller's).
template <class T, int CHUNKS>
struct BackwardLaunch {
  static cudaError_t run(const AttnParams& p, int grid, cudaStream_t stream) {
    const std::size_t smem = simt_backward_smem(p.dim);
    if (cudaError_t e = allow_dynamic_smem(backward_kernel<T, CHUNKS>, smem); e != cudaSuccess)
      return e;
    launch_kernel(backward_kernel<T, CHUNKS>, grid, kSimtThreads, smem, stream, p);
    return cudaGetLastError();
  }
};

int occupancy_or_zero(cudaError_t status, int blocks) {
  if (status == cudaSuccess) return blocks;
  (void)cudaGetLastError();  // not sticky: the caller reports "cannot be resident"
  return 0;
}

}  // namespace

std::size_t simt_forward_smem(int dim) {
  return sizeof(float) * static_cast<std::size_t>(TQ * dim + TK * (dim + 1) + TK * dim);
}

std::size_t simt_backward_smem(int dim) {
  const auto d = static_cast<std::size_t>(dim);
  const std::size_t dkdv = 2 * TK * (d + 1) + 2 * TQ * d + 2 * TQ * TK + 2 * TQ;
  const std::size_t dq = 2 * TQ * d + 2 * TK * (d + 1);
  return sizeof(float) * (dkdv > dq ? dkdv : dq);
}

int simt_forward_occupancy(const AttnParams& p) {
  int blocks = 0;
  // Two statements: the status must be known before `blocks` is read.
  const cudaError_t status = dispatch<ForwardOccupancy>(p, &blocks);
  return occupancy_or_zero(status, blocks);
}

int simt_backward_occupancy(const AttnParams& p) {
  int blocks = 0;
  // Two statements: the status must be known before `blocks` is read.
  const cudaError_t status = dispatch<BackwardOccupancy>(p, &blocks);
  return occupancy_or_zero(status, blocks);
}

cudaError_t launch_simt_forward(const AttnParams& p, int grid, cudaStream_t stream) {
  return dispatch<ForwardLaunch>(p, grid, stream);
}

cudaError_t launch_merge(const AttnParams& p, cudaStream_t stream) {
  return dispatch<MergeLaunch>(p, stream);
}

cudaError_t launch_backward_prologue(const AttnParams& p, cudaStream_t stream) {
  return dispatch<PrologueLaunch>(p, stream);
}

cudaError_t launch_simt_backward(const AttnParams& p, int grid, cudaStream_t stream) {
  // Sub-tiles of 16 x 32, one bitmask word per key row.
  if (p.sched.tile_q % TQ != 0 || p.sched.tile_q > 64 || p.sched.tile_k % TK != 0 ||
      p.sched.words_per_row != 1) {
    return cudaErrorInvalidValue;
  }
  if (p.nonfinite == nullptr) {
    if (cudaError_t e = launch_backward_prologue(p, stream); e != cudaSuccess) return e;
  }
  return dispatch<BackwardLaunch>(p, grid, stream);
}

}  // namespace longattn::detail::cuda
