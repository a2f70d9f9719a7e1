// SPDX-License-Identifier: Apache-2.0
// Tensor-core forward for Hopper (sm_90a): the block schedule's 128 x 64 tiles (kernels.list
// kind fwdh) or 128 x 128 tiles (fwdhk) on two warpgroups with wgmma.mma_async, the rest of the
// sm80 forward unchanged.
//
// Block = 8 warps = 2 warpgroups; warpgroup g owns query rows 64 g .. 64 g + 63 (warp w rows
// 16 w .. 16 w + 15, as in the 8-warp sm80 kernel), against key tiles of KEYS = 64 or 128 keys
// of a schedule built for those tiles. Per key tile and warpgroup: S = Q K^T as D / 16 wgmma
// m64nKEYSk16 with both operands in shared memory, then P V as KEYS / 16 wgmma m64nDk16 with P
// from registers (the S accumulators re-packed, as in sm80) and V in shared memory read N-major.
// Q, K and V sit in 128-byte-swizzled panels (common/wgmma.cuh), filled by cp.async into 2 K and
// 3 V stages and published to the async proxy with fence.proxy.async before the barrier.
// Intra-warpgroup pipelining (FA3's): tile i's P.V is issued after tile i + 1's S = Q K^T and
// runs while the warpgroup masks and exponentiates S(i + 1); O is rescaled once it retires.
// Warpgroup 0 loads the K/V tiles (tile i + 1's K lands where tile i - 1's was, its V where tile
// i - 2's was; its copies issued while tile i's S and the owed P.V run) and leads; warpgroup 1
// issues its wgmma of a tile after warpgroup 0's and follows up to one tile behind. Named
// barriers only, no block barrier per tile (see the kernel). No producer warps, TMA or mbarriers
// yet. 128-key tiles halve the per-key cost of everything done once per tile (barriers, the
// wgmma waits, row max and sum shuffles, O rescales) for 96 more registers of S and P (255 at
// D = 128, no spill; one block per SM). Masks, softcap, sigmoid, sinks, GQA packing, split-KV
// parts and the exact attempt for Inf/NaN in V are the sm80 code.
#pragma once

#include <cuda_runtime.h>

#include "cuda/common/device.cuh"
#include "cuda/common/ptx.cuh"
#include "cuda/common/wgmma.cuh"
#include "cuda/kernels.hpp"
#include "cuda/sm80/forward_mma.cuh"

