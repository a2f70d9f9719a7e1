// SPDX-License-Identifier: Apache-2.0
// Tensor-core backward for Hopper (sm_90a): the fast mode of the sm80 backward (dK/dV per key
// tile, dQ added into the fp32 accumulator with atomics) on 64 x 128 tiles with wgmma.
//
// Block = 8 warps = 2 warpgroups; warpgroup g owns keys 64 g .. 64 g + 63 of the 128-key tile
// (warp w keys 16 w .. 16 w + 15, as in the 8-warp sm80 dK/dV pass). K and V stay resident; the
// 64-row Q and dO tiles of every query head of the group and every query tile of the column
// schedule stream through two buffers (the prefetch of the next tile crosses heads). Per tile
// and warpgroup, all operands in 128-byte-swizzled panels (common/wgmma.cuh):
//   S^T = K Q^T, dP^T = V dO^T   wgmma m64n64k16, K / V and Q / dO K-major (D / 16 k-steps each);
//   P^T, dS^T                    in the accumulators (keys are the rows), the sm80 code;
//   dV += P^T dO, dK += dS^T Q   wgmma m64nDk16 with P^T / dS^T re-packed as register A and
//                                dO / Q read N-major (4 k-steps of 16 queries);
//   dQ (+)= dS K                 dS^T goes to shared memory ([key][query]), then wgmma m64n64k16
//                                with both operands MN-major: at D = 128 warpgroup g takes
//                                columns 64 g .. 64 g + 63 over all 128 keys, at D = 64 all
//                                columns over its own 64 keys; staged in shared memory in the
//                                accumulator's layout and added to p.dq_accum by one bulk
//                                reduction per tile and partial (cp.reduce.async.bulk, thread
//                                0), as FA3 does, rather than 16 red.global.add.v2 per thread.
// Per tile: the dV / dK products run while dS^T is stored (two buffers), the next tile's copies
// (Q, dO and its row constants, all cp.async) are issued and the dQ product is issued; the dQ
// product runs on into the next tile, under whose S^T / dP^T it retires before it is staged (no
// wait at the end of a tile, where the tensor cores would idle); its bulk add is issued after
// that tile's second barrier and has read the staging before the next tile's first. Two block
// barriers per tile (operands landed; dS^T and the owed dQ staged); between them warpgroup 1
// issues its S^T / dP^T after warpgroup 0 (a named barrier), so that one warpgroup's elementwise
// work runs under the other's products. No producer warps or TMA loads yet. The deterministic
// mode, and Inf/NaN inputs, run elsewhere (the sm80 dQ pass; the generic kernels).
#pragma once

#include <cuda_runtime.h>

#include "cuda/common/device.cuh"
#include "cuda/common/ptx.cuh"
#include "cuda/common/wgmma.cuh"
#include "cuda/kernels.hpp"
#include "cuda/sm80/backward_mma.cuh"
#include "cuda/sm80/forward_mma.cuh"

