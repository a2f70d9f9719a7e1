// SPDX-License-Identifier: Apache-2.0
// Tensor-core backward for bf16/fp16 (sm_80+), FlashAttention-2 style. The row constants D_i, lse
// and dsink come from the generic prologue. Two modes:
//
//   fast (default): one dK/dV pass that also adds each tile's dQ = dS K into an fp32 accumulator
//     with atomics (5 tile products, as FA2), then a conversion of that accumulator to dQ. The
//     order of the atomic adds varies from run to run, so dQ may differ in the last bits.
//   deterministic (options.deterministic): the dK/dV pass, then a dQ pass that recomputes S and
//     dP per query tile (7 tile products), with no atomics: the same bits on every run.
//
//   dK/dV pass: a block owns one key tile of one (batch, KV head): 64 keys (4 warps), or in the
//     fast mode 128 (8 warps: each Q/dO tile loaded and each dQ row reduced once per 128 keys,
//     half the L2 traffic, as FA2's 64 x 128 backward); warp w owns keys 16w..16w+15. For each
//     query head of the group and each 64-row query tile of the column schedule: S^T = K Q^T and
//     dP^T = V dO^T (keys are the mma rows, so P^T and dS^T sit in the accumulator layout that
//     re-packs as the A operand), then dV += P^T dO and dK += dS^T Q with dO and Q read by
//     ldmatrix.trans. Q/dO tiles are double buffered. Fast mode: dS^T goes to shared memory, and
//     warp w adds the dQ rows 16(w % 4)..+15 of the query tile (with 8 warps, column half w / 4),
//     dS K over the tile's keys, to the fp32 accumulator.
//   dQ pass (deterministic mode): a block owns one 64-row query tile; warp w owns rows
//     16w..16w+15. Over the row schedule: S = Q K^T, dP = dO V^T, dS, dQ += dS K (K by
//     ldmatrix.trans). K/V double buffered.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>

#include "cuda/common/device.cuh"
#include "cuda/common/ptx.cuh"
#include "cuda/kernels.hpp"
#include "cuda/sm80/forward_mma.cuh"