namespace longattn::detail::cuda {

template <int D, int KEYS>
struct ForwardWgmmaTraits {
  static constexpr int kWarps = 8;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlockM = kMmaWideTileQ;  // 2 warpgroups x 64 rows
  static constexpr int kBlockN = KEYS;           // 64 keys (kind fwdh) or 128 (fwdhk)
  static constexpr int kChunks = D / 8;
  static constexpr int kWordsPerRow = (kBlockM + 63) / 64;
  // K buffers: tile i's and tile i + 1's landing (tile i - 1's is free once both warpgroups'
  // S(i - 1) retired, which the stage-free barrier says). V buffers: tile i - 1's (its P.V runs
  // during tile i), tile i's and tile i + 1's landing.
  static constexpr int kKStages = 2;
  static constexpr int kVStages = 3;
  static constexpr std::uint32_t kQBytes = 2U * kBlockM * D;
  static constexpr std::uint32_t kKVBytes = 2U * kBlockN * D;  // one K or V buffer
  // After the V stages, one zero V panel: the P.V issued when no tile owes one (see the kernel).
  // + 1024: the panels start 1024-byte aligned (the swizzle atom) wherever the window begins.
  // 128 x 128 at D = 128: 225 KB of the 227 an sm_90 block may have.
  static constexpr std::size_t kSmemBytes =
      kQBytes + (kKStages + kVStages + 1) * static_cast<std::size_t>(kKVBytes) + 1024;
  // D = 64 on 64-key tiles: 65 KB, 2 blocks per SM at <= 128 registers (a few spills). On
  // 128-key tiles S and P alone take 96 registers: one block.
  static constexpr int kMinBlocks = D <= 64 && KEYS == 64 ? 2 : 1;
  static_assert(D == 64 || D == 128, "SW128 panels of 64 columns; wgmma N = D <= 256");
  static_assert(KEYS == 64 || KEYS == 128, "wgmma N = KEYS for S = Q K^T");
};

/// One work item of forward_wgmma_kernel: the fast attempt (kExact = false) or, when that one's O
/// came out with an Inf/NaN (it then returns false without storing), the exact attempt (see
/// forward_mma_item).
template <class T, int D, int KEYS, bool kExact>
__device__ __forceinline__ bool forward_wgmma_item(const AttnParams& p, int item) {
  using Tr = ForwardWgmmaTraits<D, KEYS>;
  constexpr int BM = Tr::kBlockM;
  constexpr int BN = Tr::kBlockN;
  constexpr int NB = BN / 8;   // n8 blocks of S
  constexpr int DB = D / 8;    // n8 blocks of O
  constexpr int KS = BN / 16;  // k-steps of P.V
  // Named barriers. Warpgroup 0 loads the K/V tiles and leads; warpgroup 1 follows up to one
  // tile behind, with no block barrier per tile:
  //   kIssueOrderBarrier: warpgroup 0 arrives once tile i's K/V have landed and its wgmma of
  //     tile i are issued; warpgroup 1 waits for that before issuing its own;
  //   kStageFreeBarrier: warpgroup 1 arrives when it is done with tile i (its S(i) and P.V(i-1)
  //     retired); warpgroup 0 waits for that in tile i + 1 before it refills that stage, and
  //     before its next kIssueOrderBarrier arrival (so no phase of either barrier gets ahead
  //     of its waiter by more than one);
  //   kLoaderBarrier: warpgroup 0's 128 threads, once each one's copies of a tile have landed.
  constexpr int kIssueOrderBarrier = 1;
  constexpr int kStageFreeBarrier = 2;
  constexpr int kLoaderBarrier = 3;
  constexpr int kLoaderThreads = Tr::kThreads / 2;  // warpgroup 0
  LONGATTN_DYNAMIC_SHARED(unsigned char, smem_raw);
  unsigned char* qs = smem_raw + (1024U - smem_addr(smem_raw) % 1024U) % 1024U;
  unsigned char* ks = qs + Tr::kQBytes;                  // [kKStages][BN rows in SW128 panels]
  unsigned char* vs = ks + Tr::kKStages * Tr::kKVBytes;  // [kVStages][BN rows in SW128 panels]
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int group = lane >> 2;
  const int tq = lane & 3;
  const int warpgroup = warp / 4;
  const bool loader = warpgroup == 0;
  const bool softmax = p.softmax;
  const float post = softmax ? kLog2eF : 1.0F;
  const bool plain_softmax = softmax && p.softcap <= 0.0F && p.scale > 0.0F;
  const float raw_to_log2 = p.scale * kLog2eF;
  const int warp_row0 = warp * 16;
  // Descriptors: Q (K-major, this warpgroup's 64 rows), K (K-major), V (N-major); the k-steps
  // add their offsets (>> 4) to the start address field.
  const WgmmaDesc q_desc =
      wgmma_desc(smem_addr(qs + static_cast<std::uint32_t>(warpgroup) * 64U * 128U), 16, 1024);
  // (Buffer b is b kKVBytes after buffer 0: added to the start field, not indexed, which would
  // put the descriptors in local memory.)
  const WgmmaDesc k_desc = wgmma_desc(smem_addr(ks), 16, 1024);
  const WgmmaDesc v_desc = wgmma_desc(smem_addr(vs), BN * 128, 1024);
  constexpr std::uint32_t kBufferStep = Tr::kKVBytes >> 4;
  auto q_dst = [qs](int r, int ch) { return smem_addr(qs + sw128_offset(Tr::kBlockM, r, ch * 8)); };

  ForwardRowTile<BM> tile(p, item);
  const RowWork& w = tile.w;
  const BatchEntry& be = tile.be;
  const int qn = tile.qn;
  const int entries = tile.entries;
  // Tile i of the item (key tile kt) into K stage i % kKStages and V stage i % kVStages.
  auto issue_kv = [&](int kt, int i) {
    const int k0 = kt * BN;
    const int jn = min(BN, be.skv - k0);
    unsigned char* kd = ks + (i % Tr::kKStages) * Tr::kKVBytes;
    unsigned char* vd = vs + (i % Tr::kVStages) * Tr::kKVBytes;
    load_rows_async<T, D, kLoaderThreads>(
        [kd](int r, int ch) { return smem_addr(kd + sw128_offset(Tr::kBlockN, r, ch * 8)); }, BN,
        p.k, be.k + tile.kvh * p.k_hs, p.k_ts, k0, jn);
    load_rows_async<T, D, kLoaderThreads>(
        [vd](int r, int ch) { return smem_addr(vd + sw128_offset(Tr::kBlockN, r, ch * 8)); }, BN,
        p.v, be.v + tile.kvh * p.v_hs, p.v_ts, k0, jn);
    cp_async_commit();
  };
  load_query_rows_async<T, D, Tr::kThreads>(q_dst, BM, p, be, w.h, w.qt, qn);
  cp_async_commit();
  if (loader && entries > 0) issue_kv(tile.first_key_tile(), 0);
  int row_bit[1][2];
  tile.template row_bits<1>(p, warp_row0, group, row_bit);
  // Q (every thread's rows) and tile 0 have landed and are visible to wgmma: the only block
  // barrier of the item. (The previous item's wgmma all retired before its last barrier.)
  cp_async_wait<0>();
  fence_proxy_async();
  __syncthreads();

  float o[1][DB][4];
  float m[1][2] = {{neg_inf(), neg_inf()}};
  float l[1][2] = {{0.0F, 0.0F}};
#pragma unroll
  for (int db = 0; db < DB; ++db) o[0][db][0] = o[0][db][1] = o[0][db][2] = o[0][db][3] = 0.0F;
  // The P.V owed by the previous tile: its P fragments (the A registers of the wgmma, which
  // must hold until it retires) and its V stage. It is issued right after the next tile's
  // S = Q K^T, so the tensor cores run it while this warpgroup masks and exponentiates S.
  // Every tile issues one: when none is owed (the first tile, or after a tile that took the
  // exact path) it is P = 0 against the zero panel. A branch around the issue would make
  // ptxas serialize every wgmma of the kernel (C7520: "WG.AR in divergent path").
  std::uint32_t pa[KS][4];
  int pv_buf = Tr::kVStages;
  auto owe_nothing = [&] {
    pv_buf = Tr::kVStages;
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) pa[kk][0] = pa[kk][1] = pa[kk][2] = pa[kk][3] = 0U;
  };
  owe_nothing();
  // (The operand fences pin o and pa around the issue: no ordinary write of them may move
  // past wgmma.fence or below the mma_async, as CUTLASS's warpgroup_fence_operand does.)
  auto issue_pv = [&] {
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) {
      wgmma_rs_tb<T, D>(o[0], pa[kk], v_desc + pv_buf * kBufferStep + ((kk * 16U * 128U) >> 4),
                        true);
    }
    wgmma_commit();
    wgmma_fence_operand(o[0]);
    wgmma_fence_operand(pa);
  };
  // wgmma is a warpgroup instruction, and a branch around one between its issue and its wait
  // makes ptxas serialize all of them (C7518): both warpgroups run every tile, also the second
  // when qn <= 64 (its rows hold zero Q rows, see no NaN, and are never written).

  for (int i = 0; i < entries; ++i) {
    const int kbuf = i % Tr::kKStages;
    const int vbuf = i % Tr::kVStages;
    // Tile i: warpgroup 0's copies have landed, are visible to wgmma, and (the loader barrier)
    // all of its 128 threads' are. Warpgroup 1 learns it through kIssueOrderBarrier.
    cp_async_wait<0>();
    fence_proxy_async();
    named_barrier_sync_if(loader, kLoaderBarrier, kLoaderThreads);
    // The exact attempt scans V(i) with every thread: a block barrier first (rare path).
    if constexpr (kExact) __syncthreads();
    const int kt_prefetch = tile.next_key_tile();
    const auto [kt, bits_index] = tile.step(i);
    const int jn = min(BN, be.skv - kt * BN);
    const unsigned char* vb = vs + vbuf * Tr::kKVBytes;

    // The exact attempt: a tile whose V holds an Inf/NaN takes the exact P.V path.
    bool v_nonfinite = false;
    if constexpr (kExact) {
      const bool v_bad = tile_has_nonfinite<T, Tr::kChunks, Tr::kThreads>(jn, [&](int r, int c) {
        return reinterpret_cast<const T*>(vb + sw128_offset(Tr::kBlockN, r, c * 8));
      });
      v_nonfinite = __syncthreads_or(v_bad) != 0;
    }

    // ---- S = Q K^T: D / 16 k-steps of 16 columns (32 bytes), 4 per 64-column panel; the
    // first runs with scale-d = 0, so S needs no zero fill. Then the owed P.V. Warpgroup 1
    // issues after warpgroup 0 (FA3's scheduling barrier): S of warpgroup 0 then lands first
    // and its softmax runs under warpgroup 1's S and both P.Vs, rather than the two softmaxes
    // contending for issue slots while the tensor cores idle. ----
    std::uint32_t span[1][2];
    tile.template load_row_spans<1>(p, bits_index, row_bit, span);
    float s[1][NB][4];
    if (warpgroup == 1) named_barrier_sync(kIssueOrderBarrier, Tr::kThreads);
    wgmma_fence_operand(o[0]);
    wgmma_fence_operand(pa);
    wgmma_fence();  // pa and o were last written by ordinary instructions
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const std::uint32_t q_off = (kk / 4) * BM * 128 + (kk % 4) * 32;
      const std::uint32_t k_off = (kk / 4) * BN * 128 + (kk % 4) * 32;
      wgmma_ss<T, BN>(s[0], q_desc + (q_off >> 4), k_desc + kbuf * kBufferStep + (k_off >> 4),
                      kk > 0);
    }
    wgmma_commit();
    issue_pv();
    // Warpgroup 0: once warpgroup 1 is done with tile i - 1 (then also past its issue of tile
    // i - 1), let it issue tile i, and load tile i + 1 while S and the owed P.V run: its K into
    // the stage of tile i - 1 (S(i - 1) retired in both warpgroups: warpgroup 1's before its
    // stage-free arrival), its V into the stage of tile i - 2 (P.V(i - 2) retired in both). So
    // the copies must stay below the stage-free wait (a plant above it fails the dtype cases).
    named_barrier_sync_if(loader && i > 0, kStageFreeBarrier, Tr::kThreads);
    named_barrier_arrive_if(loader, kIssueOrderBarrier, Tr::kThreads);
    if (loader && i + 1 < entries) issue_kv(kt_prefetch, i + 1);
    wgmma_wait<1>();  // S has landed; the P.V may still run
    wgmma_fence_operand(s[0]);

    // ---- mask, logit transform, softmax statistics (the sm80 code), O untouched ----
    const float to_log2 =
        mask_tile<1, NB, BN, Tr::kWordsPerRow>(p, s, tile, bits_index, span, row_bit, warp_row0,
                                               group, tq, jn, qn, plain_softmax, raw_to_log2, post);
    float alpha[1][2];
    const bool rescale = softmax && softmax_statistics(s, m, l, alpha, to_log2);

    // ---- the owed P.V retires: O may be rescaled and pa refilled ----
    wgmma_wait<0>();
    wgmma_fence_operand(o[0]);
    wgmma_fence_operand(pa);
    if (rescale) rescale_output(o, alpha);
    if (!v_nonfinite) {
      pv_buf = vbuf;
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) probability_fragment<T>(s[0], kk, pa[kk]);
    } else {
      exact_pv<T>(s[0], o[0], jn, lane, tq, [&](int key, int col) {
        return reinterpret_cast<const T*>(vb + sw128_offset(Tr::kBlockN, key, col));
      });
      owe_nothing();
    }
    // Warpgroup 1 is done with tile i (warpgroup 0 waits for it in tile i + 1; not after the
    // last tile, where no one would).
    named_barrier_arrive_if(!loader && i + 1 < entries, kStageFreeBarrier, Tr::kThreads);
  }
  // The last tile's P.V (zeros when the item has no key tiles).
  wgmma_fence_operand(o[0]);
  wgmma_fence_operand(pa);
  wgmma_fence();
  issue_pv();
  wgmma_wait<0>();
  wgmma_fence_operand(o[0]);
  cp_async_wait<0>();  // Q alone was in flight when the tile has no key tiles
  // (After the barrier no thread reads this attempt's shared memory any more.)
  if (!kExact && __syncthreads_or(output_has_nonfinite(o, warp_row0, group, qn)) != 0) return false;

  store_forward_rows<T, D, BM, 1>(p, w, be, o, m, l, warp_row0, group, tq, qn);
  return true;
}

