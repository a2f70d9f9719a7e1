// SPDX-License-Identifier: Apache-2.0
// The CUDA backend's work lists (host code, checked here without a GPU): every query tile and
// key tile is covered exactly once, split-KV parts partition a tile's key tiles in order, GQA
// packing covers each KV group once, and the lists are longest-first.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "check/cases.hpp"
#include "core/problem.hpp"
#include "core/schedule.hpp"
#include "cuda/work_lists.hpp"

namespace {

using namespace longattn;
using detail::ScheduleSet;
using detail::cuda::build_work_lists;
using detail::cuda::WorkLists;

struct Scheduled {
  detail::Problem p;
  std::shared_ptr<const ScheduleSet> set;
  std::vector<detail::ColumnSchedule> columns;
};

Scheduled make(std::int64_t batch, std::int64_t hq, std::int64_t hkv, std::int64_t sq,
               std::int64_t skv, const AttentionOptions& o, std::int64_t tile_q,
               std::int64_t tile_k) {
  const TensorView q = TensorView::contiguous(nullptr, DType::kBF16, {batch, sq, hq, 0});
  const TensorView k = TensorView::contiguous(nullptr, DType::kBF16, {batch, skv, hkv, 0});
  Scheduled s{detail::make_forward_problem(q, k, k, q, {}, o), nullptr, {}};
  s.set = std::make_shared<ScheduleSet>(s.p, tile_q, tile_k);
  for (const auto& slot : s.set->slots()) s.columns.push_back(detail::transpose_schedule(*slot));
  return s;
}

/// Checks the invariants of `w` against the schedule set; `packed` as built.
void expect_consistent(const Scheduled& s, const WorkLists& w, bool packed, std::int64_t tile_k) {
  const auto& p = s.p;
  // Forward: per (b, h, qt) the parts' entry ranges tile [row_offsets[qt], row_offsets[qt+1]).
  std::map<std::tuple<int, int, int>, std::vector<std::pair<std::int64_t, std::int64_t>>> ranges;
  std::vector<int> part_seen(static_cast<std::size_t>(w.num_parts), 0);
  for (const auto& r : w.fwd) {
    ranges[{r.b, r.h, r.qt}].emplace_back(r.begin, r.end);
    if (r.part >= 0) {
      ASSERT_LT(r.part, w.num_parts);
      part_seen[static_cast<std::size_t>(r.part)] += 1;
      EXPECT_GE(r.end - r.begin, 4) << "a split part keeps at least 4 key tiles";
    }
  }
  for (int seen : part_seen) EXPECT_EQ(seen, 1) << "every part index is produced once";
  std::int64_t expected_items = 0;
  for (std::int64_t b = 0; b < p.batch; ++b) {
    for (std::int64_t h = 0; h < p.hq; h += packed ? p.group() : 1) {
      const auto& t = s.set->get(b, h);
      for (std::int64_t qt = 0; qt < t.q_tiles; ++qt) {
        ++expected_items;
        auto it = ranges.find({static_cast<int>(b), static_cast<int>(h), static_cast<int>(qt)});
        ASSERT_NE(it, ranges.end()) << "query tile b=" << b << " h=" << h << " qt=" << qt;
        auto v = it->second;
        std::sort(v.begin(), v.end());
        std::int64_t at = t.row_offsets[static_cast<std::size_t>(qt)];
        for (const auto& [lo, hi] : v) {
          EXPECT_EQ(lo, at);
          at = hi;
        }
        EXPECT_EQ(at, t.row_offsets[static_cast<std::size_t>(qt + 1)]);
      }
    }
  }
  EXPECT_EQ(static_cast<std::int64_t>(ranges.size()), expected_items);
  // Merges: contiguous parts of split tiles only.
  std::int64_t merged = 0;
  for (const auto& m : w.merges) {
    EXPECT_GE(m.count, 2);
    merged += m.count;
    const auto key = std::make_tuple(m.b, m.h, m.qt);
    EXPECT_EQ(ranges[key].size(), static_cast<std::size_t>(m.count));
  }
  EXPECT_EQ(merged, w.num_parts);
  // dQ list: every (b, h, qt) once, unsplit (none when packed).
  if (packed) {
    EXPECT_TRUE(w.full.empty());
  } else {
    std::int64_t full = 0;
    for (std::int64_t b = 0; b < p.batch; ++b) {
      for (std::int64_t h = 0; h < p.hq; ++h) full += s.set->get(b, h).q_tiles;
    }
    EXPECT_EQ(static_cast<std::int64_t>(w.full.size()), full);
    for (const auto& r : w.full) EXPECT_EQ(r.part, -1);
  }
  // dK/dV list: every (b, kvh, kt) once.
  std::map<std::tuple<int, int, int>, int> cols;
  for (const auto& c : w.cols) cols[{c.b, c.kvh, c.kt}] += 1;
  std::int64_t expected_cols = 0;
  for (std::int64_t b = 0; b < p.batch; ++b) {
    expected_cols += p.hkv * ((p.seqs[static_cast<std::size_t>(b)].skv + tile_k - 1) / tile_k);
  }
  EXPECT_EQ(static_cast<std::int64_t>(cols.size()), expected_cols);
  for (const auto& [key, n] : cols) EXPECT_EQ(n, 1);
  // Longest first.
  for (std::size_t i = 1; i < w.fwd.size(); ++i) {
    EXPECT_GE(w.fwd[i - 1].end - w.fwd[i - 1].begin, w.fwd[i].end - w.fwd[i].begin);
  }
}

TEST(CudaWork, CausalPrefillNeedsNoSplit) {
  AttentionOptions o;
  o.causal = true;
  const Scheduled s = make(2, 8, 2, 1000, 1000, o, 64, 64);
  const WorkLists w = build_work_lists(s.p, *s.set, &s.columns, 16, 64, false);
  EXPECT_EQ(w.num_parts, 0);
  expect_consistent(s, w, false, 64);
  // Causal: the first tile of the list is the longest (the last query tile).
  EXPECT_EQ(w.fwd.front().end - w.fwd.front().begin, 16);
}

TEST(CudaWork, DecodeSplitsOverKeysAndPacksGroups) {
  AttentionOptions o;
  o.causal = true;
  const Scheduled s = make(3, 32, 8, 1, 4096, o, 64, 64);
  ASSERT_TRUE(detail::cuda::use_gqa_packing(s.p, *s.set, 64));
  for (bool packed : {false, true}) {
    const WorkLists w = build_work_lists(s.p, *s.set, &s.columns, 264, 64, packed);
    EXPECT_GT(w.num_parts, 0) << "few items on many SMs: split-KV";
    expect_consistent(s, w, packed, 64);
  }
}

TEST(CudaWork, ListMakespanFollowsTheWorkCounter) {
  using detail::cuda::list_makespan;
  // Longest first onto the first free block: 3 | 3, then 2 onto each, then the last 2.
  EXPECT_EQ(list_makespan({2, 3, 2, 3, 2}, 2), 7);
  EXPECT_EQ(list_makespan({5, 1, 1, 1, 1, 1}, 2), 5);
  EXPECT_EQ(list_makespan({4, 4, 4}, 8), 4);
  EXPECT_EQ(list_makespan({}, 8), 0);
}

TEST(CudaWork, SplitKvAvoidsAnIdleLastWave) {
  using detail::cuda::choose_kv_splits;
  // Decode, B = 16 x 8 KV heads, 512 key tiles each, on 132 SMs x 2 blocks: 2 parts each is one
  // wave of 256 (5 parts, as "fill the GPU twice" chose, leave 152 of 264 blocks idle in a third
  // wave).
  EXPECT_EQ(choose_kv_splits(std::vector<std::int64_t>(128, 512), 264), 2);
  // B = 1: 8 items of 64 key tiles: parts of 4 tiles, the least a part keeps.
  EXPECT_EQ(choose_kv_splits(std::vector<std::int64_t>(8, 64), 264), 16);
  // Enough items: no split.
  EXPECT_EQ(choose_kv_splits(std::vector<std::int64_t>(528, 512), 264), 1);
  EXPECT_EQ(choose_kv_splits({}, 264), 1);
  // 300 equal items on 264 blocks: a second wave with 36 busy blocks; splitting finishes sooner.
  const std::int64_t s = choose_kv_splits(std::vector<std::int64_t>(300, 256), 264);
  EXPECT_GT(s, 1);
  // Too short to split (a part keeps 4 key tiles).
  EXPECT_EQ(choose_kv_splits(std::vector<std::int64_t>(10, 7), 264), 1);
  // Mixed lengths, fewer items than blocks: split.
  std::vector<std::int64_t> mixed;
  for (int i = 0; i < 40; ++i) mixed.push_back(16 + (i * 37) % 300);
  EXPECT_GT(choose_kv_splits(mixed, 132), 1);
}

TEST(CudaWork, ForwardAloneSkipsTheBackwardLists) {
  AttentionOptions o;
  o.causal = true;
  const Scheduled s = make(2, 8, 2, 300, 1000, o, 64, 64);
  for (int slots : {4, 264}) {
    const WorkLists both = build_work_lists(s.p, *s.set, &s.columns, slots, 64, false);
    const WorkLists fwd = build_work_lists(s.p, *s.set, nullptr, slots, 64, false);
    EXPECT_TRUE(fwd.full.empty());
    EXPECT_TRUE(fwd.cols.empty());
    EXPECT_FALSE(both.full.empty());
    EXPECT_FALSE(both.cols.empty());
    ASSERT_EQ(fwd.fwd.size(), both.fwd.size());
    for (std::size_t i = 0; i < fwd.fwd.size(); ++i) {
      EXPECT_EQ(std::make_tuple(fwd.fwd[i].b, fwd.fwd[i].h, fwd.fwd[i].qt, fwd.fwd[i].part,
                                fwd.fwd[i].begin, fwd.fwd[i].end),
                std::make_tuple(both.fwd[i].b, both.fwd[i].h, both.fwd[i].qt, both.fwd[i].part,
                                both.fwd[i].begin, both.fwd[i].end));
    }
    EXPECT_EQ(fwd.merges.size(), both.merges.size());
    EXPECT_EQ(fwd.num_parts, both.num_parts);
  }
}

TEST(CudaWork, PackedVarlenWithUnevenQueries) {
  // Varlen: entries with 3, 0, 1 and 2 queries, 4 query heads per KV head.
  std::vector<std::int32_t> cu_q{0, 3, 3, 4, 6};
  std::vector<std::int32_t> cu_k{0, 900, 940, 2440, 2447};
  AttentionOptions o;
  o.causal = true;
  o.cu_seqlens_q = TensorView::contiguous(cu_q.data(), DType::kI32, {5});
  o.cu_seqlens_k = TensorView::contiguous(cu_k.data(), DType::kI32, {5});
  const TensorView q = TensorView::contiguous(nullptr, DType::kBF16, {6, 8, 0});
  const TensorView k = TensorView::contiguous(nullptr, DType::kBF16, {2447, 2, 0});
  Scheduled s{detail::make_forward_problem(q, k, k, q, {}, o), nullptr, {}};
  s.set = std::make_shared<ScheduleSet>(s.p, 64, 64);
  for (const auto& slot : s.set->slots()) s.columns.push_back(detail::transpose_schedule(*slot));
  ASSERT_TRUE(detail::cuda::use_gqa_packing(s.p, *s.set, 64));
  for (bool packed : {false, true}) {
    const WorkLists w = build_work_lists(s.p, *s.set, &s.columns, 264, 64, packed);
    expect_consistent(s, w, packed, 64);
    for (const auto& r : w.fwd) EXPECT_EQ(r.qt, 0) << "one query tile per entry";
  }
}

/// Every benchmark mask at S = 700, `batch` entries, 4 query heads over `hkv`, on tile_q x
/// tile_k schedules and few or many SMs: the lists cover everything.
void expect_masks_covered(std::int64_t batch, std::int64_t hkv, std::int64_t tile_q,
                          std::int64_t tile_k) {
  for (Pattern pat : benchmark_patterns()) {
    AttentionOptions o;
    MaskSpec m = MaskSpec::of(check::scaled_pattern(pat, 700));
    if (pattern_uses_documents(pat)) m.doc_lens = check::scaled_documents(700);
    o.mask = &m;
    const Scheduled s = make(batch, 4, hkv, 700, 700, o, tile_q, tile_k);
    EXPECT_EQ(s.set->get(0, 0).words_per_row(), (tile_q + 63) / 64);
    for (int slots : {8, 100000}) {
      expect_consistent(s, build_work_lists(s.p, *s.set, &s.columns, slots, tile_k, false), false,
                        tile_k);
    }
  }
}

TEST(CudaWork, MasksAndVarlenCoverEverything) { expect_masks_covered(1, 1, 16, 32); }

TEST(CudaWork, PackingNeedsOneMaskPerGroupAndShortQueries) {
  AttentionOptions o;
  o.causal = true;
  const Scheduled tall = make(1, 8, 2, 17, 300, o, 64, 64);
  EXPECT_FALSE(detail::cuda::use_gqa_packing(tall.p, *tall.set, 64))
      << "4 heads x 17 queries exceed a 64-row tile";
  const Scheduled mha = make(1, 8, 8, 1, 300, o, 64, 64);
  EXPECT_FALSE(detail::cuda::use_gqa_packing(mha.p, *mha.set, 64)) << "no group to pack";
  MaskSpec shards = MaskSpec::strided_shards(8, 4, 16);
  o.mask = &shards;
  const Scheduled het = make(1, 8, 2, 1, 300, o, 64, 64);
  EXPECT_FALSE(detail::cuda::use_gqa_packing(het.p, *het.set, 64)) << "per-head masks differ";
}

TEST(CudaWork, WideForwardTilesCoverEverything) {
  // The 128-row tensor-core forward: two bitmask words per key row, and packing up to 128 rows.
  expect_masks_covered(2, 2, 128, 64);
  AttentionOptions o;
  o.causal = true;
  const Scheduled tall = make(1, 8, 2, 17, 300, o, 128, 64);
  ASSERT_TRUE(detail::cuda::use_gqa_packing(tall.p, *tall.set, 128))
      << "4 heads x 17 queries fit a 128-row tile";
  expect_consistent(tall, build_work_lists(tall.p, *tall.set, &tall.columns, 264, 64, true), true,
                    64);
}

TEST(CudaWork, WideForwardTilesWhenTheirWavesFinishSooner) {
  using detail::cuda::wide_tiles_finish_sooner;
  // H100, D = 128: 264 resident blocks of either kernel. H = 16, S = 4096: 512 128-row items
  // (2 waves) against 1024 64-row items (4 waves x 0.75 = 3): 128 rows.
  EXPECT_TRUE(wide_tiles_finish_sooner(512, 264, 1024, 264));
  // S = 16384: 2048 against 4096 items, 8 waves against 16 x 0.75.
  EXPECT_TRUE(wide_tiles_finish_sooner(2048, 264, 4096, 264));
  // Fewer items than blocks: one wave either way, and a 64-row wave is shorter.
  EXPECT_FALSE(wide_tiles_finish_sooner(100, 264, 200, 264));
  // 300 128-row items take 2 waves; 600 64-row ones 3 x 0.75 = 2.25: 128 rows still.
  EXPECT_TRUE(wide_tiles_finish_sooner(300, 264, 600, 264));
  // 200 / 400 items: one wave of 128 rows (1) against 2 x 0.75 = 1.5.
  EXPECT_TRUE(wide_tiles_finish_sooner(200, 264, 400, 264));
  // An A100 holding one 128-row block per SM (108) against two 64-row ones (216): 300 / 600
  // items, 3 waves against 3 x 0.75.
  EXPECT_FALSE(wide_tiles_finish_sooner(300, 108, 600, 216));
  // A kernel that cannot be resident never wins.
  EXPECT_FALSE(wide_tiles_finish_sooner(512, 0, 1024, 264));
  EXPECT_TRUE(wide_tiles_finish_sooner(512, 264, 1024, 0));
}

/// Checks the row spans of every PARTIAL tile of `s` against its bitmask: a span tile's spans
/// say exactly which keys each row sees; a kRowSpanUseBits tile has a row that sees two runs.
/// Returns the number of span tiles (-1 after a mismatch).
std::int64_t expect_spans_match_bits(const detail::TileSchedule& s) {
  using detail::cuda::kRowSpanUseBits;
  const std::vector<std::uint32_t> spans = detail::cuda::partial_tile_row_spans(s);
  const auto tiles = static_cast<std::int64_t>(s.bits.size()) / (s.tile_k * s.words_per_row());
  EXPECT_EQ(static_cast<std::int64_t>(spans.size()), tiles * s.tile_q);
  std::int64_t span_tiles = 0;
  for (std::int64_t t = 0; t < tiles; ++t) {
    const auto index = static_cast<std::int32_t>(t);
    const std::uint32_t* row = spans.data() + t * s.tile_q;
    if (row[0] == kRowSpanUseBits) {
      bool two_runs = false;
      for (std::int64_t qi = 0; qi < s.tile_q; ++qi) {
        EXPECT_EQ(row[qi], kRowSpanUseBits) << "tile " << t << " row " << qi;
        int runs = 0;
        for (std::int64_t kj = 0; kj < s.tile_k; ++kj) {
          runs += s.visible_in(index, qi, kj) && (kj == 0 || !s.visible_in(index, qi, kj - 1));
        }
        two_runs |= runs > 1;
      }
      EXPECT_TRUE(two_runs) << "tile " << t << " could have had spans";
      continue;
    }
    ++span_tiles;
    for (std::int64_t qi = 0; qi < s.tile_q; ++qi) {
      const std::uint32_t lo = detail::cuda::row_span_lo(row[qi]);
      const std::uint32_t width = detail::cuda::row_span_width(row[qi]);
      if (lo + width > static_cast<std::uint32_t>(s.tile_k)) {
        ADD_FAILURE() << "tile " << t << " row " << qi << " span " << lo << "+" << width;
        return -1;
      }
      for (std::int64_t kj = 0; kj < s.tile_k; ++kj) {
        const bool in_span = static_cast<std::uint32_t>(kj) - lo < width;
        if (in_span != s.visible_in(index, qi, kj)) {
          ADD_FAILURE() << "tile " << t << " row " << qi << " key " << kj << " span " << lo << "+"
                        << width;
          return -1;
        }
      }
    }
  }
  return span_tiles;
}

}  // namespace

