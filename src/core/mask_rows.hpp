// SPDX-License-Identifier: Apache-2.0
// The fast form of a mask: for each query row, the sorted disjoint key intervals it may see.
// The schedule builder turns these rows into FULL / PARTIAL / skipped tiles. The oracle does
// not use this file: it evaluates the element rule directly (src/reference/element_rule.cpp),
// and tests compare the two.
#pragma once

#include <cstdint>
#include <vector>

#include "core/problem.hpp"

namespace longattn::detail {

/// Half-open key interval [lo, hi).
struct Interval {
  std::int64_t lo = 0;
  std::int64_t hi = 0;
};

DocTable build_doc_table(const std::vector<std::int64_t>& doc_lens);

/// The `count` distinct random key blocks (of `num_blocks`) a BigBird query block sees;
/// a pure function of (seed, head, query block), sorted ascending.
std::vector<std::int64_t> bigbird_random_blocks(std::uint64_t seed, std::int64_t head,
                                                std::int64_t q_block, std::int64_t count,
                                                std::int64_t num_blocks);

/// The visible key intervals of every query row of one (batch entry, query head).
class MaskRows {
 public:
  MaskRows(const Problem& problem, std::int64_t batch, std::int64_t head);

  /// Writes the visible keys of query row i (0 <= i < Sq) into `out` (cleared first).
  void row(std::int64_t i, std::vector<Interval>& out) const;

  [[nodiscard]] std::int64_t sq() const { return sq_; }
  [[nodiscard]] std::int64_t skv() const { return skv_; }

 private:
  void pattern_row(std::int64_t qp, std::vector<Interval>& out) const;
  void option_row(std::int64_t qp, std::vector<Interval>& out) const;
  void layout_row(std::int64_t i, std::int64_t qp, std::vector<Interval>& out) const;

  const Problem& p_;
  std::int64_t batch_;
  std::int64_t head_;
  std::int64_t sq_;
  std::int64_t skv_;
  const PatternSpec* pattern_;  // null = no mask
  mutable std::vector<Interval> scratch_a_, scratch_b_;
};

/// Sorts, clips to [0, skv) and merges overlapping or adjacent intervals in place.
void normalize_intervals(std::vector<Interval>& v, std::int64_t skv);
/// out = a ∩ b for normalized interval lists.
void intersect_intervals(const std::vector<Interval>& a, const std::vector<Interval>& b,
                         std::vector<Interval>& out);

}  // namespace longattn::detail