namespace longattn::detail::cuda {

template <int D, bool kAtomicDq = false, int kKeys = kMmaTileK>
struct BackwardMmaTraits {
  static constexpr int kWarps = kKeys / 16;  // warp w owns keys 16w..16w+15 of the dK/dV tile
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlockM = kMmaTileQ;  // query rows of a tile
  static constexpr int kBlockN = kKeys;      // keys of a tile
  static constexpr int kPitch = D + 8;
  static constexpr int kDsPitch = kBlockM + 8;  // dS^T tile [key][query] (fast mode)
  // dK/dV pass: resident K/V (kBlockN rows each) and double-buffered Q/dO (kBlockM rows each),
  // plus row constants; the fast pass adds the dS^T tile. The dQ pass (64 x 64) holds the same
  // six 64-row tiles the other way round.
  static constexpr std::size_t kSmemBytes =
      sizeof(std::uint16_t) * static_cast<std::size_t>((2 * kBlockN + 4 * kBlockM) * kPitch) +
      sizeof(float) * 4 * kBlockM +
      (kAtomicDq ? sizeof(std::uint16_t) * static_cast<std::size_t>(kBlockN * kDsPitch) : 0);
  static_assert(kBlockM == 64 && D % 16 == 0 && D <= 128, "tile shapes");
  // 128-key tiles (8 warps) exist in the fast mode only; there the warps split dS K's columns
  // in two halves of whole n16 pairs, hence D % 32.
  static_assert(kKeys == 64 || (kKeys == kMmaWideTileK && kAtomicDq && D % 32 == 0),
                "key tile: 64, or 128 in the fast mode with D % 32 == 0");
};

/// n8 column blocks per dS K chunk: the largest even divisor of D / 8 up to 8 (D % 16 == 0, so
/// 2 always divides), so the chunks tile D exactly (D = 80, 96, 112 included).
constexpr int dq_chunk_blocks(int blocks) {
  for (int c = 8; c > 2; c -= 2) {
    if (blocks % c == 0) return c;
  }
  return 2;
}

/// Fast mode: dQ[q0 .. q0 + 63] += dS K over one 64 x kKeys tile, added to the fp32 accumulator
/// (row `row0` of p.dq_accum is the tile's first query). Warp w owns query rows 16(w % 4)..+15
/// and, with 8 warps, column half w / 4 of D. dS comes from the dS^T tile in shared memory by
/// ldmatrix.trans, K from its tile as in the dQ pass. Columns go in chunks of up to 64 to keep
/// the accumulator small next to the live dK/dV registers.
template <class T, int D, int kKeys>
__device__ __forceinline__ void add_tile_dq(const AttnParams& p, const T* dss, const T* ks,
                                            std::int64_t row0, int qn) {
  using Tr = BackwardMmaTraits<D, true, kKeys>;
  constexpr int P = Tr::kPitch;
  constexpr int DP = Tr::kDsPitch;
  constexpr int kSplit = Tr::kWarps / 4;  // warps sharing a 16-row group, one column part each
  constexpr int kCols = D / kSplit;
  constexpr int kChunk = dq_chunk_blocks(kCols / 8);  // n8 blocks per chunk
  static_assert(kCols % 16 == 0 && (kCols / 8) % kChunk == 0 && kChunk % 2 == 0,
                "chunks tile the warp's columns");
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  // (With 4 warps written without % and /: the compiler cannot bound threadIdx.x by itself.)
  const int rows16 = kSplit == 1 ? warp * 16 : (warp % 4) * 16;
  const int col0 = kSplit == 1 ? 0 : (warp / 4) * kCols;
  const int row = rows16 + (lane >> 2);
  const int tq = lane & 3;
#pragma unroll
  for (int c0 = 0; c0 < kCols / 8; c0 += kChunk) {
    float acc[kChunk][4];
#pragma unroll
    for (int j = 0; j < kChunk; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0F;
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      std::uint32_t a[4];
      ldmatrix_x4_trans(a, smem_addr(dss + (kk * 16 + (lane / 16) * 8 + lane % 8) * DP + rows16 +
                                     ((lane / 8) & 1) * 8));
#pragma unroll
      for (int j = 0; j < kChunk; j += 2) {
        std::uint32_t b[4];
        ldmatrix_x4_trans(b, smem_addr(ks + (kk * 16 + (lane % 8) + ((lane / 8) & 1) * 8) * P +
                                       col0 + (c0 + j) * 8 + (lane / 16) * 8));
        mma_16816<T>(acc[j], a, b[0], b[1]);
        mma_16816<T>(acc[j + 1], a, b[2], b[3]);
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      if (row + r * 8 >= qn) continue;
      float* dst = p.dq_accum + (row0 + row + r * 8) * D + col0 + c0 * 8 + tq * 2;
#pragma unroll
      for (int j = 0; j < kChunk; ++j) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        // One vector reduction per column pair (sm_90): half the atomic instructions.
        atomicAdd(reinterpret_cast<float2*>(dst + j * 8),
                  make_float2(acc[j][2 * r], acc[j][2 * r + 1]));
#else
        atomicAdd(dst + j * 8, acc[j][2 * r]);
        atomicAdd(dst + j * 8 + 1, acc[j][2 * r + 1]);
#endif
      }
    }
  }
}

/// The query bits of this thread's keys key0 and key0 + 8 in the tile's bitmask at
/// `bits_index` of schedule slot `se` (all ones for a FULL tile, -1; zero past jn keys), for
/// key_tile_gradients. Called before the tile's S^T product, whose instructions then hide the
/// loads' latency.
template <int BN>
__device__ __forceinline__ void load_key_words(const AttnParams& p, const SlotEntry& se,
                                               int bits_index, int key0, int jn,
                                               std::uint64_t (&words)[2]) {
  words[0] = words[1] = ~0ULL;
  if (bits_index >= 0) {
    const std::uint64_t* tile_bits =
        p.sched.bits + se.bits + static_cast<std::int64_t>(bits_index) * BN;
    words[0] = key0 < jn ? tile_bits[key0] : 0ULL;
    words[1] = key0 + 8 < jn ? tile_bits[key0 + 8] : 0ULL;
  }
}

/// P^T and dS^T in place of S^T and dP^T for one key tile of the dK/dV pass: this thread's
/// keys key0 and key0 + 8 (the accumulator rows) against the BM queries of the tile (NB n8
/// blocks; lse2 / rowdot hold the tile's row constants), the tile's bitmask index
/// `bits_index` (-1: FULL) and the keys' words of it (load_key_words), jn keys and qn queries
/// valid.
template <int BM, int BN, int NB>
__device__ __forceinline__ void key_tile_gradients(const AttnParams& p, int bits_index,
                                                   const std::uint64_t (&words)[2],
                                                   const float* lse2, const float* rowdot, int key0,
                                                   int tq, int jn, int qn, float (&st)[NB][4],
                                                   float (&dpt)[NB][4]) {
  static_assert(BM == 64 && NB == BM / 8, "one 64-bit word of query bits per key");
  if (qn == BM && plain_full_tile(p, bits_index, jn, BN)) {
    // FULL tile of full query rows: no mask. (A ragged last query tile keeps the mask: its
    // zero rows times an Inf in K or V would be NaN in P^T / dS^T, hence in dK / dV.)
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
      const float2 l2 = *reinterpret_cast<const float2*>(lse2 + nb * 8 + tq * 2);
      const float2 rd = *reinterpret_cast<const float2*>(rowdot + nb * 8 + tq * 2);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        plain_pair_gradient(st[nb][e], dpt[nb][e], (e & 1) != 0 ? l2.y : l2.x,
                            (e & 1) != 0 ? rd.y : rd.x, p.scale * kLog2eF, p.scale, st[nb][e],
                            dpt[nb][e]);
      }
    }
    return;
  }