TEST(CudaWork, RowSpansOfPartialTilesMatchTheirBitmasks) {
  // Window, document and causal edges give one run per row: every PARTIAL tile takes spans.
  // Strided and dilated patterns need the bitmask. Sizes are not multiples of the tiles, so the
  // sequence ends cut tiles too; 128-row tiles have two bitmask words per key.
  for (const auto& [tile_q, tile_k] : {std::pair<int, int>{128, 64}, {64, 128}, {64, 64}}) {
    for (Pattern pat : all_patterns()) {
      AttentionOptions o;
      MaskSpec m = MaskSpec::of(check::scaled_pattern(pat, 1000));
      if (pattern_uses_documents(pat)) m.doc_lens = check::scaled_documents(1000);
      o.mask = &m;
      const Scheduled s = make(1, 4, 1, 1000, 1000, o, tile_q, tile_k);
      std::int64_t partial = 0;
      std::int64_t span_tiles = 0;
      for (const auto& slot : s.set->slots()) {
        partial += static_cast<std::int64_t>(slot->bits.size()) / (tile_k * slot->words_per_row());
        span_tiles += expect_spans_match_bits(*slot);
      }
      SCOPED_TRACE(std::string(pattern_name(pat)) + " tile " + std::to_string(tile_q) + "x" +
                   std::to_string(tile_k));
      const std::vector<Pattern> one_run_per_row = {Pattern::kFull,
                                                    Pattern::kCausal,
                                                    Pattern::kFullDocument,
                                                    Pattern::kCausalDocument,
                                                    Pattern::kSlidingWindow,
                                                    Pattern::kSlidingWindowCausal,
                                                    Pattern::kCausalBlockwise,
                                                    Pattern::kPrefixLmCausal,
                                                    Pattern::kPrefixLmDocument,
                                                    Pattern::kBlockCausalDocument};
      if (std::find(one_run_per_row.begin(), one_run_per_row.end(), pat) != one_run_per_row.end()) {
        EXPECT_EQ(span_tiles, partial);
      }
      if (pat == Pattern::kStrided) {
        EXPECT_LT(span_tiles, partial);
      }
    }
  }
  // The options' element rule (causal + window + sinks) on varlen-sized sequences.
  AttentionOptions o;
  o.causal = true;
  o.window_left = 100;
  const Scheduled w = make(1, 2, 1, 333, 517, o, 128, 64);
  EXPECT_GT(expect_spans_match_bits(w.set->get(0, 0)), 0);
  o.num_sinks = 4;
  const Scheduled sinks = make(1, 2, 1, 333, 517, o, 128, 64);
  EXPECT_GE(expect_spans_match_bits(sinks.set->get(0, 0)), 0);
}
