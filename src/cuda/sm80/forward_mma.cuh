// SPDX-License-Identifier: Apache-2.0
// Tensor-core forward for bf16/fp16 (sm_80+): FlashAttention-2 over the block schedule.
//
// Block = WARPS warps x SLABS m16 slabs of query rows (warp w owns rows 16 SLABS w ..
// 16 SLABS (w + 1) - 1): 4 x 1 = 64 rows (decode, short sequences, D = 256); 128 rows for long
// prefill as 8 x 1 or 4 x 2 (FA2's shape: each K/V fragment read from shared memory feeds both
// slabs), against 64-key tiles (32 for D = 256) listed by the schedule. A warp whose rows are all
// past the tile's valid rows (decode tiles, sequence tails) skips the arithmetic and only takes
// part in the loads and barriers.
// Mainloop per key tile: S = Q K^T (mma.sync m16n8k16, Q and K fragments by ldmatrix); FULL key
// tiles of a plain softmax go straight to the exponent (scale folded into its FFMA), others are
// masked (the sequence end; PARTIAL: the tile's bitmask) and transformed (scale, softcap); online
// softmax (or sigmoid) in registers, O rescaled only when a row max moved; O += P V (P re-packed
// from the S accumulators as the A operand, V by ldmatrix.trans).
// K/V tiles are double buffered with cp.async. Shared rows are padded by 16 bytes, which makes
// every ldmatrix phase hit 8 distinct bank groups. The epilogue normalizes and writes O and the
// LSE, or a split-KV part for the merge kernel. The tile scheduler is the persistent longest-first
// loop of device.cuh; an sm_90 mainloop (wgmma + TMA) can replace mainloop() keeping the rest.
#pragma once

#include <cuda_runtime.h>

#include <type_traits>

#include "cuda/common/device.cuh"
#include "cuda/common/ptx.cuh"
#include "cuda/kernels.hpp"