#pragma unroll
  for (int nb = 0; nb < NB; ++nb) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int key = key0 + (e >> 1) * 8;
      const int q = nb * 8 + tq * 2 + (e & 1);
      const bool visible = key < jn && q < qn && ((words[e >> 1] >> q) & 1U) != 0;
      pair_gradient<true>(p, st[nb][e], dpt[nb][e], lse2[q], rowdot[q], visible, st[nb][e],
                          dpt[nb][e]);
    }
  }
}

/// Starts the copy of a query tile's row constants into `rows` (lse2 of its BM rows, then their
/// rowdot) as 4-byte cp.async in the caller's open group: a global load there would hold the
/// warps that make it until the data arrives, while the others wait at the next barrier. Rows
/// past qn get +inf / 0 by plain stores. `row0` indexes the tile's first row in p.row_lse2.
template <int BM, int THREADS>
__device__ __forceinline__ void load_row_constants_async(float* rows, const AttnParams& p,
                                                         std::int64_t row0, int qn) {
  static_assert(THREADS >= BM, "one row per thread");
  const int q = static_cast<int>(threadIdx.x);
  if (q < qn) {
    cp_async_4(smem_addr(rows + q), p.row_lse2 + row0 + q, true);
    cp_async_4(smem_addr(rows + BM + q), p.row_dot + row0 + q, true);
  } else if (q < BM) {
    rows[q] = pos_inf();
    rows[BM + q] = 0.0F;
  }
}

/// Writes this thread's rows of dK and dV (keys `key` and key + 8 of KV head kvh; `left` of
/// them in the sequence from `key` on) from the C-layout accumulators.
template <class T, int DB>
__device__ __forceinline__ void store_key_rows(const AttnParams& p, const BatchEntry& be, int kvh,
                                               int key, int left, int tq, const float (&dk)[DB][4],
                                               const float (&dv)[DB][4]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (r * 8 >= left) continue;
    const std::int64_t j = key + r * 8;
    T* dkrow = static_cast<T*>(p.dk) + be.dk + j * p.dk_ts + kvh * p.dk_hs;
    T* dvrow = static_cast<T*>(p.dv) + be.dv + j * p.dv_ts + kvh * p.dv_hs;
#pragma unroll
    for (int db = 0; db < DB; ++db) {
      *reinterpret_cast<std::uint32_t*>(dkrow + db * 8 + tq * 2) =
          pack_pair<T>(dk[db][2 * r], dk[db][2 * r + 1]);
      *reinterpret_cast<std::uint32_t*>(dvrow + db * 8 + tq * 2) =
          pack_pair<T>(dv[db][2 * r], dv[db][2 * r + 1]);
    }
  }
}