namespace longattn::detail::cuda {

template <int D>
struct BackwardWgmmaTraits {
  static constexpr int kWarps = 8;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlockM = kMmaTileQ;                          // 64 queries per tile
  static constexpr int kBlockN = kMmaWideTileK;                      // 128 keys, 64 per warpgroup
  static constexpr std::uint32_t kKVBytes = 2U * kBlockN * D;        // K or V
  static constexpr std::uint32_t kQBytes = 2U * kBlockM * D;         // one Q or dO buffer
  static constexpr std::uint32_t kDsBytes = 2U * kBlockN * kBlockM;  // one dS^T [key][query]
  static constexpr std::uint32_t kRowBytes = sizeof(float) * 2 * kBlockM;  // lse2 | rowdot
  // dQ = dS K per warpgroup: 64 columns (one panel) over kDqKeys keys.
  static constexpr int kDqKeys = D == 128 ? kBlockN : 64;
  // dQ staging for the bulk adds: BM rows of D floats laid out as in p.dq_accum (the units of
  // each row permuted, dq_swizzled_column), one buffer per partial sum (D = 128: the two
  // warpgroups' column halves share one; D = 64: each warpgroup's keys give a full-width one).
  static constexpr int kDqBuffers = D == 128 ? 1 : 2;
  static constexpr std::uint32_t kDqRowBytes = sizeof(float) * D;
  static constexpr std::uint32_t kDqBytes = kDqBuffers * kBlockM * kDqRowBytes;
  // Two dS^T buffers: tile i's dQ product still reads one while tile i + 1 stores the other.
  // + 1024: the panels start 1024-byte aligned (the swizzle atom) wherever the window begins.
  // D = 128: 194 KB of the 227 an sm_90 block may have.
  static constexpr std::size_t kSmemBytes =
      2 * kKVBytes + 4 * kQBytes + 2 * kDsBytes + 2 * kRowBytes + kDqBytes + 1024;
  static_assert(D == 64 || D == 128, "SW128 panels of 64 columns; wgmma N = D <= 256");
};

/// The query tiles a dK/dV work item visits, head after head of its group: query head h, entry
/// c of the column schedule of (h, key tile kt), which ends at c_end.
struct ColumnTile {
  int h;
  std::int64_t c;
  std::int64_t c_end;
};
/// The first tile of head h or of a later head below h_end ({h_end, 0, 0}: none).
__device__ __forceinline__ ColumnTile first_column_tile(const AttnParams& p, int b, int kt, int h,
                                                        int h_end) {
  for (; h < h_end; ++h) {
    const SlotEntry& se = schedule_of(p, b, h).entry;
    const std::int64_t c0 = p.sched.col_offsets[se.col_offsets + kt];
    const std::int64_t c1 = p.sched.col_offsets[se.col_offsets + kt + 1];
    if (c0 < c1) return {h, c0, c1};
  }
  return {h_end, 0, 0};
}
__device__ __forceinline__ ColumnTile next_column_tile(const AttnParams& p, int b, int kt,
                                                       const ColumnTile& t, int h_end) {
  if (t.c + 1 < t.c_end) return {t.h, t.c + 1, t.c_end};
  return first_column_tile(p, b, kt, t.h + 1, h_end);
}

/// kBulkDq false: dQ added with red.global.add.v2 per thread (the A/B switch
/// p.hopper_dq_atomics; same accumulator layout, the staging buffer unused).
template <class T, int D, bool kBulkDq>
__global__ void __launch_bounds__(BackwardWgmmaTraits<D>::kThreads, 1)
    backward_wgmma_kernel(const AttnParams p) {
#ifdef LONGATTN_WGMMA_UNAVAILABLE
  __trap();  // not an sm_90a build of this kernel; the host never launches it
#else
  using Tr = BackwardWgmmaTraits<D>;
  constexpr int BM = Tr::kBlockM;
  constexpr int BN = Tr::kBlockN;
  constexpr int NB = BM / 8;             // n8 blocks of S^T (queries)
  constexpr int DB = D / 8;              // n8 blocks of dK / dV
  constexpr int KS = BM / 16;            // k-steps of dV / dK (queries)
  constexpr int kIssueOrderBarrier = 1;  // named barrier: warpgroup 0's S^T / dP^T issue, then 1's
  LONGATTN_DYNAMIC_SHARED(unsigned char, smem_raw);
  unsigned char* ks = smem_raw + (1024U - smem_addr(smem_raw) % 1024U) % 1024U;
  unsigned char* vs = ks + Tr::kKVBytes;
  unsigned char* qs = vs + Tr::kKVBytes;       // [2] Q buffers
  unsigned char* dos = qs + 2 * Tr::kQBytes;   // [2] dO buffers
  unsigned char* dss = dos + 2 * Tr::kQBytes;  // [2] dS^T: BN rows (keys) of 64 queries, one panel
  auto* rows = reinterpret_cast<float*>(dss + 2 * Tr::kDsBytes);         // [2][lse2 BM | rowdot BM]
  unsigned char* dq_stage = dss + 2 * Tr::kDsBytes + 2 * Tr::kRowBytes;  // [kDqBuffers][BM rows]
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int group = lane >> 2;
  const int tq = lane & 3;
  const int warpgroup = warp / 4;
  const int key0 = warp * 16 + group;  // key rows key0 and key0 + 8 of the tile
  // Descriptors (k-steps and buffers add their offsets >> 4 to the start address field):
  //   A of S^T / dP^T: this warpgroup's 64 rows of K / V, K-major;
  //   B of S^T / dP^T: Q / dO, K-major; B of dK / dV: the same tiles N-major;
  //   A of dQ: dS^T read MN-major (queries contiguous); B of dQ: K read N-major.
  const std::uint32_t own_rows = static_cast<std::uint32_t>(warpgroup) * 64U * 128U;
  const WgmmaDesc k_desc = wgmma_desc(smem_addr(ks + own_rows), 16, 1024);
  const WgmmaDesc v_desc = wgmma_desc(smem_addr(vs + own_rows), 16, 1024);
  const WgmmaDesc q_desc = wgmma_desc(smem_addr(qs), 16, 1024);
  const WgmmaDesc do_desc = wgmma_desc(smem_addr(dos), 16, 1024);
  const WgmmaDesc q_ndesc = wgmma_desc(smem_addr(qs), BM * 128, 1024);
  const WgmmaDesc do_ndesc = wgmma_desc(smem_addr(dos), BM * 128, 1024);
  // dQ: D = 128: columns 64 g.. (panel g of K) over all keys; D = 64: panel 0 over own keys.
  const std::uint32_t dq_key_bytes = Tr::kDqKeys == BN ? 0U : own_rows;
  const std::uint32_t dq_panel = D == 128 ? static_cast<std::uint32_t>(warpgroup) * BN * 128U : 0U;
  const int dq_col0 = D == 128 ? warpgroup * 64 : 0;
  // This warpgroup's staging buffer (thread 0 issues the bulk adds of all of them).
  unsigned char* dq_stage_own =
      dq_stage + (Tr::kDqBuffers == 1 ? 0 : warpgroup) * BM * Tr::kDqRowBytes;
  const WgmmaDesc ds_desc = wgmma_desc(smem_addr(dss + dq_key_bytes), BN * 128, 1024);
  const WgmmaDesc kq_desc = wgmma_desc(smem_addr(ks + dq_key_bytes + dq_panel), BN * 128, 1024);
  constexpr std::uint32_t kQStep = Tr::kQBytes >> 4;    // the second Q / dO buffer
  constexpr std::uint32_t kDsStep = Tr::kDsBytes >> 4;  // the second dS^T buffer
  constexpr std::uint32_t kKStep = (16U * 128U) >> 4;   // 16 rows of an N-major / MN-major operand

  const int items = exact_path_taken(p) ? 0 : p.num_col_work;  // as in dkdv_mma_kernel
  for_each_work_item(p.work_counter + 1, items, [&](int item) {
    const ColWork w = p.col_work[item];
    const BatchEntry be = p.batch[w.b];
    const int k0 = w.kt * BN;
    const int jn = min(BN, be.skv - k0);
    load_rows_async<T, D, Tr::kThreads>(
        [ks](int r, int ch) { return smem_addr(ks + sw128_offset(Tr::kBlockN, r, ch * 8)); }, BN,
        p.k, be.k + w.kvh * p.k_hs, p.k_ts, k0, jn);
    load_rows_async<T, D, Tr::kThreads>(
        [vs](int r, int ch) { return smem_addr(vs + sw128_offset(Tr::kBlockN, r, ch * 8)); }, BN,
        p.v, be.v + w.kvh * p.v_hs, p.v_ts, k0, jn);
    cp_async_commit();

    float dk[DB][4], dv[DB][4];
#pragma unroll
    for (int db = 0; db < DB; ++db) {
#pragma unroll
      for (int e = 0; e < 4; ++e) dk[db][e] = dv[db][e] = 0.0F;
    }
    const int h_end = (w.kvh + 1) * p.group;
    // The dQ product of tile i is staged in tile i + 1, once it has retired under tile i + 1's
    // S^T / dP^T (no wait for it at the end of tile i, where the tensor cores would idle until
    // the next tile's products), and added to the accumulator after tile i + 1's second barrier.
    // Owed: dq_row0 (the tile's first packed row), dq_rows valid rows (0: none owed).
    // This thread's fragment: rows qrow and qrow + 8, columns dq_col0 + 8 nb + 2 tq, + 1.
    const int qrow = (warp % 4) * 16 + group;
    float dq[8][4];
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) dq[nb][0] = dq[nb][1] = dq[nb][2] = dq[nb][3] = 0.0F;
    std::int64_t dq_row0 = 0;
    int dq_rows = 0;
    // After the staging's previous reads completed (bulk_wait_read<0> before a barrier). Rows
    // qrow and qrow + 8 have the same unit permutation (dq_swizzled_column).
    auto stage_owed_dq = [&] {
      const std::int64_t row = dq_row0 + qrow;
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        if (!kBulkDq && qrow + r * 8 >= dq_rows) continue;
#pragma unroll
        for (int nb = 0; nb < 8; ++nb) {
          const int col = dq_swizzled_column(row, dq_col0 + nb * 8 + tq * 2);
          const float2 value = make_float2(dq[nb][2 * r], dq[nb][2 * r + 1]);
          if constexpr (kBulkDq) {
            unsigned char* dst = dq_stage_own + (qrow + r * 8) * Tr::kDqRowBytes;
            *reinterpret_cast<float2*>(dst + sizeof(float) * col) = value;
          } else {
            float* dst = p.dq_accum + (row + r * 8) * D + col;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
            atomicAdd(reinterpret_cast<float2*>(dst), value);
#else
            atomicAdd(dst, value.x);
            atomicAdd(dst + 1, value.y);
#endif
          }
        }
      }
    };
    // After fence_proxy_async and a barrier that follow every thread's staging: the valid rows
    // are one contiguous block of p.dq_accum, in the staging's layout.
    auto issue_owed_dq = [&] {
      if (!kBulkDq || threadIdx.x != 0) return;
#pragma unroll
      for (int b = 0; b < Tr::kDqBuffers; ++b) {
        bulk_reduce_add_f32(p.dq_accum + dq_row0 * D,
                            smem_addr(dq_stage + b * BM * Tr::kDqRowBytes),
                            static_cast<std::uint32_t>(dq_rows) * Tr::kDqRowBytes);
      }
      bulk_commit();
    };
    auto issue_q = [&](const ColumnTile& t, int buf) {
      const std::int64_t ebase = schedule_of(p, w.b, t.h).base;
      const int q0 = p.sched.q_tile[ebase + t.c] * BM;
      const int qn = min(BM, be.sq - q0);
      unsigned char* qd = qs + buf * Tr::kQBytes;
      unsigned char* dod = dos + buf * Tr::kQBytes;
      load_rows_async<T, D, Tr::kThreads>(
          [qd](int r, int ch) { return smem_addr(qd + sw128_offset(Tr::kBlockM, r, ch * 8)); }, BM,
          p.q, be.q + t.h * p.q_hs, p.q_ts, q0, qn);
      load_rows_async<T, D, Tr::kThreads>(
          [dod](int r, int ch) { return smem_addr(dod + sw128_offset(Tr::kBlockM, r, ch * 8)); },
          BM, p.dout, be.dout + t.h * p.do_hs, p.do_ts, q0, qn);
      const std::int64_t rbase = be.row * p.hq + static_cast<std::int64_t>(t.h) * be.sq;
      load_row_constants_async<BM, Tr::kThreads>(rows + buf * 2 * BM, p, rbase + q0, qn);
      cp_async_commit();
    };

    ColumnTile cur = first_column_tile(p, w.b, w.kt, w.kvh * p.group, h_end);
    if (cur.h < h_end) issue_q(cur, 0);
    for (int i = 0; cur.h < h_end; ++i) {
      const int buf = i & 1;
      cp_async_wait<0>();   // this tile (and, at i = 0, K/V): this thread's copies have landed
      fence_proxy_async();  // ... and are visible to wgmma after the barrier
      bulk_wait_read<0>();  // tile i - 2's dQ adds have read the staging
      // Every thread is past tile i - 1, whose dV / dK products have retired: its Q / dO buffers
      // may be refilled. (Its dQ product may still run: it reads K and the other dS^T buffer.)
      // The dQ staging may be written again.
      __syncthreads();
      const std::uint32_t qstep = buf * kQStep;

      // ---- S^T = K Q^T, dP^T = V dO^T: D / 16 k-steps of 16 columns, 4 per 64-column panel;
      // the first with scale-d = 0. Issued before the next tile's prefetch and this tile's
      // schedule reads, which then run under the products. Warpgroup 1 issues after warpgroup
      // 0 (as in the Hopper forward): warpgroup 0's products land first, and its P^T / dS^T
      // then run under warpgroup 1's products, warpgroup 1's under warpgroup 0's dV / dK,
      // rather than both in step while the tensor cores idle. ----
      float st[NB][4], dpt[NB][4];
      named_barrier_sync_if(warpgroup == 1, kIssueOrderBarrier, Tr::kThreads);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const std::uint32_t a_off = ((kk / 4) * BN * 128 + (kk % 4) * 32) >> 4;
        const std::uint32_t b_off = ((kk / 4) * BM * 128 + (kk % 4) * 32) >> 4;
        wgmma_ss<T, BM>(st, k_desc + a_off, q_desc + qstep + b_off, kk > 0);
      }
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const std::uint32_t a_off = ((kk / 4) * BN * 128 + (kk % 4) * 32) >> 4;
        const std::uint32_t b_off = ((kk / 4) * BM * 128 + (kk % 4) * 32) >> 4;
        wgmma_ss<T, BM>(dpt, v_desc + a_off, do_desc + qstep + b_off, kk > 0);
      }
      wgmma_commit();
      named_barrier_arrive_if(warpgroup == 0, kIssueOrderBarrier, Tr::kThreads);
      const SlotRef sr = schedule_of(p, w.b, cur.h);
      const int q0 = p.sched.q_tile[sr.base + cur.c] * BM;
      const int qn = min(BM, be.sq - q0);
      const int bits_index = p.sched.col_bits[sr.base + cur.c];
      std::uint64_t words[2];
      load_key_words<BN>(p, sr.entry, bits_index, key0, jn, words);
      const std::int64_t rbase = be.row * p.hq + static_cast<std::int64_t>(cur.h) * be.sq;
      const float* lse2 = rows + buf * 2 * BM;
      const float* rowdot = lse2 + BM;
      wgmma_wait<0>();  // S^T, dP^T and the previous tile's dQ
      wgmma_fence_operand(st);
      wgmma_fence_operand(dpt);
      wgmma_fence_operand(dq);
      if (dq_rows > 0) stage_owed_dq();