namespace longattn::detail::cuda {

template <int D, int WARPS, int SLABS = 1>
struct ForwardMmaTraits {
  static constexpr int kWarps = WARPS;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlockM = 16 * WARPS * SLABS;  // SLABS m16 slabs of rows per warp
  static constexpr int kBlockN = mma_tile_k(D);
  static constexpr int kPitch = D + 8;   // elements per shared row (16-byte pad)
  static constexpr int kChunks = D / 8;  // 16-byte chunks per row
  static constexpr int kWordsPerRow = (kBlockM + 63) / 64;
  // Resident blocks per SM the registers must allow (at D <= 64 an H100's shared memory holds 4
  // blocks, an A100's 3: 16 warps need <= 128 registers; two slabs per warp need more).
  static constexpr int kMinBlocks = D <= 64 && SLABS == 1 ? 512 / kThreads : 1;
  static constexpr std::size_t kSmemBytes =
      sizeof(std::uint16_t) * static_cast<std::size_t>((kBlockM + 4 * kBlockN) * kPitch);
  static_assert(D % 16 == 0 && kBlockN % 16 == 0, "mma tiles");
  static_assert(SLABS == 1 || (SLABS == 2 && D <= 128), "one or two m16 slabs per warp");
};

/// Issues cp.async for `rows` rows [r0, r0 + n) of an operand (zero-filling rows >= n); the
/// 16-byte chunk c of tile row r goes to shared address dst(r, c) (the kernel's layout).
template <class T, int D, int THREADS, class Dst>
__device__ __forceinline__ void load_rows_async(Dst&& dst, int rows, const void* src,
                                                std::int64_t base, std::int64_t ts, int r0, int n) {
  constexpr int kChunks = D / 8;
  const T* s = static_cast<const T*>(src);
  for (int c = threadIdx.x; c < rows * kChunks; c += THREADS) {
    const int r = c / kChunks;
    const int ch = c - r * kChunks;
    const bool valid = r < n;
    const T* from = valid ? s + base + static_cast<std::int64_t>(r0 + r) * ts + ch * 8 : s;
    cp_async_16(dst(r, ch), from, valid);
  }
}
/// The same into rows padded by 16 bytes (D + 8 elements per row).
template <class T, int D, int THREADS>
__device__ __forceinline__ void load_tile_async(T* dst, int rows, const void* src,
                                                std::int64_t base, std::int64_t ts, int r0, int n) {
  load_rows_async<T, D, THREADS>(
      [dst](int r, int ch) { return smem_addr(dst + r * (D + 8) + ch * 8); }, rows, src, base, ts,
      r0, n);
}

/// The query tile of a work item (rows per tile_row: one head's queries, or with GQA packing
/// the group's heads' queries); rows >= qn are zero-filled; chunk c of row r to dst(r, c).
template <class T, int D, int THREADS, class Dst>
__device__ __forceinline__ void load_query_rows_async(Dst&& dst, int rows, const AttnParams& p,
                                                      const BatchEntry& be, int h, int qt, int qn) {
  constexpr int kChunks = D / 8;
  const T* q = static_cast<const T*>(p.q);
  for (int c = threadIdx.x; c < rows * kChunks; c += THREADS) {
    const int r = c / kChunks;
    const int ch = c - r * kChunks;
    const bool valid = r < qn;
    const T* from = q;
    if (valid) {
      const TileRow tr = tile_row(p, h, qt, rows, be.sq, r);
      from = q + be.q + static_cast<std::int64_t>(tr.query) * p.q_ts + tr.head * p.q_hs + ch * 8;
    }
    cp_async_16(dst(r, ch), from, valid);
  }
}
template <class T, int D, int THREADS>
__device__ __forceinline__ void load_query_tile_async(T* dst, int rows, const AttnParams& p,
                                                      const BatchEntry& be, int h, int qt, int qn) {
  load_query_rows_async<T, D, THREADS>(
      [dst](int r, int ch) { return smem_addr(dst + r * (D + 8) + ch * 8); }, rows, p, be, h, qt,
      qn);
}

/// Issues key tile kt of KV head kvh (K and V, BN rows each, rows past the sequence end
/// zero-filled) into buffer `buf` of the double-buffered ks / vs, as one cp.async group.
template <class T, int D, int BN, int THREADS>
__device__ __forceinline__ void issue_kv_tile(T* ks, T* vs, int buf, const AttnParams& p,
                                              const BatchEntry& be, int kvh, int kt) {
  constexpr int kPitch = D + 8;
  const int k0 = kt * BN;
  const int jn = min(BN, be.skv - k0);
  load_tile_async<T, D, THREADS>(ks + buf * BN * kPitch, BN, p.k, be.k + kvh * p.k_hs, p.k_ts, k0,
                                 jn);
  load_tile_async<T, D, THREADS>(vs + buf * BN * kPitch, BN, p.v, be.v + kvh * p.v_hs, p.v_ts, k0,
                                 jn);
  cp_async_commit();
}

/// One step of a double-buffered mainloop over `count` tiles (tile i in buffer i & 1): issues
/// tile i + 1 with issue(i + 1, buffer) when there is one, then waits until tile i has landed
/// and every thread of the block sees it.
template <class Issue>
__device__ __forceinline__ void await_tile(int i, int count, Issue&& issue) {
  if (i + 1 < count) {
    issue(i + 1, (i + 1) & 1);
    cp_async_wait<1>();
  } else {
    cp_async_wait<0>();
  }
  __syncthreads();
}

// ---- per-fragment steps shared with the sm_90 forward (sm90/forward_wgmma.cuh) ----
// Each thread holds, per m16 slab sl, rows warp_row0 + 16 sl + group (+ 8) and, per n8 block nb,
// columns 8 nb + 2 tq (+ 1): the C layout of mma.sync, which wgmma's accumulators share.

/// Masks and transforms the scores of one key tile: visible(sl, r, key) says whether this
/// thread's row r (group + 8 r) of slab sl sees key `key` of the tile. kRaw (a plain softmax:
/// positive scale, no softcap): hidden scores become -inf and the others stay raw dot products,
/// whose scale folds into the exponent as on FULL tiles; otherwise softmax logits in log2 units
/// (post = log2 e) or sigmoid probabilities.
template <bool kRaw, int SL, int NB, class Visible>
__device__ __forceinline__ void mask_and_transform(const AttnParams& p, float (&s)[SL][NB][4],
                                                   int tq, float post, Visible&& visible) {
  const bool softmax = p.softmax;
#pragma unroll
  for (int sl = 0; sl < SL; ++sl) {
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool seen = visible(sl, e >> 1, nb * 8 + tq * 2 + (e & 1));
        if constexpr (kRaw) {
          s[sl][nb][e] = seen ? s[sl][nb][e] : neg_inf();
        } else {
          const float x = capped_logit(p, s[sl][nb][e]) * post;
          if (softmax) {
            s[sl][nb][e] = seen ? x : neg_inf();
          } else {
            s[sl][nb][e] = seen ? 1.0F / (1.0F + expf(-(x + p.sigmoid_bias))) : 0.0F;
          }
        }
      }
    }
  }
}