/// dK/dV over p.col_work (key tiles of kKeys); with kAtomicDq also dQ into p.dq_accum (fp32,
/// packed rows x D).
template <class T, int D, bool kAtomicDq, int kKeys = kMmaTileK>
__global__ void __launch_bounds__(BackwardMmaTraits<D, kAtomicDq, kKeys>::kThreads)
    dkdv_mma_kernel(const AttnParams p) {
  using Tr = BackwardMmaTraits<D, kAtomicDq, kKeys>;
  constexpr int BM = Tr::kBlockM;
  constexpr int BN = Tr::kBlockN;
  constexpr int P = Tr::kPitch;
  constexpr int NB = BM / 8;  // n8 blocks over queries
  constexpr int DB = D / 8;
  LONGATTN_DYNAMIC_SHARED(unsigned char, smem_raw);
  T* ks = reinterpret_cast<T*>(smem_raw);                   // [BN][P]
  T* vs = ks + BN * P;                                      // [BN][P]
  T* qs = vs + BN * P;                                      // [2][BM][P]
  T* dos = qs + 2 * BM * P;                                 // [2][BM][P]
  auto* rows = reinterpret_cast<float*>(dos + 2 * BM * P);  // [2][lse2 BM | rowdot BM]
  T* dss = reinterpret_cast<T*>(rows + 4 * BM);             // [BN][kDsPitch] (fast mode)
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int group = lane >> 2;
  const int tq = lane & 3;

  // Inf/NaN in the inputs: no items here, the generic kernels run instead (their work counters
  // are others). NOTE: an early return instead costs 3-4x the spill (ptxas, sm_90, D = 128).
  const int items = exact_path_taken(p) ? 0 : p.num_col_work;
  for_each_work_item(p.work_counter + 1, items, [&](int item) {
    const ColWork w = p.col_work[item];
    const BatchEntry be = p.batch[w.b];
    const int k0 = w.kt * BN;
    const int jn = min(BN, be.skv - k0);
    load_tile_async<T, D, Tr::kThreads>(ks, BN, p.k, be.k + w.kvh * p.k_hs, p.k_ts, k0, jn);
    load_tile_async<T, D, Tr::kThreads>(vs, BN, p.v, be.v + w.kvh * p.v_hs, p.v_ts, k0, jn);
    cp_async_commit();

    float dk[DB][4], dv[DB][4];
#pragma unroll
    for (int db = 0; db < DB; ++db) {
#pragma unroll
      for (int e = 0; e < 4; ++e) dk[db][e] = dv[db][e] = 0.0F;
    }
    const int key0 = warp * 16 + group;  // key rows key0 and key0 + 8 of the tile

    for (int h = w.kvh * p.group; h < (w.kvh + 1) * p.group; ++h) {
      const SlotRef sr = schedule_of(p, w.b, h);
      const SlotEntry& se = sr.entry;
      const std::int64_t ebase = sr.base;
      const std::int64_t c0 = p.sched.col_offsets[se.col_offsets + w.kt];
      const std::int64_t c1 = p.sched.col_offsets[se.col_offsets + w.kt + 1];
      const std::int64_t rbase = be.row * p.hq + static_cast<std::int64_t>(h) * be.sq;
      auto issue_q = [&](std::int64_t c, int buf) {
        const int q0 = p.sched.q_tile[ebase + c] * BM;
        const int qn = min(BM, be.sq - q0);
        load_tile_async<T, D, Tr::kThreads>(qs + buf * BM * P, BM, p.q, be.q + h * p.q_hs, p.q_ts,
                                            q0, qn);
        load_tile_async<T, D, Tr::kThreads>(dos + buf * BM * P, BM, p.dout, be.dout + h * p.do_hs,
                                            p.do_ts, q0, qn);
        load_row_constants_async<BM, Tr::kThreads>(rows + buf * 2 * BM, p, rbase + q0, qn);
        cp_async_commit();
      };
      if (c0 < c1) issue_q(c0, 0);
      for (std::int64_t c = c0; c < c1; ++c) {
        const int buf = static_cast<int>((c - c0) & 1);
        await_tile(static_cast<int>(c - c0), static_cast<int>(c1 - c0),
                   [&](int i, int next_buf) { issue_q(c0 + i, next_buf); });
        const int q0 = p.sched.q_tile[ebase + c] * BM;
        const int qn = min(BM, be.sq - q0);
        const int bits_index = p.sched.col_bits[ebase + c];
        const T* qb = qs + buf * BM * P;
        const T* dob = dos + buf * BM * P;
        const float* lse2 = rows + buf * 2 * BM;
        const float* rowdot = lse2 + BM;

        std::uint64_t words[2];
        load_key_words<BN>(p, se, bits_index, key0, jn, words);

        // ---- S^T = K Q^T and dP^T = V dO^T (16 keys x 64 queries per warp) ----
        float st[NB][4], dpt[NB][4];
#pragma unroll
        for (int nb = 0; nb < NB; ++nb) {
#pragma unroll
          for (int e = 0; e < 4; ++e) st[nb][e] = dpt[nb][e] = 0.0F;
        }
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          std::uint32_t ak[4], av[4];
          const int a_off = (warp * 16 + (lane % 16)) * P + kk * 16 + (lane / 16) * 8;
          ldmatrix_x4(ak, smem_addr(ks + a_off));
          ldmatrix_x4(av, smem_addr(vs + a_off));
#pragma unroll
          for (int nb = 0; nb < NB; nb += 2) {
            const int b_off =
                (nb * 8 + (lane % 8) + (lane / 16) * 8) * P + kk * 16 + ((lane / 8) & 1) * 8;
            std::uint32_t b[4];
            ldmatrix_x4(b, smem_addr(qb + b_off));
            mma_16816<T>(st[nb], ak, b[0], b[1]);
            mma_16816<T>(st[nb + 1], ak, b[2], b[3]);
            ldmatrix_x4(b, smem_addr(dob + b_off));
            mma_16816<T>(dpt[nb], av, b[0], b[1]);
            mma_16816<T>(dpt[nb + 1], av, b[2], b[3]);
          }
        }

        // ---- P^T and dS^T in place ----
        key_tile_gradients<BM, BN>(p, bits_index, words, lse2, rowdot, key0, tq, jn, qn, st, dpt);

        // ---- dV += P^T dO, dK += dS^T Q (k = the 64 queries) ----
#pragma unroll
        for (int kk = 0; kk < BM / 16; ++kk) {
          const std::uint32_t ap[4] = {pack_pair<T>(st[2 * kk][0], st[2 * kk][1]),
                                       pack_pair<T>(st[2 * kk][2], st[2 * kk][3]),
                                       pack_pair<T>(st[2 * kk + 1][0], st[2 * kk + 1][1]),
                                       pack_pair<T>(st[2 * kk + 1][2], st[2 * kk + 1][3])};
          const std::uint32_t ads[4] = {pack_pair<T>(dpt[2 * kk][0], dpt[2 * kk][1]),
                                        pack_pair<T>(dpt[2 * kk][2], dpt[2 * kk][3]),
                                        pack_pair<T>(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]),
                                        pack_pair<T>(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3])};
#pragma unroll
          for (int db = 0; db < DB; db += 2) {
            const int t_off =
                (kk * 16 + (lane % 8) + ((lane / 8) & 1) * 8) * P + db * 8 + (lane / 16) * 8;
            std::uint32_t b[4];
            ldmatrix_x4_trans(b, smem_addr(dob + t_off));
            mma_16816<T>(dv[db], ap, b[0], b[1]);
            mma_16816<T>(dv[db + 1], ap, b[2], b[3]);
            ldmatrix_x4_trans(b, smem_addr(qb + t_off));
            mma_16816<T>(dk[db], ads, b[0], b[1]);
            mma_16816<T>(dk[db + 1], ads, b[2], b[3]);
          }
          if constexpr (kAtomicDq) {  // dS^T rows key0 and key0 + 8, query pairs of this kk
            constexpr int DP = Tr::kDsPitch;
            const int qc = kk * 16 + tq * 2;
            auto* d0 = reinterpret_cast<std::uint32_t*>(dss + key0 * DP + qc);
            auto* d1 = reinterpret_cast<std::uint32_t*>(dss + (key0 + 8) * DP + qc);
            d0[0] = ads[0];
            d1[0] = ads[1];
            d0[4] = ads[2];  // queries qc + 8, qc + 9
            d1[4] = ads[3];
          }
        }
        if constexpr (kAtomicDq) {
          __syncthreads();  // the whole dS^T tile is in shared memory
          add_tile_dq<T, D, kKeys>(p, dss, ks, rbase + q0, qn);
        }
        __syncthreads();  // this buffer is refilled by the prefetch of iteration c + 2
      }
    }
    cp_async_wait<0>();  // K/V alone were in flight when no query tile visits this key tile

    store_key_rows<T>(p, be, w.kvh, k0 + key0, jn - key0, tq, dk, dv);
  });
}

