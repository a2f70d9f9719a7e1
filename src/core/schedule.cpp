// SPDX-License-Identifier: Apache-2.0
// Mask rows -> block schedule. Cost is O(rows x intervals + tiles + partial area): the element
// rule is evaluated only inside PARTIAL tiles.
#include "core/schedule.hpp"

#include <algorithm>
#include <list>
#include <map>
#include <mutex>
#include <numeric>
#include <string>
#include <tuple>
#include <utility>

#include "core/mask_rows.hpp"

namespace longattn::detail {

std::shared_ptr<const TileSchedule> build_tile_schedule(const MaskRows& rows, std::int64_t tile_q,
                                                        std::int64_t tile_k) {
  auto s = std::make_shared<TileSchedule>();
  s->tile_q = tile_q;
  s->tile_k = tile_k;
  s->sq = rows.sq();
  s->skv = rows.skv();
  s->q_tiles = (s->sq + tile_q - 1) / tile_q;
  s->k_tiles = (s->skv + tile_k - 1) / tile_k;
  s->row_offsets.assign(static_cast<std::size_t>(s->q_tiles + 1), 0);
  const auto kt_count = static_cast<std::size_t>(s->k_tiles);
  std::vector<std::int32_t> full_rows(kt_count + 1);
  std::vector<std::uint8_t> touched(kt_count);
  std::vector<std::vector<Interval>> tile_rows(static_cast<std::size_t>(tile_q));

  for (std::int64_t qt = 0; qt < s->q_tiles; ++qt) {
    const std::int64_t q0 = qt * tile_q;
    const std::int64_t q1 = std::min(q0 + tile_q, s->sq);
    std::fill(full_rows.begin(), full_rows.end(), 0);
    std::fill(touched.begin(), touched.end(), 0);
    for (std::int64_t i = q0; i < q1; ++i) {
      auto& iv = tile_rows[static_cast<std::size_t>(i - q0)];
      rows.row(i, iv);
      for (const auto& r : iv) {
        s->area += r.hi - r.lo;
        // Tiles [first_full, last_full) lie wholly inside r; the end tiles are touched.
        const std::int64_t first_full = (r.lo + tile_k - 1) / tile_k;
        const std::int64_t last_full = r.hi == s->skv ? s->k_tiles : r.hi / tile_k;
        if (first_full < last_full) {
          full_rows[static_cast<std::size_t>(first_full)] += 1;
          full_rows[static_cast<std::size_t>(last_full)] -= 1;
        }
        touched[static_cast<std::size_t>(r.lo / tile_k)] = 1;
        touched[static_cast<std::size_t>((r.hi - 1) / tile_k)] = 1;
      }
    }
    const auto rows_in_tile = static_cast<std::int32_t>(q1 - q0);
    std::int32_t running = 0;
    for (std::int64_t kt = 0; kt < s->k_tiles; ++kt) {
      running += full_rows[static_cast<std::size_t>(kt)];
      const bool full = running == rows_in_tile;
      if (!full && running == 0 && touched[static_cast<std::size_t>(kt)] == 0) continue;
      s->key_tile.push_back(static_cast<std::int32_t>(kt));
      if (full) {
        s->bits_index.push_back(-1);
        continue;
      }
      const std::int64_t wpr = s->words_per_row();
      const auto tile_words = static_cast<std::size_t>(tile_k * wpr);
      const auto index = static_cast<std::int32_t>(s->bits.size() / tile_words);
      s->bits_index.push_back(index);
      s->bits.resize(s->bits.size() + tile_words, 0);
      std::uint64_t* words = s->bits.data() + static_cast<std::size_t>(index) * tile_words;
      const std::int64_t k0 = kt * tile_k;
      const std::int64_t k1 = std::min(k0 + tile_k, s->skv);
      for (std::int64_t i = q0; i < q1; ++i) {
        const std::uint64_t bit = std::uint64_t{1} << static_cast<unsigned>((i - q0) % 64);
        const std::int64_t word = (i - q0) / 64;
        for (const auto& r : tile_rows[static_cast<std::size_t>(i - q0)]) {
          const std::int64_t lo = std::max(r.lo, k0);
          const std::int64_t hi = std::min(r.hi, k1);
          for (std::int64_t j = lo; j < hi; ++j) words[(j - k0) * wpr + word] |= bit;
        }
      }
    }
    s->row_offsets[static_cast<std::size_t>(qt + 1)] =
        static_cast<std::int64_t>(s->key_tile.size());
  }
  return s;
}

ScheduleSet::ScheduleSet(const Problem& problem, std::int64_t tile_q, std::int64_t tile_k)
    : hq_(problem.hq) {
  // Two (batch, head) pairs share a schedule when lengths, pattern and layout slice agree.
  using Key = std::tuple<std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t>;
  std::map<Key, std::int32_t> seen;
  const MaskSpec* mask = problem.mask;
  const bool per_head = mask != nullptr && mask->heads.size() > 1;
  const BlockSparseLayout* layout = mask != nullptr ? mask->layout.get() : nullptr;
  index_.resize(static_cast<std::size_t>(problem.batch * problem.hq));
  for (std::int64_t b = 0; b < problem.batch; ++b) {
    const auto& seq = problem.seqs[static_cast<std::size_t>(b)];
    for (std::int64_t h = 0; h < problem.hq; ++h) {
      const PatternSpec* pat = problem.pattern_for_head(h);
      const bool uses_layout = pat != nullptr && pat->kind == Pattern::kBlockSparse;
      const bool uses_head = pat != nullptr && pat->kind == Pattern::kBigBird;
      const Key key{seq.sq, seq.skv, (per_head || uses_head) ? h : -1,
                    uses_layout && layout->batches > 1 ? b : -1,
                    uses_layout && layout->heads > 1 ? h : -1};
      auto it = seen.find(key);
      if (it == seen.end()) {
        const MaskRows rows(problem, b, h);
        slots_.push_back(build_tile_schedule(rows, tile_q, tile_k));
        it = seen.emplace(key, static_cast<std::int32_t>(slots_.size() - 1)).first;
      }
      index_[static_cast<std::size_t>(b * problem.hq + h)] = it->second;
    }
  }
}

ColumnSchedule transpose_schedule(const TileSchedule& s) {
  ColumnSchedule c;
  c.col_offsets.assign(static_cast<std::size_t>(s.k_tiles + 1), 0);
  for (auto kt : s.key_tile) c.col_offsets[static_cast<std::size_t>(kt) + 1] += 1;
  std::partial_sum(c.col_offsets.begin(), c.col_offsets.end(), c.col_offsets.begin());
  c.q_tile.resize(s.key_tile.size());
  c.bits_index.resize(s.key_tile.size());
  std::vector<std::int64_t> fill(c.col_offsets.begin(), c.col_offsets.end() - 1);
  for (std::int64_t qt = 0; qt < s.q_tiles; ++qt) {
    for (std::int64_t e = s.row_offsets[static_cast<std::size_t>(qt)];
         e < s.row_offsets[static_cast<std::size_t>(qt + 1)]; ++e) {
      const auto kt = static_cast<std::size_t>(s.key_tile[static_cast<std::size_t>(e)]);
      const auto slot = static_cast<std::size_t>(fill[kt]++);
      c.q_tile[slot] = static_cast<std::int32_t>(qt);
      c.bits_index[slot] = s.bits_index[static_cast<std::size_t>(e)];
    }
  }
  return c;
}

std::int64_t ScheduleSet::total_area() const {
  std::int64_t a = 0;
  for (auto i : index_) a += slots_[static_cast<std::size_t>(i)]->area;
  return a;
}

namespace {

template <class T>
void append(std::string& key, const T& value) {
  key.append(reinterpret_cast<const char*>(&value), sizeof value);
}

template <class T>
void append_vector(std::string& key, const std::vector<T>& v) {
  append(key, v.size());
  if (!v.empty()) key.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

/// Every input the schedule depends on, as bytes (exact comparison: no hash collisions).
std::string schedule_key(const Problem& p, std::int64_t tile_q, std::int64_t tile_k) {
  std::string key;
  for (auto v : {tile_q, tile_k, p.batch, p.hq, p.window_left, p.window_right, p.num_sinks}) {
    append(key, v);
  }
  append(key, p.causal);
  for (const auto& s : p.seqs) {
    append(key, s.sq);
    append(key, s.skv);
  }
  if (p.mask != nullptr) {
    append(key, p.mask->heads.size());
    for (const PatternSpec& h : p.mask->heads) {  // field by field: the struct has padding
      append(key, h.kind);
      for (auto v : {h.window, h.block, h.prefix, h.stride, h.offset, h.summary, h.dilation,
                     h.global_blocks, h.window_blocks, h.random_blocks}) {
        append(key, v);
      }
      append(key, h.seed);
    }
    append_vector(key, p.mask->doc_lens);
    if (const BlockSparseLayout* l = p.mask->layout.get()) {
      for (auto v : {l->block_q, l->block_k, l->batches, l->heads, l->q_blocks}) append(key, v);
      append_vector(key, l->row_offsets);
      append_vector(key, l->key_blocks);
      append_vector(key, l->partial);
    }
  }
  return key;
}

}  // namespace

std::shared_ptr<const ScheduleSet> cached_schedules(const Problem& problem, std::int64_t tile_q,
                                                    std::int64_t tile_k) {
  static std::mutex mutex;
  static std::list<std::pair<std::string, std::shared_ptr<const ScheduleSet>>> lru;
  constexpr std::size_t kCapacity = 16;
  std::string key = schedule_key(problem, tile_q, tile_k);
  {
    std::lock_guard<std::mutex> lock(mutex);
    for (auto it = lru.begin(); it != lru.end(); ++it) {
      if (it->first == key) {
        lru.splice(lru.begin(), lru, it);
        return lru.front().second;
      }
    }
  }
  auto built = std::make_shared<const ScheduleSet>(problem, tile_q, tile_k);
  std::lock_guard<std::mutex> lock(mutex);
  lru.emplace_front(std::move(key), built);
  if (lru.size() > kCapacity) lru.pop_back();
  return built;
}

}  // namespace longattn::detail