      // ---- P^T and dS^T in place (the sm80 code) ----
      key_tile_gradients<BM, BN>(p, bits_index, words, lse2, rowdot, key0, tq, jn, qn, st, dpt);

      // ---- dV += P^T dO, dK += dS^T Q (k = the 64 queries) ----
      std::uint32_t pa[KS][4], dsa[KS][4];
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) {
        probability_fragment<T>(st, kk, pa[kk]);
        probability_fragment<T>(dpt, kk, dsa[kk]);
      }
      wgmma_fence_operand(dk);
      wgmma_fence_operand(dv);
      wgmma_fence_operand(pa);
      wgmma_fence_operand(dsa);
      wgmma_fence();  // pa and dsa were written by ordinary instructions
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) {
        wgmma_rs_tb<T, D>(dv, pa[kk], do_ndesc + qstep + kk * kKStep, true);
      }

      // ---- dS^T to shared memory (rows key0, key0 + 8; query pairs) while dV runs: before
      // the dK issue, as PTX allows no access at all (reads included) to the A registers of
      // a wgmma in flight ----
      unsigned char* dsb = dss + buf * Tr::kDsBytes;
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) {
        const int qc = kk * 16 + tq * 2;
        *reinterpret_cast<std::uint32_t*>(dsb + sw128_offset(BN, key0, qc)) = dsa[kk][0];
        *reinterpret_cast<std::uint32_t*>(dsb + sw128_offset(BN, key0 + 8, qc)) = dsa[kk][1];
        *reinterpret_cast<std::uint32_t*>(dsb + sw128_offset(BN, key0, qc + 8)) = dsa[kk][2];
        *reinterpret_cast<std::uint32_t*>(dsb + sw128_offset(BN, key0 + 8, qc + 8)) = dsa[kk][3];
      }
      wgmma_fence_operand(dsa);
      wgmma_fence();  // dsa was read by the stores
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) {
        wgmma_rs_tb<T, D>(dk, dsa[kk], q_ndesc + qstep + kk * kKStep, true);
      }
      wgmma_commit();
      wgmma_fence_operand(pa);
      wgmma_fence_operand(dsa);
      // The next tile's copies, issued while dV / dK run (not under S^T / dP^T, where the
      // previous tile's dQ is still live and their addresses would spill).
      const ColumnTile next = next_column_tile(p, w.b, w.kt, cur, h_end);
      if (next.h < h_end) issue_q(next, buf ^ 1);

      fence_proxy_async();
      __syncthreads();  // the whole dS^T tile and the previous tile's dQ are in shared memory
      if (dq_rows > 0) issue_owed_dq();

      // ---- dQ = dS K over this warpgroup's columns and keys; added in the next tile ----
      wgmma_fence_operand(dq);
      wgmma_fence();  // dq was read by the staging stores