/// Masks (the sequence end; PARTIAL tiles: their row spans, else their bitmask of WORDS 64-bit
/// words per key) and transforms the scores of one key tile, except a FULL tile of a plain
/// softmax, whose raw scores need neither. The softmax then scales scores by
/// `plain_softmax ? scale * log2 e : 1`. Rows past qn need no mask: their Q rows are zero,
/// nothing is written.
/// `span`: this thread's row spans of a PARTIAL tile (RowTile::load_row_spans, loaded before the
/// tile's S product so that their latency hides under it).
template <int SL, int NB, int BN, int WORDS, class RowTile>
__device__ __forceinline__ float mask_tile(const AttnParams& p, float (&s)[SL][NB][4],
                                           const RowTile& tile, int bits_index,
                                           const std::uint32_t (&span)[SL][2],
                                           const int (&row_bit)[SL][2], int warp_row0, int group,
                                           int tq, int jn, int qn, bool plain_softmax,
                                           float raw_to_log2, float post) {
  // (The tile's addresses are formed past this test, so that a FULL tile reads none of them.)
  if (plain_softmax && bits_index < 0 && jn == BN) return raw_to_log2;
  const std::uint64_t* tile_bits = tile.template tile_bits<BN, WORDS>(p, bits_index);
  // Every row of a PARTIAL tile sees one run of keys, or the tile's spans all say
  // kRowSpanUseBits: use_spans is block-uniform.
  int lo[SL][2] = {};
  unsigned width[SL][2] = {};
  bool use_spans = false;
  if (bits_index >= 0) {
#pragma unroll
    for (int sl = 0; sl < SL; ++sl) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = warp_row0 + sl * 16 + group + r * 8;
        lo[sl][r] = static_cast<int>(row_span_lo(span[sl][r]));
        width[sl][r] = row < qn ? row_span_width(span[sl][r]) : 0U;
      }
    }
    use_spans = span[0][0] != kRowSpanUseBits;
  }
  auto in_span = [&](int sl, int r, int key) {
    return static_cast<unsigned>(key - lo[sl][r]) < width[sl][r];
  };
  auto in_bits = [&](int sl, int r, int key) {
    const int row = warp_row0 + sl * 16 + group + r * 8;
    bool visible = key < jn && row < qn;
    if (visible && tile_bits != nullptr) {
      const int bit = row_bit[sl][r];
      const std::uint64_t word = tile_bits[key * WORDS + bit / 64];
      visible = ((word >> (bit % 64)) & 1U) != 0;
    }
    return visible;
  };
  if (plain_softmax && use_spans) {
    mask_and_transform<true>(p, s, tq, post, in_span);
    return raw_to_log2;
  }
  if (use_spans) {  // softcap, sigmoid, a negative scale
    mask_and_transform<false>(p, s, tq, post, in_span);
  } else {
    mask_and_transform<false>(p, s, tq, post, in_bits);
  }
  return 1.0F;
}

/// The statistics half of an online-softmax step: new row maxima m (log2 units; scores times
/// to_log2), the tile's probabilities in place of its scores, row sums l (per-thread partials;
/// the quad is summed in the epilogue) and each row's O factor alpha. Returns whether a row max
/// of the warp moved (O needs rescaling). O is not touched: the Hopper forward runs this while
/// the previous tile's P.V is still accumulating into it.
template <int SL, int NB>
__device__ __forceinline__ bool softmax_statistics(float (&s)[SL][NB][4], float (&m)[SL][2],
                                                   float (&l)[SL][2], float (&alpha)[SL][2],
                                                   float to_log2) {
  bool moved = false;
#pragma unroll
  for (int sl = 0; sl < SL; ++sl) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = neg_inf();
#pragma unroll
      for (int nb = 0; nb < NB; ++nb) {
        mx = fmaxf(mx, fmaxf(s[sl][nb][2 * r], s[sl][nb][2 * r + 1]));
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffU, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffU, mx, 2));
      const float m_new = fmaxf(m[sl][r], mx * to_log2);
      const float m_use = m_new == neg_inf() ? 0.0F : m_new;
      alpha[sl][r] = m_new == m[sl][r] ? 1.0F : exp2_ftz(m[sl][r] - m_use);
      moved |= alpha[sl][r] != 1.0F;
      float sum = 0.0F;
#pragma unroll
      for (int nb = 0; nb < NB; ++nb) {
        s[sl][nb][2 * r] = exp2_ftz(fmaf(s[sl][nb][2 * r], to_log2, -m_use));
        s[sl][nb][2 * r + 1] = exp2_ftz(fmaf(s[sl][nb][2 * r + 1], to_log2, -m_use));
        sum += s[sl][nb][2 * r] + s[sl][nb][2 * r + 1];
      }
      l[sl][r] = l[sl][r] * alpha[sl][r] + sum;
      m[sl][r] = m_new;
    }
  }
  // Past the first tiles of a long row most tiles leave every max of the warp unchanged (x1
  // would be exact anyway): the caller then skips the rescale.
  return __any_sync(0xffffffffU, moved) != 0;
}

/// The O half of an online-softmax step: rows times their alpha.
template <int SL, int DB>
__device__ __forceinline__ void rescale_output(float (&o)[SL][DB][4], const float (&alpha)[SL][2]) {
#pragma unroll
  for (int sl = 0; sl < SL; ++sl) {
#pragma unroll
    for (int db = 0; db < DB; ++db) {
      o[sl][db][0] *= alpha[sl][0];
      o[sl][db][1] *= alpha[sl][0];
      o[sl][db][2] *= alpha[sl][1];
      o[sl][db][3] *= alpha[sl][1];
    }
  }
}

