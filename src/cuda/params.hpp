// SPDX-License-Identifier: Apache-2.0
// Plain kernel parameters shared by the host orchestration (g++) and the kernels (nvcc).
// Everything is a pointer into device memory, an element stride or a size; no CUDA types, so
// host code that only fills these structs needs no CUDA headers (DESIGN.md §2).
#pragma once

#include <cstdint>

namespace longattn::detail::cuda {

/// Input element type of a kernel instantiation.
enum class ElemType : std::uint8_t { kF32, kF16, kBF16 };

/// Per-batch-entry addressing, one row of the batch table (all in elements).
struct BatchEntry {
  std::int64_t q = 0, k = 0, v = 0, out = 0;  // offset of (b, token 0, head 0)
  std::int64_t dout = 0, dq = 0, dk = 0, dv = 0;
  std::int64_t lse = 0;     // offset of (b, head 0, token 0) in the lse vector
  std::int64_t row = 0;     // first row of this entry in per-row workspaces ([b][h][i] packing)
  std::int64_t kv_row = 0;  // the same for K/V rows ([b][kvh][j] packing)
  std::int32_t sq = 0, skv = 0;
};

/// One schedule slot on the device (offsets into the concatenated schedule arrays).
struct SlotEntry {
  std::int64_t row_offsets = 0;  // into DeviceSchedule::row_offsets (q_tiles + 1 entries)
  std::int64_t col_offsets = 0;  // into DeviceSchedule::col_offsets (k_tiles + 1 entries)
  std::int64_t bits = 0;         // into DeviceSchedule::bits (words)
  std::int64_t spans = 0;        // into DeviceSchedule::row_spans
  std::int32_t q_tiles = 0, k_tiles = 0;
};

/// Row spans of a PARTIAL tile (DeviceSchedule::row_spans): per query row of the tile, the keys
/// [lo, lo + width) of the tile it sees, packed lo | width << 16, when every row sees one run of
/// keys (or none: width 0). Otherwise every entry of that tile is kRowSpanUseBits and the kernels
/// test its bitmask instead. A span costs a compare per score; the bitmask a load per score.
inline constexpr std::uint32_t kRowSpanUseBits = 0xFFFFFFFFU;
[[nodiscard]] constexpr std::uint32_t pack_row_span(std::uint32_t lo, std::uint32_t width) {
  return lo | (width << 16U);
}
[[nodiscard]] constexpr std::uint32_t row_span_lo(std::uint32_t span) { return span & 0xFFFFU; }
[[nodiscard]] constexpr std::uint32_t row_span_width(std::uint32_t span) { return span >> 16U; }

/// A ScheduleSet uploaded for one tile shape: row CSR (query tile -> key tiles) and its
/// transpose (key tile -> query tiles), both pointing at the same PARTIAL bitmasks.
struct DeviceSchedule {
  std::int32_t tile_q = 0, tile_k = 0, words_per_row = 1;
  const std::int32_t* slot_of = nullptr;  // [batch * hq]
  const SlotEntry* slots = nullptr;
  const std::int64_t* row_offsets = nullptr;  // per slot, relative to the slot's entry base
  const std::int32_t* key_tile = nullptr;
  const std::int32_t* row_bits = nullptr;  // bits_index per row entry (-1 = FULL)
  const std::int64_t* col_offsets = nullptr;
  const std::int32_t* q_tile = nullptr;
  const std::int32_t* col_bits = nullptr;
  const std::uint64_t* bits = nullptr;
  /// Per PARTIAL tile (its bits_index), tile_q row spans (kRowSpanUseBits: read the bitmask).
  const std::uint32_t* row_spans = nullptr;
  const std::int64_t* entry_base = nullptr;  // per slot: first row entry in key_tile/row_bits
};

/// A unit of forward (or dQ) work: one query tile of one (batch, head), over row entries
/// [begin, end) of its schedule; `part` >= 0 writes a split-KV partial instead of the output.
struct RowWork {
  std::int32_t b = 0, h = 0, qt = 0, part = -1;
  std::int64_t begin = 0, end = 0;
};

/// The split-KV parts [first, first + count) of one query tile, merged in that order.
struct MergeWork {
  std::int32_t b = 0, h = 0, qt = 0, count = 0;
  std::int64_t first = 0;
};

/// A unit of dK/dV work: one key tile of one (batch, KV head).
struct ColWork {
  std::int32_t b = 0, kvh = 0, kt = 0, pad = 0;
};

/// Everything the attention kernels read; filled by the host from a validated Problem.
struct AttnParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  float* lse = nullptr;  // may be null (forward)
  const void* dout = nullptr;
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  std::int64_t q_ts = 0, q_hs = 0, k_ts = 0, k_hs = 0, v_ts = 0, v_hs = 0, o_ts = 0, o_hs = 0;
  std::int64_t do_ts = 0, do_hs = 0, dq_ts = 0, dq_hs = 0, dk_ts = 0, dk_hs = 0, dv_ts = 0,
               dv_hs = 0;
  std::int64_t lse_hs = 0, lse_ts = 0;
  const BatchEntry* batch = nullptr;
  std::int32_t num_batch = 0, hq = 0, hkv = 0, group = 1, dim = 0;
  ElemType elem = ElemType::kF32;
  bool softmax = true;
  /// GQA packing (decode shapes): a query tile holds the queries of all `group` heads of one KV
  /// head, head-major (row = g * sq + i); RowWork::h is the group's first head, qt is 0.
  bool pack_gqa = false;
  float scale = 1.0F;
  float softcap = 0.0F;          // 0 = off
  float softcap_inverse = 0.0F;  // 1 / softcap (0 when off): a multiply, not a division, per score
  float sigmoid_bias = 0.0F;
  const float* sink_logits = nullptr;  // device [hq] or null

