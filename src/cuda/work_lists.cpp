// SPDX-License-Identifier: Apache-2.0
// Work lists of the CUDA kernels (see work_lists.hpp).
#include "cuda/work_lists.hpp"

#include <algorithm>
#include <functional>
#include <list>
#include <mutex>
#include <queue>
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

}  // namespace

std::int64_t list_makespan(std::vector<std::int64_t> costs, std::int64_t slots) {
  slots = std::max<std::int64_t>(slots, 1);
  std::sort(costs.begin(), costs.end(), std::greater<>());
  if (static_cast<std::int64_t>(costs.size()) <= slots) return costs.empty() ? 0 : costs.front();
  // Min-heap of the blocks' finish times; the next item goes to the first block that is free.
  std::priority_queue<std::int64_t, std::vector<std::int64_t>, std::greater<>> free_at;
  std::int64_t makespan = 0;
  for (const std::int64_t c : costs) {
    std::int64_t start = 0;
    if (static_cast<std::int64_t>(free_at.size()) >= slots) {
      start = free_at.top();
      free_at.pop();
    }
    free_at.push(start + c);
    makespan = std::max(makespan, start + c);
  }
  return makespan;
}

namespace {

std::int64_t search_kv_splits(const std::vector<std::int64_t>& counts, std::int64_t slots) {
  const auto items = static_cast<std::int64_t>(counts.size());
  // Searched: up to the splits that give two parts per block (more only adds partials and
  // merge traffic); a larger split count must gain > 1/64 to be taken (the model is coarse).
  const std::int64_t most = std::min(kMaxSplits, (2 * slots + items - 1) / items);
  std::int64_t best = 1;
  std::int64_t best_time = 0;
  std::vector<std::int64_t> costs;
  for (std::int64_t s = 1; s <= most; ++s) {
    costs.clear();
    std::int64_t total = 0;
    std::int64_t longest = 0;
    for (const std::int64_t c : counts) {
      const std::int64_t parts = parts_of(c, s);
      for (std::int64_t i = 0; i < parts; ++i) {
        const std::int64_t len = c * (i + 1) / parts - c * i / parts;
        costs.push_back(len + (parts > 1 ? kPartCost : kItemCost));
        total += costs.back();
        longest = std::max(longest, costs.back());
      }
    }
    // No list finishes before its longest item or its average load per block: skip the
    // simulation when that bound cannot win.
    const std::int64_t bound = std::max(longest, (total + slots - 1) / slots);
    if (s > 1 && 64 * bound >= 63 * best_time) continue;
    const std::int64_t t = list_makespan(costs, slots);
    if (s == 1 || 64 * t < 63 * best_time) {
      best = s;
      best_time = t;
    }
  }
  return best;
}

}  // namespace

std::int64_t choose_kv_splits(const std::vector<std::int64_t>& counts, std::int64_t slots) {
  const auto items = static_cast<std::int64_t>(counts.size());
  if (items == 0 || slots <= 0 || items >= 2 * slots) return 1;
  // The search costs 50-700 us of host time at 264-528 slots. A generation loop asks again at
  // every step (the schedule follows the exact KV length) but its key-tile counts change only
  // once per tile of keys: remember the last answers.
  struct Memo {
    std::int64_t slots;
    std::vector<std::int64_t> counts;
    std::int64_t splits;
  };
  static std::mutex mutex;
  static std::list<Memo> memo;
  constexpr std::size_t kCapacity = 8;
  {
    const std::lock_guard<std::mutex> lock(mutex);
    for (auto it = memo.begin(); it != memo.end(); ++it) {
      if (it->slots == slots && it->counts == counts) {
        memo.splice(memo.begin(), memo, it);
        return it->splits;
      }
    }
  }
  const std::int64_t splits = search_kv_splits(counts, slots);
  const std::lock_guard<std::mutex> lock(mutex);
  memo.push_front({slots, counts, splits});
  if (memo.size() > kCapacity) memo.pop_back();
  return splits;
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