template <class T, int D>
__global__ void __launch_bounds__(BackwardMmaTraits<D>::kThreads)
    dq_mma_kernel(const AttnParams p) {
  using Tr = BackwardMmaTraits<D>;
  constexpr int BM = Tr::kBlockM;
  constexpr int BN = Tr::kBlockN;
  constexpr int P = Tr::kPitch;
  constexpr int NB = BN / 8;
  constexpr int DB = D / 8;
  LONGATTN_DYNAMIC_SHARED(unsigned char, smem_raw);
  T* qs = reinterpret_cast<T*>(smem_raw);  // [BM][P]
  T* dos = qs + BM * P;                    // [BM][P]
  T* ks = dos + BM * P;                    // [2][BN][P]
  T* vs = ks + 2 * BN * P;                 // [2][BN][P]
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int group = lane >> 2;
  const int tq = lane & 3;

  const int items = exact_path_taken(p) ? 0 : p.num_row_work;  // as in dkdv_mma_kernel
  for_each_work_item(p.work_counter, items, [&](int item) {
    const RowWork w = p.row_work[item];
    const BatchEntry be = p.batch[w.b];
    const int kvh = w.h / p.group;
    const int q0 = w.qt * BM;
    const int qn = min(BM, be.sq - q0);
    const SlotRef sr = schedule_of(p, w.b, w.h);
    const SlotEntry& se = sr.entry;
    const std::int64_t ebase = sr.base;
    const int entries = static_cast<int>(w.end - w.begin);
    const std::int64_t rbase = be.row * p.hq + static_cast<std::int64_t>(w.h) * be.sq;
    auto issue_kv = [&](int i, int buf) {
      issue_kv_tile<T, D, BN, Tr::kThreads>(ks, vs, buf, p, be, kvh,
                                            p.sched.key_tile[ebase + w.begin + i]);
    };
    load_tile_async<T, D, Tr::kThreads>(qs, BM, p.q, be.q + w.h * p.q_hs, p.q_ts, q0, qn);
    load_tile_async<T, D, Tr::kThreads>(dos, BM, p.dout, be.dout + w.h * p.do_hs, p.do_ts, q0, qn);
    cp_async_commit();
    if (entries > 0) issue_kv(0, 0);

    const int row0 = warp * 16 + group;
    float lse2[2], rowdot[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = row0 + r * 8;
      lse2[r] = row < qn ? p.row_lse2[rbase + q0 + row] : pos_inf();
      rowdot[r] = row < qn ? p.row_dot[rbase + q0 + row] : 0.0F;
    }
    float dq[DB][4];
#pragma unroll
    for (int db = 0; db < DB; ++db) dq[db][0] = dq[db][1] = dq[db][2] = dq[db][3] = 0.0F;

    for (int i = 0; i < entries; ++i) {
      const int buf = i & 1;
      await_tile(i, entries, issue_kv);
      const int kt = p.sched.key_tile[ebase + w.begin + i];
      const int bits_index = p.sched.row_bits[ebase + w.begin + i];
      const int jn = min(BN, be.skv - kt * BN);
      const T* kb = ks + buf * BN * P;
      const T* vb = vs + buf * BN * P;
      // This thread's row spans of a PARTIAL tile, loaded here so that the products hide the
      // loads' latency.
      std::uint32_t span[2] = {kRowSpanUseBits, kRowSpanUseBits};
      if (bits_index >= 0) {
        const std::uint32_t* tile_spans =
            p.sched.row_spans + se.spans + static_cast<std::int64_t>(bits_index) * p.sched.tile_q;
        span[0] = tile_spans[row0];
        span[1] = tile_spans[row0 + 8];
      }

      // ---- S = Q K^T, dP = dO V^T ----
      float s[NB][4], dp[NB][4];
#pragma unroll
      for (int nb = 0; nb < NB; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[nb][e] = dp[nb][e] = 0.0F;
      }
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        std::uint32_t aq[4], ado[4];
        const int a_off = (warp * 16 + (lane % 16)) * P + kk * 16 + (lane / 16) * 8;
        ldmatrix_x4(aq, smem_addr(qs + a_off));
        ldmatrix_x4(ado, smem_addr(dos + a_off));
#pragma unroll
        for (int nb = 0; nb < NB; nb += 2) {
          const int b_off =
              (nb * 8 + (lane % 8) + (lane / 16) * 8) * P + kk * 16 + ((lane / 8) & 1) * 8;
          std::uint32_t b[4];
          ldmatrix_x4(b, smem_addr(kb + b_off));
          mma_16816<T>(s[nb], aq, b[0], b[1]);
          mma_16816<T>(s[nb + 1], aq, b[2], b[3]);
          ldmatrix_x4(b, smem_addr(vb + b_off));
          mma_16816<T>(dp[nb], ado, b[0], b[1]);
          mma_16816<T>(dp[nb + 1], ado, b[2], b[3]);
        }
      }

      // ---- dS in place of dP ----
      if (plain_full_tile(p, bits_index, jn, BN)) {
        // FULL tile: no mask. Rows past qn have lse2 = +inf, so P = dS = 0.
#pragma unroll
        for (int nb = 0; nb < NB; ++nb) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            float prob;
            plain_pair_gradient(s[nb][e], dp[nb][e], lse2[e >> 1], rowdot[e >> 1],
                                p.scale * kLog2eF, p.scale, prob, dp[nb][e]);
          }
        }
      } else {
        auto gradients = [&](auto&& visible) {
#pragma unroll
          for (int nb = 0; nb < NB; ++nb) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              float prob;
              pair_gradient<true>(p, s[nb][e], dp[nb][e], lse2[e >> 1], rowdot[e >> 1],
                                  visible(e >> 1, nb * 8 + tq * 2 + (e & 1)), prob, dp[nb][e]);
            }
          }
        };
        // A PARTIAL tile whose rows each see one run of keys: a compare per score (every entry
        // of a tile's spans agrees on that, so the branch is block-uniform). Else its bitmask,
        // one load per key. (The spans were loaded before the products.)
        if (span[0] != kRowSpanUseBits) {
          int lo[2];
          unsigned width[2];
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            lo[r] = static_cast<int>(row_span_lo(span[r]));
            width[r] = row0 + r * 8 < qn ? row_span_width(span[r]) : 0U;
          }
          gradients([&](int r, int key) { return static_cast<unsigned>(key - lo[r]) < width[r]; });
        } else {
          const std::uint64_t* tile_bits =
              bits_index >= 0 ? p.sched.bits + se.bits + static_cast<std::int64_t>(bits_index) * BN
                              : nullptr;
          gradients([&](int r, int key) {
            const int row = row0 + r * 8;
            bool visible = key < jn && row < qn;
            if (visible && tile_bits != nullptr) visible = ((tile_bits[key] >> row) & 1U) != 0;
            return visible;
          });
        }
      }

      // ---- dQ += dS K (k = the 64 keys; K by ldmatrix.trans) ----
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        const std::uint32_t a[4] = {pack_pair<T>(dp[2 * kk][0], dp[2 * kk][1]),
                                    pack_pair<T>(dp[2 * kk][2], dp[2 * kk][3]),
                                    pack_pair<T>(dp[2 * kk + 1][0], dp[2 * kk + 1][1]),
                                    pack_pair<T>(dp[2 * kk + 1][2], dp[2 * kk + 1][3])};
