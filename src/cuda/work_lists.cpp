// SPDX-License-Identifier: Apache-2.0
// Work lists of the CUDA kernels (see work_lists.hpp).
#include "cuda/work_lists.hpp"

#include <algorithm>
#include <bit>
#include <functional>
#include <map>
#include <utility>

namespace longattn::detail::cuda {

namespace {

constexpr std::int64_t kMinEntriesPerPart = 4;
constexpr std::int64_t kMaxSplits = 64;
// Estimated cost of an item beyond its key tiles, in key tiles: the query tile's load and the
// pipeline's fill; a split part also writes a partial that the merge reads back.
constexpr std::int64_t kItemCost = 1;
constexpr std::int64_t kPartCost = 2;

/// Parts of an item of `count` key tiles at `splits` splits.
std::int64_t parts_of(std::int64_t count, std::int64_t splits) {
  return std::clamp<std::int64_t>(std::min(splits, count / kMinEntriesPerPart), 1, kMaxSplits);
}

/// (cost, how many items) pairs, any order.
using CostGroups = std::vector<std::pair<std::int64_t, std::int64_t>>;

/// list_makespan over groups of equal costs. Blocks are kept as (finish time -> how many), so a
/// list of few distinct costs (split-KV parts of equal items) takes a few steps per group rather
/// than one heap operation per item.
std::int64_t group_makespan(CostGroups groups, std::int64_t slots) {
  std::sort(groups.begin(), groups.end(), std::greater<>());
  std::map<std::int64_t, std::int64_t> blocks{{0, std::max<std::int64_t>(slots, 1)}};
  std::int64_t makespan = 0;
  for (auto [cost, left] : groups) {
    while (left > 0) {
      // The first free blocks take the next `taken` items of this cost.
      auto first = blocks.begin();
      const std::int64_t start = first->first;
      const std::int64_t taken = std::min(first->second, left);
      if ((first->second -= taken) == 0) blocks.erase(first);
      blocks[start + cost] += taken;
      makespan = std::max(makespan, start + cost);
      left -= taken;
    }
  }
  return makespan;
}

}  // namespace

std::int64_t list_makespan(const std::vector<std::int64_t>& costs, std::int64_t slots) {
  CostGroups groups;
  groups.reserve(costs.size());
  for (const std::int64_t c : costs) groups.emplace_back(c, 1);
  return group_makespan(std::move(groups), slots);
}

std::int64_t choose_kv_splits(const std::vector<std::int64_t>& counts, std::int64_t slots) {
  const auto items = static_cast<std::int64_t>(counts.size());
  if (items == 0 || slots <= 0 || items >= 2 * slots) return 1;
  // Searched: up to the splits that give two parts per block (more only adds partials and
  // merge traffic) or that still change a part count (a part keeps kMinEntriesPerPart tiles); a
  // larger split count must gain > 1/64 to be taken (the model is coarse).
  const std::int64_t longest = *std::max_element(counts.begin(), counts.end());
  const std::int64_t most = std::min({kMaxSplits, (2 * slots + items - 1) / items,
                                      std::max<std::int64_t>(1, longest / kMinEntriesPerPart)});
  std::int64_t best = 1;
  std::int64_t best_time = 0;
  CostGroups groups;
  for (std::int64_t s = 1; s <= most; ++s) {
    // An item of c key tiles in p parts has c % p parts of ceil(c / p) tiles and the rest of
    // floor(c / p), each plus its fixed cost.
    groups.clear();
    for (const std::int64_t c : counts) {
      const std::int64_t parts = parts_of(c, s);
      const std::int64_t cost = parts > 1 ? kPartCost : kItemCost;
      if (c % parts != 0) groups.emplace_back(c / parts + 1 + cost, c % parts);
      groups.emplace_back(c / parts + cost, parts - c % parts);
    }
    const std::int64_t t = group_makespan(groups, slots);
    if (s == 1 || 64 * t < 63 * best_time) {
      best = s;
      best_time = t;
    }
  }
  return best;
}

WorkLists build_work_lists(const Problem& p, const ScheduleSet& set,
                           const std::vector<ColumnSchedule>* columns, int slots_per_gpu,
                           std::int64_t tile_k, bool packed) {
  WorkLists out;
  // Forward: one item per query tile, split over key tiles where that finishes sooner
  // (choose_kv_splits).
  std::vector<RowWork>& full = out.full;
  for (std::int64_t b = 0; b < p.batch; ++b) {
    // Packed: one item per KV head (its group's first head stands for the group's schedule).
    for (std::int64_t h = 0; h < p.hq; h += packed ? p.group() : 1) {
      const TileSchedule& s = set.get(b, h);
      for (std::int64_t qt = 0; qt < s.q_tiles; ++qt) {
        RowWork r;
        r.b = static_cast<std::int32_t>(b);
        r.h = static_cast<std::int32_t>(h);
        r.qt = static_cast<std::int32_t>(qt);
        r.begin = s.row_offsets[static_cast<std::size_t>(qt)];
        r.end = s.row_offsets[static_cast<std::size_t>(qt + 1)];
        full.push_back(r);
      }
    }
  }
  auto longest_first = [](const RowWork& a, const RowWork& b) {
    return a.end - a.begin > b.end - b.begin;
  };
  std::stable_sort(full.begin(), full.end(), longest_first);
  std::vector<RowWork>& fwd = out.fwd;
  std::vector<MergeWork>& merges = out.merges;
  std::vector<std::int64_t> counts;
  counts.reserve(full.size());
  for (const RowWork& r : full) counts.push_back(r.end - r.begin);
  const std::int64_t splits = choose_kv_splits(counts, slots_per_gpu);
  for (const RowWork& r : full) {
    const std::int64_t count = r.end - r.begin;
    const std::int64_t parts = parts_of(count, splits);
    if (parts == 1) {
      fwd.push_back(r);
      continue;
    }
    MergeWork m;
    m.b = r.b;
    m.h = r.h;
    m.qt = r.qt;
    m.count = static_cast<std::int32_t>(parts);
    m.first = out.num_parts;
    merges.push_back(m);
    for (std::int64_t i = 0; i < parts; ++i) {
      RowWork part = r;
      part.begin = r.begin + count * i / parts;
      part.end = r.begin + count * (i + 1) / parts;
      part.part = static_cast<std::int32_t>(out.num_parts++);
      fwd.push_back(part);
    }
  }
  std::stable_sort(fwd.begin(), fwd.end(), longest_first);
  // The dQ list is per head (a packed set serves the forward only); the forward needs neither.
  if (packed || columns == nullptr) full.clear();
  if (columns == nullptr) return out;

  // dK/dV: one item per key tile of each (batch, KV head), costed by the query tiles it meets.
  std::vector<std::pair<std::int64_t, ColWork>> cols;
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const std::int64_t k_tiles = (p.seqs[static_cast<std::size_t>(b)].skv + tile_k - 1) / tile_k;
    for (std::int64_t kvh = 0; kvh < p.hkv; ++kvh) {
      for (std::int64_t kt = 0; kt < k_tiles; ++kt) {
        std::int64_t cost = 1;
        for (std::int64_t h = kvh * p.group(); h < (kvh + 1) * p.group(); ++h) {
          const ColumnSchedule& c = (*columns)[static_cast<std::size_t>(set.slot_index(b, h))];
          cost += c.col_offsets[static_cast<std::size_t>(kt + 1)] -
                  c.col_offsets[static_cast<std::size_t>(kt)];
        }
        ColWork cw;
        cw.b = static_cast<std::int32_t>(b);
        cw.kvh = static_cast<std::int32_t>(kvh);
        cw.kt = static_cast<std::int32_t>(kt);
        cols.emplace_back(cost, cw);
      }
    }
  }
  std::stable_sort(cols.begin(), cols.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  out.cols.reserve(cols.size());
  for (const auto& c : cols) out.cols.push_back(c.second);
  return out;
}

bool wide_tiles_finish_sooner(std::int64_t wide_items, std::int64_t wide_slots,
                              std::int64_t narrow_items, std::int64_t narrow_slots) {
  if (wide_slots <= 0) return false;
  if (narrow_slots <= 0) return true;
  const std::int64_t wide_waves = (wide_items + wide_slots - 1) / wide_slots;
  const std::int64_t narrow_waves = (narrow_items + narrow_slots - 1) / narrow_slots;
  return static_cast<double>(wide_waves) <= kNarrowItemCost * static_cast<double>(narrow_waves);
}

std::vector<std::uint32_t> partial_tile_row_spans(const TileSchedule& s) {
  const std::int64_t wpr = s.words_per_row();
  const std::int64_t tiles = s.partial_tiles();
  std::vector<std::uint32_t> spans(static_cast<std::size_t>(tiles * s.tile_q), 0);
  std::vector<std::uint32_t> lo(64), hi(64);
  for (std::int64_t t = 0; t < tiles; ++t) {
    const std::uint64_t* words = s.tile_bits(static_cast<std::int32_t>(t));
    std::uint32_t* out = spans.data() + t * s.tile_q;
    bool single_runs = true;
    for (std::int64_t g = 0; g < wpr && single_runs; ++g) {
      // Rows g*64 + r advance together: seen (a run started), ended (the run ended); a row
      // visible again after its run ended sees two runs.
      std::uint64_t seen = 0;
      std::uint64_t ended = 0;
      for (std::int64_t kj = 0; kj < s.tile_k; ++kj) {
        const std::uint64_t v = words[kj * wpr + g];
        if ((v & ended) != 0) {
          single_runs = false;
          break;
        }
        for (std::uint64_t start = v & ~seen; start != 0; start &= start - 1) {
          lo[static_cast<std::size_t>(std::countr_zero(start))] = static_cast<std::uint32_t>(kj);
        }
        const std::uint64_t stop = seen & ~v & ~ended;
        for (std::uint64_t e = stop; e != 0; e &= e - 1) {
          hi[static_cast<std::size_t>(std::countr_zero(e))] = static_cast<std::uint32_t>(kj);
        }
        ended |= stop;
        seen |= v;
      }
      const std::int64_t rows = std::min<std::int64_t>(64, s.tile_q - g * 64);
      for (std::int64_t r = 0; r < rows && single_runs; ++r) {
        const auto ur = static_cast<std::size_t>(r);
        const std::uint64_t bit = std::uint64_t{1} << static_cast<unsigned>(r);
        const std::uint32_t end =
            (ended & bit) != 0 ? hi[ur] : static_cast<std::uint32_t>(s.tile_k);
        out[g * 64 + r] = (seen & bit) != 0 ? pack_row_span(lo[ur], end - lo[ur]) : 0U;
      }
    }
    if (!single_runs) std::fill(out, out + s.tile_q, kRowSpanUseBits);
  }
  return spans;
}

bool use_gqa_packing(const Problem& p, const ScheduleSet& set, std::int64_t tile_q) {
  const std::int64_t g = p.group();
  if (g <= 1) return false;
  for (std::int64_t b = 0; b < p.batch; ++b) {
    if (p.seqs[static_cast<std::size_t>(b)].sq * g > tile_q) return false;
    for (std::int64_t h = 0; h < p.hq; ++h) {
      if (set.slot_index(b, h) != set.slot_index(b, h - h % g)) return false;
    }
  }
  return true;
}

}  // namespace longattn::detail::cuda