/// The exact attempt. Inlined, unlike sm80's: a call would make ptxas serialize every wgmma of
/// the kernel (C7510, "wgmma pipeline crossing function boundary"). Being a second instance
/// rather than a runtime flag keeps the fast attempt's registers: D = 128 206 (209 before the
/// exact attempt existed), D = 64 spills about as much as before.
template <class T, int D, int KEYS>
__device__ __forceinline__ void forward_wgmma_item_exact(const AttnParams p, int item) {
  forward_wgmma_item<T, D, KEYS, true>(p, item);
}

template <class T, int D, int KEYS>
__global__ void __launch_bounds__(ForwardWgmmaTraits<D, KEYS>::kThreads,
                                  ForwardWgmmaTraits<D, KEYS>::kMinBlocks)
    forward_wgmma_kernel(const AttnParams p) {
#ifdef LONGATTN_WGMMA_UNAVAILABLE
  __trap();  // not an sm_90a build of this kernel; the host never launches it
#else
  using Tr = ForwardWgmmaTraits<D, KEYS>;
  LONGATTN_DYNAMIC_SHARED(unsigned char, smem_raw);
  unsigned char* qs = smem_raw + (1024U - smem_addr(smem_raw) % 1024U) % 1024U;
  // V "stage" kVStages, after the K and V stages.
  unsigned char* zero_v = qs + Tr::kQBytes + (Tr::kKStages + Tr::kVStages) * Tr::kKVBytes;
  for (std::uint32_t b = 16U * threadIdx.x; b < Tr::kKVBytes; b += 16U * Tr::kThreads) {
    *reinterpret_cast<uint4*>(zero_v + b) = make_uint4(0U, 0U, 0U, 0U);
  }
  // NOTE: published to the async proxy (wgmma) here, before for_each_work_item's barrier: a
  // first item with no key tiles reads this panel before any tile's fence would have run.
  fence_proxy_async();

  for_each_work_item(p.work_counter, p.num_row_work, [&](int item) {
    if (!forward_wgmma_item<T, D, KEYS, false>(p, item)) {
      forward_wgmma_item_exact<T, D, KEYS>(p, item);
    }
  });
#endif  // LONGATTN_WGMMA_UNAVAILABLE
}