  DeviceSchedule sched;

  // Forward work (also the dQ pass of the backward).
  const RowWork* row_work = nullptr;
  std::int32_t num_row_work = 0;
  // Backward dK/dV work.
  const ColWork* col_work = nullptr;
  std::int32_t num_col_work = 0;
  std::int32_t* work_counter = nullptr;  // zeroed before each persistent launch

  // Split-KV partials: per part, tile_q rows of acc[dim] and (m, l), merged by merge_work.
  float* part_acc = nullptr;
  float* part_ml = nullptr;
  const MergeWork* merge_work = nullptr;
  std::int32_t num_merge_work = 0;

  float* dsink = nullptr;  // backward: device fp32 [hq] (stride dsink_stride) or null
  std::int64_t dsink_stride = 1;

  // Backward per-row workspaces ([b][h][i] packing via BatchEntry::row: packed row
  // row * hq + h * sq + i), packed_rows of them.
  std::int64_t packed_rows = 0;
  float* row_dot = nullptr;   // D_i = dO_i . O_i
  float* row_lse2 = nullptr;  // lse in log2 units; +inf for a row that saw nothing
  /// Fast (non-deterministic) tensor-core backward: fp32 dQ accumulator [packed_rows][dim],
  /// zeroed before the launch, added to with atomics (the Hopper backward: bulk reductions, and
  /// each row's 32-byte units permuted, dq_swizzled_column). Null = the deterministic dQ pass.
  float* dq_accum = nullptr;
  /// Hopper backward only: add dQ with red.global.add per thread (into the same row-swizzled
  /// accumulator layout) instead of one bulk reduction per tile; LONGATTN_CUDA_HOPPER_DQ=atomic,
  /// an A/B switch for measuring the bulk path.
  bool hopper_dq_atomics = false;
  /// Tensor-core backward: the prologue sets *nonfinite when Q, K, V or dO hold an Inf or NaN
  /// (it scans packed_kv_rows K/V rows besides the query rows). The tensor-core kernels then
  /// return at once and the generic kernels, which skip zero-probability pairs element by
  /// element (x * 0 is NaN for x = Inf/NaN), compute every gradient; with *nonfinite == 0 the
  /// generic kernels return at once. Null on the generic path: its kernels always run.
  std::int32_t* nonfinite = nullptr;
  std::int64_t packed_kv_rows = 0;
};

}  // namespace longattn::detail::cuda