#pragma unroll
      for (int kk = 0; kk < Tr::kDqKeys / 16; ++kk) {
        wgmma_ss_tt<T, 64>(dq, ds_desc + buf * kDsStep + kk * kKStep, kq_desc + kk * kKStep,
                           kk > 0);
      }
      wgmma_commit();
      wgmma_fence_operand(dq);
      wgmma_wait<1>();  // dV / dK have retired (Q / dO may be refilled); dQ may run on
      wgmma_fence_operand(dk);
      wgmma_fence_operand(dv);
      dq_row0 = rbase + q0;
      dq_rows = qn;
      cur = next;
    }
    wgmma_wait<0>();  // the last tile's dQ
    wgmma_fence_operand(dq);
    if (dq_rows > 0) {  // the same in every thread: the block visited a query tile
      if constexpr (kBulkDq) {
        bulk_wait_read<0>();
        __syncthreads();  // the previous tile's adds have read the staging
        stage_owed_dq();
        fence_proxy_async();
        __syncthreads();
        issue_owed_dq();  // read by the next item's first wait, or at the end of the kernel
      } else {
        stage_owed_dq();  // the atomics
      }
    }
    cp_async_wait<0>();  // K/V alone were in flight when no query tile visits this key tile

    store_key_rows<T>(p, be, w.kvh, k0 + key0, jn - key0, tq, dk, dv);
  });
  bulk_wait_read<0>();  // the last dQ adds have read the staging: the block may exit