/// One online-softmax step: the statistics, then O rescaled when a row max of the warp moved.
template <int SL, int NB, int DB>
__device__ __forceinline__ void online_softmax(float (&s)[SL][NB][4], float (&m)[SL][2],
                                               float (&l)[SL][2], float (&o)[SL][DB][4],
                                               float to_log2) {
  float alpha[SL][2];
  if (softmax_statistics(s, m, l, alpha, to_log2)) rescale_output(o, alpha);
}

/// The A fragment of k-step kk (keys 16 kk .. 16 kk + 15) of P, from the probabilities.
template <class T, int NB>
__device__ __forceinline__ void probability_fragment(const float (&ps)[NB][4], int kk,
                                                     std::uint32_t (&a)[4]) {
  a[0] = pack_pair<T>(ps[2 * kk][0], ps[2 * kk][1]);
  a[1] = pack_pair<T>(ps[2 * kk][2], ps[2 * kk][3]);
  a[2] = pack_pair<T>(ps[2 * kk + 1][0], ps[2 * kk + 1][1]);
  a[3] = pack_pair<T>(ps[2 * kk + 1][2], ps[2 * kk + 1][3]);
}

/// True when this thread's share of the V tile (jn rows of CHUNKS 16-byte chunks; chunk(r, c)
/// its address) holds an Inf/NaN. The caller OR-reduces it over the block.
template <class T, int CHUNKS, int THREADS, class Chunk>
__device__ __forceinline__ bool tile_has_nonfinite(int jn, Chunk&& chunk) {
  bool bad = false;
  for (int c = threadIdx.x; c < jn * CHUNKS; c += THREADS) {
    const int r = c / CHUNKS;
    const auto* e = reinterpret_cast<const std::uint16_t*>(chunk(r, c - r * CHUNKS));
#pragma unroll
    for (int x = 0; x < 8; ++x) bad |= nonfinite_bits<T>(e[x]);
  }
  return bad;
}

/// True when one of this thread's O accumulators in rows below qn (SL slabs of 16 rows from
/// warp_row0; rows group and group + 8) is Inf or NaN. The caller OR-reduces it over the block.
template <int SL, int DB>
__device__ __forceinline__ bool output_has_nonfinite(const float (&o)[SL][DB][4], int warp_row0,
                                                     int group, int qn) {
  bool bad = false;
#pragma unroll
  for (int sl = 0; sl < SL; ++sl) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      if (warp_row0 + sl * 16 + group + r * 8 >= qn) continue;
#pragma unroll
      for (int db = 0; db < DB; ++db) {
        // (NaN fails the comparison.)
        bad |= !(fabsf(o[sl][db][2 * r]) < pos_inf());
        bad |= !(fabsf(o[sl][db][2 * r + 1]) < pos_inf());
      }
    }
  }
  return bad;
}

/// The exact P.V of one slab for a tile whose V holds Inf/NaN: a weight of zero never reads V.
/// v_pair(key, col) is the address of V elements (key, col), (key, col + 1) (col even).
/// NOTE: the n8 blocks of keys are a runtime loop (#pragma unroll 1) that picks its block's
/// weights from the registers with a select chain: unrolled, this rare path was ~27k of the
/// 128-row kernel's 38k instructions.
template <class T, int NB, int DB, class VPair>
__device__ __forceinline__ void exact_pv(const float (&ps)[NB][4], float (&os)[DB][4], int jn,
                                         int lane, int tq, VPair&& v_pair) {
#pragma unroll 1
  for (int nb = 0; nb < NB && nb * 8 < jn; ++nb) {
    float pw[4];
#pragma unroll
    for (int x = 0; x < 4; ++x) {
      pw[x] = ps[0][x];
#pragma unroll
      for (int c = 1; c < NB; ++c) pw[x] = nb == c ? ps[c][x] : pw[x];
    }
#pragma unroll
    for (int t = 0; t < 8; ++t) {
      const int key = nb * 8 + t;
      // The weights of key `key` for rows group and group + 8, from the quad's thread that holds
      // that key's column.
      const int src = (lane & ~3) | (t >> 1);
      const float p0 = __shfl_sync(0xffffffffU, pw[t & 1], src);
      const float p1 = __shfl_sync(0xffffffffU, pw[2 + (t & 1)], src);
      if (key >= jn) break;  // warp-uniform
#pragma unroll
      for (int db = 0; db < DB; ++db) {
        const T* vp = v_pair(key, db * 8 + tq * 2);
        const float v0 = to_float(vp[0]);
        const float v1 = to_float(vp[1]);
        os[db][0] = p0 != 0.0F ? fmaf(p0, v0, os[db][0]) : os[db][0];
        os[db][1] = p0 != 0.0F ? fmaf(p0, v1, os[db][1]) : os[db][1];
        os[db][2] = p1 != 0.0F ? fmaf(p1, v0, os[db][2]) : os[db][2];
        os[db][3] = p1 != 0.0F ? fmaf(p1, v1, os[db][3]) : os[db][3];
      }
    }
  }
}

