// SPDX-License-Identifier: Apache-2.0
// The CUDA backend's work lists, built on the host from a compiled schedule (plain C++, no CUDA:
// compiled in every build so the tests check the bookkeeping on machines without a GPU).
#pragma once

#include <cstdint>
#include <vector>

#include "core/problem.hpp"
#include "core/schedule.hpp"
#include "cuda/params.hpp"

namespace longattn::detail::cuda {

/// What the kernels walk, longest first.
struct WorkLists {
  /// Forward items: one per query tile (per KV group when packed), or split-KV parts of it.
  std::vector<RowWork> fwd;
  /// Per split query tile: its parts [first, first + count), merged in that order.
  std::vector<MergeWork> merges;
  std::int64_t num_parts = 0;
  /// One item per (batch, head, query tile), unsplit: the dQ pass (empty when packed).
  std::vector<RowWork> full;
  /// One item per (batch, KV head, key tile): the dK/dV pass.
  std::vector<ColWork> cols;
};

/// Builds the lists of `set` (tile_k keys per tile; `columns` = transpose_schedule of each slot,
/// or null for the forward alone: then `full` and `cols` stay empty, which keeps a decode step
/// with a new KV length from building a dK/dV list per key tile).
/// Query tiles are split over their key tiles (split-KV) by choose_kv_splits; a part keeps at
/// least 4 key tiles.
WorkLists build_work_lists(const Problem& p, const ScheduleSet& set,
                           const std::vector<ColumnSchedule>* columns, int slots_per_gpu,
                           std::int64_t tile_k, bool packed);

/// When the `slots` resident blocks would see an item per block or less (or a last wave that
/// leaves most of them idle), items of `counts` key tiles are split over their key tiles: the
/// number of splits (each item gets min(splits, count / 4) parts, at least 1; searched up to
/// two parts per block) that finishes the list soonest in the persistent kernels' order
/// (list_makespan), counting a fixed cost per item and part; more splits must gain > 1/64.
/// Returns 1 (no split) when there are >= 2 x slots items.
/// Decode with 128 items on 264 blocks: 2 parts each (one wave of 256), where "fill the GPU
/// twice" gave 5 (640 parts: 2.4 waves, the last with 112 of 264 blocks busy).
std::int64_t choose_kv_splits(const std::vector<std::int64_t>& counts, std::int64_t slots);

/// Finish time of items of the given costs taken longest-first by `slots` persistent blocks,
/// each item by the first block that is free.
std::int64_t list_makespan(const std::vector<std::int64_t>& costs, std::int64_t slots);

/// Relative cost of a 64-row forward item against a 128-row one (half the rows at the 64-row
/// kernel's lower throughput: 200 against 280 TFLOP/s on an H100 at D = 128, S = 16384).
inline constexpr double kNarrowItemCost = 0.75;

/// Whether 128-row forward tiles (wide_items items on wide_slots resident blocks) finish no
/// later than 64-row ones (narrow_items on narrow_slots), each item taking a whole wave of
/// the persistent blocks and a 64-row item costing kNarrowItemCost of a 128-row one. At H = 16,
/// S = 4096 on 264 blocks each: 2 waves of 128-row items against 4 x 0.75 = 3 (wide wins); with
/// fewer items than blocks the 64-row tiles win (one wave of 0.75).
bool wide_tiles_finish_sooner(std::int64_t wide_items, std::int64_t wide_slots,
                              std::int64_t narrow_items, std::int64_t narrow_slots);

/// The row spans of every PARTIAL tile of `s`, tile_q per tile in bits_index order (see
/// kRowSpanUseBits): a tile whose rows each see one run of keys gets (lo, width) per row, rows
/// past the sequence end (0, 0); a tile with a row that sees two runs or more (strided, dilated,
/// BigBird edges) gets kRowSpanUseBits in all its entries. Costs O(tile_k x words + tile_q) per
/// tile: 64 rows advance together, one bitmask word per key.
std::vector<std::uint32_t> partial_tile_row_spans(const TileSchedule& s);

/// GQA packing for the tensor-core forward: when every batch entry's queries of a whole KV
/// group fit one query tile (tile_q rows) and the group's heads share one mask, K/V are read once
/// per group.
/// A packed set has one query tile per slot (q tile 0), which the kernels rely on.
bool use_gqa_packing(const Problem& p, const ScheduleSet& set, std::int64_t tile_q);

}  // namespace longattn::detail::cuda
