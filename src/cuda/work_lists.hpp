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

/// Builds the lists of `set` (tile_k keys per tile; `columns` = transpose_schedule of each slot).
/// Query tiles are split over their key tiles when the items cannot fill `slots_per_gpu`
/// resident blocks twice; a part keeps at least 4 key tiles.
WorkLists build_work_lists(const Problem& p, const ScheduleSet& set,
                           const std::vector<ColumnSchedule>& columns, int slots_per_gpu,
                           std::int64_t tile_k, bool packed);

/// GQA packing for the tensor-core forward: when every batch entry's queries of a whole KV
/// group fit one query tile (tile_q rows) and the group's heads share one mask, K/V are read once
/// per group.
/// A packed set has one query tile per slot (q tile 0), which the kernels rely on.
bool use_gqa_packing(const Problem& p, const ScheduleSet& set, std::int64_t tile_q);

}  // namespace longattn::detail::cuda
