// SPDX-License-Identifier: Apache-2.0
// The block schedule: what a kernel visits. For each query tile a CSR list of key tiles, each
// FULL (no element test) or PARTIAL (a bitmask per key row); absent tiles are skipped.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/problem.hpp"

namespace longattn::detail {

class MaskRows;

/// The schedule of one (batch entry, head) for one tile shape.
struct TileSchedule {
  std::int64_t tile_q = 64;
  std::int64_t tile_k = 64;
  std::int64_t sq = 0;
  std::int64_t skv = 0;
  std::int64_t q_tiles = 0;
  std::int64_t k_tiles = 0;
  std::vector<std::int64_t> row_offsets;  // q_tiles + 1
  std::vector<std::int32_t> key_tile;     // per entry
  std::vector<std::int32_t> bits_index;   // per entry: -1 = FULL, else index of its bitmask
  /// Per PARTIAL tile: tile_k rows of words_per_row() words; query i sees key j when bit
  /// (i - q0) % 64 of word (j - k0) * words_per_row() + (i - q0) / 64 is set. With tile_q <= 64
  /// (the CPU engine) that is one word per key row.
  std::vector<std::uint64_t> bits;
  std::int64_t area = 0;  // visible (query, key) pairs

  [[nodiscard]] std::int64_t words_per_row() const { return (tile_q + 63) / 64; }
  /// PARTIAL tiles (bitmasks) in `bits`.
  [[nodiscard]] std::int64_t partial_tiles() const {
    const std::int64_t tile_words = tile_k * words_per_row();
    return tile_words > 0 ? static_cast<std::int64_t>(bits.size()) / tile_words : 0;
  }
  [[nodiscard]] const std::uint64_t* tile_bits(std::int32_t index) const {
    return bits.data() +
           static_cast<std::size_t>(index) * static_cast<std::size_t>(tile_k * words_per_row());
  }
  /// True when query q0 + qi sees key k0 + kj in the PARTIAL tile `index`.
  [[nodiscard]] bool visible_in(std::int32_t index, std::int64_t qi, std::int64_t kj) const {
    const std::uint64_t word = tile_bits(index)[kj * words_per_row() + qi / 64];
    return ((word >> static_cast<unsigned>(qi % 64)) & 1U) != 0;
  }
  /// Number of scheduled key tiles of query tile qt.
  [[nodiscard]] std::int64_t count(std::int64_t qt) const {
    return row_offsets[static_cast<std::size_t>(qt + 1)] -
           row_offsets[static_cast<std::size_t>(qt)];
  }
};

/// The transpose of a schedule: for each key tile, the query tiles that visit it and their
/// bitmask index (the backward's dK/dV pass walks it).
struct ColumnSchedule {
  std::vector<std::int64_t> col_offsets;  // k_tiles + 1
  std::vector<std::int32_t> q_tile;       // per entry
  std::vector<std::int32_t> bits_index;   // per entry: -1 = FULL
};
ColumnSchedule transpose_schedule(const TileSchedule& s);

/// Compiles one (batch entry, head) of a mask to a schedule.
std::shared_ptr<const TileSchedule> build_tile_schedule(const MaskRows& rows, std::int64_t tile_q,
                                                        std::int64_t tile_k);

/// The schedules of a whole problem, shared between (batch, head) pairs with identical masks.
class ScheduleSet {
 public:
  ScheduleSet(const Problem& problem, std::int64_t tile_q, std::int64_t tile_k);
  [[nodiscard]] const TileSchedule& get(std::int64_t batch, std::int64_t head) const {
    return *slots_[static_cast<std::size_t>(index_[static_cast<std::size_t>(batch * hq_ + head)])];
  }
  /// Index into slots() of the schedule of (batch, head).
  [[nodiscard]] std::int32_t slot_index(std::int64_t batch, std::int64_t head) const {
    return index_[static_cast<std::size_t>(batch * hq_ + head)];
  }
  /// The distinct schedules.
  [[nodiscard]] const std::vector<std::shared_ptr<const TileSchedule>>& slots() const {
    return slots_;
  }
  /// Total visible (query, key) pairs over all batch entries and query heads.
  [[nodiscard]] std::int64_t total_area() const;

 private:
  std::int64_t hq_ = 0;
  std::vector<std::int32_t> index_;
  std::vector<std::shared_ptr<const TileSchedule>> slots_;
};

/// The schedules of `problem` for a tile shape, from a small LRU cache keyed by everything the
/// schedule depends on (lengths, head counts, options' element rule, the mask's full content),
/// so repeated calls (layers, steps) reuse the compiled mask.
std::shared_ptr<const ScheduleSet> cached_schedules(const Problem& problem, std::int64_t tile_q,
                                                    std::int64_t tile_k);

}  // namespace longattn::detail