/// One work item of the tensor-core forwards: a BM-row query tile and its list of key tiles.
/// The list entries travel one tile ahead of their use, so that no global load of the list sits
/// between a barrier and the cp.async issue that needs it: the key tile to prefetch next is in
/// a register (next_key_tile) when it is issued, and an entry's bitmask index when it runs.
template <int BM>
struct ForwardRowTile {
  RowWork w;
  BatchEntry be;
  int kvh;
  int q0;       // first query of the tile (its row 0's offset in the schedule's bitmask rows)
  int qn;       // rows of the tile
  int entries;  // key tiles
  std::int64_t bits_base;
  std::int64_t spans_base;
  const std::int32_t* key_tiles;
  const std::int32_t* tile_bits_index;
  int kt_cur = 0;     // entry i's key tile, before step(i)
  int bits_cur = -1;  // entry i's bitmask index (-1: FULL), before step(i)
  int kt_next = 0;    // entry i + 1's key tile, before step(i)

  __device__ __forceinline__ ForwardRowTile(const AttnParams& p, int item)
      : w(p.row_work[item]),
        be(p.batch[w.b]),
        kvh(w.h / p.group),
        q0(w.qt * BM),
        qn(tile_rows(p, w.qt, BM, be.sq)),
        entries(static_cast<int>(w.end - w.begin)) {
    const SlotRef sr = schedule_of(p, w.b, w.h);
    bits_base = sr.entry.bits;
    spans_base = sr.entry.spans;
    key_tiles = p.sched.key_tile + sr.base + w.begin;
    tile_bits_index = p.sched.row_bits + sr.base + w.begin;
    if (entries > 0) {
      kt_cur = key_tiles[0];
      bits_cur = tile_bits_index[0];
    }
    if (entries > 1) kt_next = key_tiles[1];
  }

  /// Entry 0's key tile (before step(0)): the first prefetch.
  [[nodiscard]] __device__ __forceinline__ int first_key_tile() const { return kt_cur; }
  /// The key tile of the entry after the next step's (before step(i): entry i + 1's).
  [[nodiscard]] __device__ __forceinline__ int next_key_tile() const { return kt_next; }

  struct Entry {
    int kt;          // key tile
    int bits_index;  // row bitmask of a PARTIAL tile, -1 for a FULL one
  };
  /// Entry i (called with i = 0, 1, ... in turn); reads the list ahead for the next calls.
  __device__ __forceinline__ Entry step(int i) {
    const Entry e{kt_cur, bits_cur};
    kt_cur = kt_next;
    bits_cur = i + 1 < entries ? tile_bits_index[i + 1] : -1;
    kt_next = i + 2 < entries ? key_tiles[i + 2] : 0;
    return e;
  }

  /// The bitmask rows (BN keys x WORDS words) of a PARTIAL tile, nullptr for a FULL one.
  template <int BN, int WORDS>
  [[nodiscard]] __device__ __forceinline__ const std::uint64_t* tile_bits(const AttnParams& p,
                                                                          int bits_index) const {
    return bits_index >= 0
               ? p.sched.bits + bits_base + static_cast<std::int64_t>(bits_index) * BN * WORDS
               : nullptr;
  }

  /// The row spans (p.sched.tile_q) of a PARTIAL tile, nullptr for a FULL one.
  [[nodiscard]] __device__ __forceinline__ const std::uint32_t* tile_spans(const AttnParams& p,
                                                                           int bits_index) const {
    return bits_index >= 0 ? p.sched.row_spans + spans_base +
                                 static_cast<std::int64_t>(bits_index) * p.sched.tile_q
                           : nullptr;
  }

  /// This thread's row spans of a PARTIAL tile (SL slabs, rows group and group + 8 of each), for
  /// mask_tile; a FULL tile loads none (mask_tile reads none). Called before the tile's S
  /// product, whose instructions then hide the loads' latency.
  template <int SL>
  __device__ __forceinline__ void load_row_spans(const AttnParams& p, int bits_index,
                                                 const int (&bit)[SL][2],
                                                 std::uint32_t (&span)[SL][2]) const {
    const std::uint32_t* spans = tile_spans(p, bits_index);
#pragma unroll
    for (int sl = 0; sl < SL; ++sl) {
      span[sl][0] = spans != nullptr ? spans[bit[sl][0]] : 0U;
      span[sl][1] = spans != nullptr ? spans[bit[sl][1]] : 0U;
    }
  }

  /// The bitmask bit of each of this thread's rows (SL slabs of 16 from warp_row0; rows group
  /// and group + 8): the query's offset in its schedule tile.
  template <int SL>
  __device__ __forceinline__ void row_bits(const AttnParams& p, int warp_row0, int group,
                                           int (&bit)[SL][2]) const {
#pragma unroll
    for (int sl = 0; sl < SL; ++sl) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = warp_row0 + sl * 16 + group + r * 8;
        bit[sl][r] = row < qn ? tile_row(p, w.h, w.qt, BM, be.sq, row).query - q0 : 0;
      }
    }
  }
};