#pragma unroll
        for (int db = 0; db < DB; db += 2) {
          std::uint32_t b[4];
          ldmatrix_x4_trans(b, smem_addr(kb + (kk * 16 + (lane % 8) + ((lane / 8) & 1) * 8) * P +
                                         db * 8 + (lane / 16) * 8));
          mma_16816<T>(dq[db], a, b[0], b[1]);
          mma_16816<T>(dq[db + 1], a, b[2], b[3]);
        }
      }
      __syncthreads();
    }
    cp_async_wait<0>();

#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = row0 + r * 8;
      if (row >= qn) continue;
      T* dqrow = static_cast<T*>(p.dq) + be.dq + static_cast<std::int64_t>(q0 + row) * p.dq_ts +
                 w.h * p.dq_hs;
#pragma unroll
      for (int db = 0; db < DB; ++db) {
        *reinterpret_cast<std::uint32_t*>(dqrow + db * 8 + tq * 2) =
            pack_pair<T>(dq[db][2 * r], dq[db][2 * r + 1]);
      }
    }
  });
}

/// Where column c of packed row r sits in the Hopper backward's dQ accumulator: the row's
/// 32-byte units (8 floats) permuted, unit u at u ^ (r % 4), so that the kernel's staging stores
/// (4 consecutive rows per half-warp) hit distinct banks while each tile stays one contiguous
/// block for its bulk add (sm90/backward_wgmma.cuh).
__host__ __device__ __forceinline__ int dq_swizzled_column(std::int64_t r, int c) {
  return (((c >> 3) ^ static_cast<int>(r & 3)) << 3) | (c & 7);
}