/// Resident blocks per SM (0 when the kernel cannot be configured).
template <int ELEM, int D, int KEYS>
int forward_wgmma_occupancy() {
  using T = std::conditional_t<ELEM == static_cast<int>(ElemType::kBF16), __nv_bfloat16, __half>;
  using Tr = ForwardWgmmaTraits<D, KEYS>;
  return resident_blocks(forward_wgmma_kernel<T, D, KEYS>, Tr::kThreads, Tr::kSmemBytes);
}

template <int ELEM, int D, int KEYS>
cudaError_t launch_forward_wgmma(const AttnParams& p, int grid, cudaStream_t stream) {
  using T = std::conditional_t<ELEM == static_cast<int>(ElemType::kBF16), __nv_bfloat16, __half>;
  return launch_forward_persistent<ForwardWgmmaTraits<D, KEYS>>(forward_wgmma_kernel<T, D, KEYS>, p,
                                                                grid, stream);
}

}  // namespace longattn::detail::cuda

/// Explicit instantiation of one (element type, head dim, key tile) Hopper forward (kernels.list
/// kinds fwdh: 128 x 64 tiles, fwdhk: 128 x 128; built for sm_90a only).
#define LONGATTN_INSTANTIATE_FORWARD_WGMMA_SHAPE(ELEM, D, KEYS)                     \
  template int longattn::detail::cuda::forward_wgmma_occupancy<ELEM, D, KEYS>();    \
  template cudaError_t longattn::detail::cuda::launch_forward_wgmma<ELEM, D, KEYS>( \
      const longattn::detail::cuda::AttnParams&, int, cudaStream_t);
#define LONGATTN_INSTANTIATE_FORWARD_WGMMA(ELEM, D) \
  LONGATTN_INSTANTIATE_FORWARD_WGMMA_SHAPE(ELEM, D, 64)
#define LONGATTN_INSTANTIATE_FORWARD_WGMMA_WIDE(ELEM, D) \
  LONGATTN_INSTANTIATE_FORWARD_WGMMA_SHAPE(ELEM, D, 128)