/// The epilogue of a work item: this thread's rows of O normalized and written with the LSE,
/// or (w.part >= 0) the unnormalized split-KV part for the merge kernel.
template <class T, int D, int BM, int SL>
__device__ __forceinline__ void store_forward_rows(const AttnParams& p, const RowWork& w,
                                                   const BatchEntry& be, float (&o)[SL][D / 8][4],
                                                   float (&m)[SL][2], float (&l)[SL][2],
                                                   int warp_row0, int group, int tq, int qn) {
  constexpr int DB = D / 8;
  const bool softmax = p.softmax;
#pragma unroll
  for (int sl = 0; sl < SL; ++sl) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l[sl][r] += __shfl_xor_sync(0xffffffffU, l[sl][r], 1);
      l[sl][r] += __shfl_xor_sync(0xffffffffU, l[sl][r], 2);
      const int row = warp_row0 + sl * 16 + group + r * 8;
      if (row >= qn) continue;
      if (w.part >= 0) {
        const std::int64_t prow = static_cast<std::int64_t>(w.part) * BM + row;
#pragma unroll
        for (int db = 0; db < DB; ++db) {
          float* dst = p.part_acc + prow * D + db * 8 + tq * 2;
          dst[0] = o[sl][db][2 * r];
          dst[1] = o[sl][db][2 * r + 1];
        }
        if (tq == 0) {
          p.part_ml[2 * prow] = m[sl][r];
          p.part_ml[2 * prow + 1] = l[sl][r];
        }
        continue;
      }
      const TileRow tr = tile_row(p, w.h, w.qt, BM, be.sq, row);
      const RowFinal f =
          softmax ? finalize_row(m[sl][r], l[sl][r], sink_log2(p, tr.head)) : RowFinal{1.0F, 0.0F};
      T* orow = static_cast<T*>(p.out) + be.out + static_cast<std::int64_t>(tr.query) * p.o_ts +
                tr.head * p.o_hs;
#pragma unroll
      for (int db = 0; db < DB; ++db) {
        *reinterpret_cast<std::uint32_t*>(orow + db * 8 + tq * 2) =
            pack_pair<T>(o[sl][db][2 * r] * f.factor, o[sl][db][2 * r + 1] * f.factor);
      }
      if (tq == 0 && p.lse != nullptr && softmax) {
        p.lse[be.lse + tr.head * p.lse_hs + static_cast<std::int64_t>(tr.query) * p.lse_ts] = f.lse;
      }
    }
  }
}