/// Fast mode: dQ = the fp32 accumulator in the input type, one warp per packed row;
/// kRowSwizzled: the Hopper backward's layout (dq_swizzled_column). That instantiation lives in
/// the sm_90a-only objects; a kernel in objects of two architectures would be registered twice,
/// and the runtime could pick the copy that has no code for the GPU.
template <class T, int D, bool kRowSwizzled = false>
__global__ void __launch_bounds__(32 * kRowWarps) dq_accum_convert_kernel(const AttnParams p) {
  if (exact_path_taken(p)) return;
  const int lane = threadIdx.x % 32;
  for_each_packed_row(p, [&](std::int64_t r, const PackedRow& pr) {
    T* dq = static_cast<T*>(p.dq) + pr.entry.dq + pr.i * p.dq_ts + pr.h * p.dq_hs;
    const float* acc = p.dq_accum + r * D;
#pragma unroll
    for (int c = 2 * lane; c < D; c += 64) {
      const int at = kRowSwizzled ? dq_swizzled_column(r, c) : c;  // c, c + 1 share a unit
      *reinterpret_cast<std::uint32_t*>(dq + c) = pack_pair<T>(acc[at], acc[at + 1]);
    }
  });
}

/// Resident blocks per SM, or 0 when a kernel cannot run here. KEYS = 64: the least of the
/// three 64 x 64 kernels (both modes; the fast dK/dV pass has the largest shared memory).
/// KEYS = 128: the fast dK/dV pass with 128-key tiles (8 warps), which has no other mode.
template <int ELEM, int D, int KEYS>
int backward_mma_occupancy() {
  using T = std::conditional_t<ELEM == static_cast<int>(ElemType::kBF16), __nv_bfloat16, __half>;
  using Fast = BackwardMmaTraits<D, true, KEYS>;
  if (!fits_shared_memory(Fast::kSmemBytes)) return 0;
  int blocks[3] = {0, 0, 0};
  cudaError_t status = blocks_per_sm(dkdv_mma_kernel<T, D, true, KEYS>, Fast::kThreads,
                                     Fast::kSmemBytes, &blocks[0]);
  if constexpr (KEYS == kMmaTileK) {
    using Det = BackwardMmaTraits<D>;
    if (status == cudaSuccess) {
      status =
          blocks_per_sm(dkdv_mma_kernel<T, D, false>, Det::kThreads, Det::kSmemBytes, &blocks[1]);
    }
    if (status == cudaSuccess) {
      status = blocks_per_sm(dq_mma_kernel<T, D>, Det::kThreads, Det::kSmemBytes, &blocks[2]);
    }
  } else {
    blocks[1] = blocks[2] = blocks[0];
  }
  if (status != cudaSuccess) {
    (void)cudaGetLastError();  // not sticky: the caller falls back to another kernel
    return 0;
  }
  return std::min({blocks[0], blocks[1], blocks[2]});
}