#endif  // LONGATTN_WGMMA_UNAVAILABLE
}

/// Resident blocks per SM (0 when the kernel cannot be configured).
template <int ELEM, int D>
int backward_wgmma_occupancy() {
  using T = std::conditional_t<ELEM == static_cast<int>(ElemType::kBF16), __nv_bfloat16, __half>;
  using Tr = BackwardWgmmaTraits<D>;
  return resident_blocks(backward_wgmma_kernel<T, D, true>, Tr::kThreads, Tr::kSmemBytes);
}

/// The fast mode only (p.dq_accum set and zeroed): dK/dV with atomic dQ, then the dQ
/// conversion. The prologue has run on the same stream; p.sched has 64 x 128 tiles.
template <int ELEM, int D>
cudaError_t launch_backward_wgmma(const AttnParams& p, int grid, cudaStream_t stream) {
  using T = std::conditional_t<ELEM == static_cast<int>(ElemType::kBF16), __nv_bfloat16, __half>;
  using Tr = BackwardWgmmaTraits<D>;
  if (p.sched.tile_k != Tr::kBlockN || p.sched.tile_q != Tr::kBlockM || p.dq_accum == nullptr) {
    return cudaErrorInvalidValue;
  }
  auto* kernel =
      p.hopper_dq_atomics ? backward_wgmma_kernel<T, D, false> : backward_wgmma_kernel<T, D, true>;
  if (cudaError_t e = allow_dynamic_smem(kernel, Tr::kSmemBytes); e != cudaSuccess) return e;
  launch_kernel(kernel, grid, Tr::kThreads, Tr::kSmemBytes, stream, p);
  if (p.packed_rows > 0) {
    launch_kernel(dq_accum_convert_kernel<T, D, true>, packed_row_blocks(p.packed_rows),
                  32 * kRowWarps, 0, stream, p);
  }
  return cudaGetLastError();
}

}  // namespace longattn::detail::cuda

/// Explicit instantiation of one (element type, head dim) Hopper backward (kernels.list kind
/// bwdh; built for sm_90a only).
#define LONGATTN_INSTANTIATE_BACKWARD_WGMMA(ELEM, D)                           \
  template int longattn::detail::cuda::backward_wgmma_occupancy<ELEM, D>();    \
  template cudaError_t longattn::detail::cuda::launch_backward_wgmma<ELEM, D>( \
      const longattn::detail::cuda::AttnParams&, int, cudaStream_t);