/// One work item of forward_mma_kernel. Inf/NaN in V: the tensor-core P.V spreads them through
/// zero weights (masked keys, scores of -Inf), where the oracle's exact product never reads V.
/// Such a product always leaves an Inf/NaN in O, so the fast attempt (kExact = false) never looks
/// at V; when O comes out with an Inf or NaN it returns false without storing, and the work item
/// runs again as the exact attempt, which scans V in every tile and takes the exact P.V path in
/// those that hold one.
template <class T, int D, int WARPS, int SLABS, bool kExact>
__device__ __forceinline__ bool forward_mma_item(const AttnParams& p, int item) {
  using Tr = ForwardMmaTraits<D, WARPS, SLABS>;
  constexpr int SL = SLABS;  // m16 slabs per warp: rows warp * 16 * SL .. + 16 * SL - 1
  constexpr int BM = Tr::kBlockM;
  constexpr int BN = Tr::kBlockN;
  constexpr int P = Tr::kPitch;
  constexpr int NB = BN / 8;  // n8 blocks of S
  constexpr int DB = D / 8;   // n8 blocks of O
  LONGATTN_DYNAMIC_SHARED(unsigned char, smem_raw);
  T* qs = reinterpret_cast<T*>(smem_raw);  // [BM][P]
  T* ks = qs + BM * P;                     // [2][BN][P]
  T* vs = ks + 2 * BN * P;                 // [2][BN][P]
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int group = lane >> 2;
  const int tq = lane & 3;
  const bool softmax = p.softmax;
  const float post = softmax ? kLog2eF : 1.0F;
  // A plain softmax (no softcap, positive scale) keeps raw dot products (hidden ones -inf; FULL
  // tiles skip the mask): the row max is taken over them and the scale folds into the exponent's
  // FFMA (FA2's way). Elsewhere the scores are transformed first (factor 1).
  const bool plain_softmax = softmax && p.softcap <= 0.0F && p.scale > 0.0F;
  const float raw_to_log2 = p.scale * kLog2eF;
  const int warp_row0 = warp * 16 * SL;  // first tile row of this warp

  ForwardRowTile<BM> tile(p, item);
  const RowWork& w = tile.w;
  const BatchEntry& be = tile.be;
  const int qn = tile.qn;
  const int entries = tile.entries;
  auto issue_next = [&](int, int buf) {
    issue_kv_tile<T, D, BN, Tr::kThreads>(ks, vs, buf, p, be, tile.kvh, tile.next_key_tile());
  };
  load_query_tile_async<T, D, Tr::kThreads>(qs, BM, p, be, w.h, w.qt, qn);
  cp_async_commit();
  if (entries > 0)
    issue_kv_tile<T, D, BN, Tr::kThreads>(ks, vs, 0, p, be, tile.kvh, tile.first_key_tile());
  int row_bit[SL][2];
  tile.template row_bits<SL>(p, warp_row0, group, row_bit);

  float o[SL][DB][4];
  float m[SL][2];
  float l[SL][2];
#pragma unroll
  for (int sl = 0; sl < SL; ++sl) {
#pragma unroll
    for (int db = 0; db < DB; ++db)
      o[sl][db][0] = o[sl][db][1] = o[sl][db][2] = o[sl][db][3] = 0.0F;
    m[sl][0] = m[sl][1] = neg_inf();
    l[sl][0] = l[sl][1] = 0.0F;
  }
  const bool warp_active = warp_row0 < qn;  // warp-uniform

  for (int i = 0; i < entries; ++i) {
    const int buf = i & 1;
    await_tile(i, entries, issue_next);
    const auto [kt, bits_index] = tile.step(i);
    const int jn = min(BN, be.skv - kt * BN);
    const T* kb = ks + buf * BN * P;
    const T* vb = vs + buf * BN * P;

    // The exact attempt: a tile whose V holds an Inf/NaN takes the exact P.V path below.
    bool v_nonfinite = false;
    if constexpr (kExact) {  // block-uniform, so the barrier below is too
      const bool v_bad = tile_has_nonfinite<T, Tr::kChunks, Tr::kThreads>(
          jn, [&](int r, int c) { return vb + r * P + c * 8; });
      v_nonfinite = __syncthreads_or(v_bad) != 0;
    }

    if (warp_active) {
      std::uint32_t span[SL][2];
      tile.template load_row_spans<SL>(p, bits_index, row_bit, span);
      // ---- S = Q K^T (each K fragment serves the warp's SL slabs) ----
      float s[SL][NB][4];
#pragma unroll
      for (int sl = 0; sl < SL; ++sl) {
#pragma unroll
        for (int nb = 0; nb < NB; ++nb)
          s[sl][nb][0] = s[sl][nb][1] = s[sl][nb][2] = s[sl][nb][3] = 0.0F;
      }
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        std::uint32_t a[SL][4];
#pragma unroll
        for (int sl = 0; sl < SL; ++sl) {
          ldmatrix_x4(a[sl], smem_addr(qs + (warp_row0 + sl * 16 + (lane % 16)) * P + kk * 16 +
                                       (lane / 16) * 8));
        }
#pragma unroll
        for (int nb = 0; nb < NB; nb += 2) {
          std::uint32_t b[4];
          ldmatrix_x4(b, smem_addr(kb + (nb * 8 + (lane % 8) + (lane / 16) * 8) * P + kk * 16 +
                                   ((lane / 8) & 1) * 8));
#pragma unroll
          for (int sl = 0; sl < SL; ++sl) {
            mma_16816<T>(s[sl][nb], a[sl], b[0], b[1]);
            mma_16816<T>(s[sl][nb + 1], a[sl], b[2], b[3]);
          }
        }
      }

      // ---- mask, logit transform, online softmax (rows group and group + 8 of each slab) ----
      const float to_log2 = mask_tile<SL, NB, BN, Tr::kWordsPerRow>(
          p, s, tile, bits_index, span, row_bit, warp_row0, group, tq, jn, qn, plain_softmax,
          raw_to_log2, post);
      if (softmax) online_softmax(s, m, l, o, to_log2);

      // ---- O += P V (each V fragment serves the warp's SL slabs) ----
      if (!v_nonfinite) {
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
          std::uint32_t a[SL][4];
#pragma unroll
          for (int sl = 0; sl < SL; ++sl) probability_fragment<T>(s[sl], kk, a[sl]);
#pragma unroll
          for (int db = 0; db < DB; db += 2) {
            std::uint32_t b[4];
            ldmatrix_x4_trans(b, smem_addr(vb + (kk * 16 + (lane % 8) + ((lane / 8) & 1) * 8) * P +
                                           db * 8 + (lane / 16) * 8));
#pragma unroll
            for (int sl = 0; sl < SL; ++sl) {
              mma_16816<T>(o[sl][db], a[sl], b[0], b[1]);
              mma_16816<T>(o[sl][db + 1], a[sl], b[2], b[3]);
            }
          }
        }
      } else {
        // Exact path, one slab at a time.
        auto v_pair = [&](int key, int col) { return vb + key * P + col; };
        exact_pv<T>(s[0], o[0], jn, lane, tq, v_pair);
        if constexpr (SL == 2) exact_pv<T>(s[1], o[1], jn, lane, tq, v_pair);
      }
    }
    __syncthreads();  // this buffer is refilled by the prefetch of iteration i + 2
  }
  cp_async_wait<0>();  // Q alone was in flight when the tile has no key tiles
  // (After the barrier no thread reads this attempt's shared memory any more.)
  if (!kExact && __syncthreads_or(output_has_nonfinite(o, warp_row0, group, qn)) != 0) return false;

  store_forward_rows<T, D, BM, SL>(p, w, be, o, m, l, warp_row0, group, tq, qn);
  return true;
}