/// Fast mode (p.dq_accum set, zeroed): dK/dV with atomic dQ over key tiles of KEYS, then the dQ
/// conversion. Deterministic mode (KEYS = 64 only): dK/dV, then the dQ pass. The prologue of row
/// constants and dsink has run on the same stream; p.sched has tile_k == KEYS.
template <int ELEM, int D, int KEYS>
cudaError_t launch_backward_mma(const AttnParams& p, int grid, cudaStream_t stream) {
  using T = std::conditional_t<ELEM == static_cast<int>(ElemType::kBF16), __nv_bfloat16, __half>;
  if (p.sched.tile_k != KEYS || p.sched.tile_q != kMmaTileQ) return cudaErrorInvalidValue;
  if (p.dq_accum != nullptr) {
    using Fast = BackwardMmaTraits<D, true, KEYS>;
    if (cudaError_t e = allow_dynamic_smem(dkdv_mma_kernel<T, D, true, KEYS>, Fast::kSmemBytes);
        e != cudaSuccess)
      return e;
    launch_kernel(dkdv_mma_kernel<T, D, true, KEYS>, grid, Fast::kThreads, Fast::kSmemBytes, stream,
                  p);
    if (p.packed_rows > 0) {
      launch_kernel(dq_accum_convert_kernel<T, D>, packed_row_blocks(p.packed_rows), 32 * kRowWarps,
                    0, stream, p);
    }
    return cudaGetLastError();
  }
  if constexpr (KEYS != kMmaTileK) {
    return cudaErrorInvalidValue;  // no deterministic mode with wide key tiles
  } else {
    using Det = BackwardMmaTraits<D>;
    if (cudaError_t e = allow_dynamic_smem(dkdv_mma_kernel<T, D, false>, Det::kSmemBytes);
        e != cudaSuccess)
      return e;
    if (cudaError_t e = allow_dynamic_smem(dq_mma_kernel<T, D>, Det::kSmemBytes); e != cudaSuccess)
      return e;
    launch_kernel(dkdv_mma_kernel<T, D, false>, grid, Det::kThreads, Det::kSmemBytes, stream, p);
    launch_kernel(dq_mma_kernel<T, D>, grid, Det::kThreads, Det::kSmemBytes, stream, p);
    return cudaGetLastError();
  }
}

}  // namespace longattn::detail::cuda

/// Explicit instantiation of one (element type, head dim) backward: one per generated file.
/// Narrow: 64 x 64 tiles, both modes; wide: the fast mode on 64 x 128 tiles.
#define LONGATTN_INSTANTIATE_BACKWARD_MMA_KEYS(ELEM, D, KEYS)                      \
  template int longattn::detail::cuda::backward_mma_occupancy<ELEM, D, KEYS>();    \
  template cudaError_t longattn::detail::cuda::launch_backward_mma<ELEM, D, KEYS>( \
      const longattn::detail::cuda::AttnParams&, int, cudaStream_t);
#define LONGATTN_INSTANTIATE_BACKWARD_MMA(ELEM, D) \
  LONGATTN_INSTANTIATE_BACKWARD_MMA_KEYS(ELEM, D, 64)
#define LONGATTN_INSTANTIATE_BACKWARD_MMA_WIDE(ELEM, D) \
  LONGATTN_INSTANTIATE_BACKWARD_MMA_KEYS(ELEM, D, 128)