/// The exact attempt out of line: inlined, its registers (the exact P.V, the V scan) would add
/// to the fast attempt's and spill in the hot loop of the 32-row-slab kernels.
template <class T, int D, int WARPS, int SLABS>
__device__ LONGATTN_NOINLINE void forward_mma_item_exact(const AttnParams p, int item) {
  forward_mma_item<T, D, WARPS, SLABS, true>(p, item);
}

template <class T, int D, int WARPS, int SLABS>
__global__ void __launch_bounds__(ForwardMmaTraits<D, WARPS, SLABS>::kThreads,
                                  ForwardMmaTraits<D, WARPS, SLABS>::kMinBlocks)
    forward_mma_kernel(const AttnParams p) {
  for_each_work_item(p.work_counter, p.num_row_work, [&](int item) {
    if (!forward_mma_item<T, D, WARPS, SLABS, false>(p, item)) {
      forward_mma_item_exact<T, D, WARPS, SLABS>(p, item);
    }
  });
}

/// Launches a persistent forward of traits Tr over `grid` blocks, then the split-KV merge (when
/// p has parts). The schedule must have been built for the kernel's tiles.
template <class Tr, class Kernel>
cudaError_t launch_forward_persistent(Kernel* kernel, const AttnParams& p, int grid,
                                      cudaStream_t stream) {
  if (p.sched.tile_q != Tr::kBlockM || p.sched.tile_k != Tr::kBlockN) return cudaErrorInvalidValue;
  if (cudaError_t e = allow_dynamic_smem(kernel, Tr::kSmemBytes); e != cudaSuccess) return e;
  launch_kernel(kernel, grid, Tr::kThreads, Tr::kSmemBytes, stream, p);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  return launch_merge(p, stream);
}

/// Resident blocks per SM (0 when the kernel cannot be configured).
template <int ELEM, int D, int WARPS, int SLABS>
int forward_mma_occupancy() {
  using T = std::conditional_t<ELEM == static_cast<int>(ElemType::kBF16), __nv_bfloat16, __half>;
  using Tr = ForwardMmaTraits<D, WARPS, SLABS>;
  return resident_blocks(forward_mma_kernel<T, D, WARPS, SLABS>, Tr::kThreads, Tr::kSmemBytes);
}

template <int ELEM, int D, int WARPS, int SLABS>
cudaError_t launch_forward_mma(const AttnParams& p, int grid, cudaStream_t stream) {
  using T = std::conditional_t<ELEM == static_cast<int>(ElemType::kBF16), __nv_bfloat16, __half>;
  return launch_forward_persistent<ForwardMmaTraits<D, WARPS, SLABS>>(
      forward_mma_kernel<T, D, WARPS, SLABS>, p, grid, stream);
}

}  // namespace longattn::detail::cuda

/// Explicit instantiation of one (element type, head dim, warps, slabs per warp) forward: one
/// per generated file (kernels.list kind fwd: 4 warps x 16 rows = 64-row tiles; fwdw: 8 warps x
/// 16 rows = 128; fwdt: 4 warps x 32 rows = 128, each K/V fragment serving two m16 slabs).
#define LONGATTN_INSTANTIATE_FORWARD_MMA_SHAPE(ELEM, D, WARPS, SLABS)                     \
  template int longattn::detail::cuda::forward_mma_occupancy<ELEM, D, WARPS, SLABS>();    \
  template cudaError_t longattn::detail::cuda::launch_forward_mma<ELEM, D, WARPS, SLABS>( \
      const longattn::detail::cuda::AttnParams&, int, cudaStream_t);
#define LONGATTN_INSTANTIATE_FORWARD_MMA(ELEM, D) \
  LONGATTN_INSTANTIATE_FORWARD_MMA_SHAPE(ELEM, D, 4, 1)
#define LONGATTN_INSTANTIATE_FORWARD_MMA_WIDE(ELEM, D) \
  LONGATTN_INSTANTIATE_FORWARD_MMA_SHAPE(ELEM, D, 8, 1)
#define LONGATTN_INSTANTIATE_FORWARD_MMA_TALL(ELEM, D) \
  LONGATTN_INSTANTIATE_FORWARD_MMA_SHAPE(ELEM, D, 4, 2)
