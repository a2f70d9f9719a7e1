// SPDX-License-Identifier: Apache-2.0
// The fast mask form (row intervals -> block schedule) against the oracle's element rule,
// element by element, for every pattern, with options, cross-attention and per-head patterns.
#include <gtest/gtest.h>

#include <memory>

#include "check/cases.hpp"
#include "core/mask_rows.hpp"
#include "core/problem.hpp"
#include "core/schedule.hpp"
#include "longattn/error.hpp"
#include "reference/reference.hpp"

namespace {

using namespace longattn;
using namespace longattn::detail;

struct MaskCase {
  Pattern pattern;
  std::int64_t sq, skv, hq;
  AttentionOptions options;
};

/// Checks rows and the 64x64 and 16x32 schedules against reference::visible for every pair.
void check_mask(const MaskSpec& mask, std::int64_t sq, std::int64_t skv, std::int64_t hq,
                AttentionOptions o, const std::string& what) {
  o.mask = &mask;
  const TensorView q = TensorView::contiguous(nullptr, DType::kF32, {1, sq, hq, 0});
  const TensorView k = TensorView::contiguous(nullptr, DType::kF32, {1, skv, 1, 0});
  const Problem p = make_forward_problem(q, k, k, q, {}, o);
  std::vector<Interval> rows;
  for (std::int64_t h = 0; h < hq; ++h) {
    const MaskRows mr(p, 0, h);
    std::int64_t area = 0;
    for (std::int64_t i = 0; i < sq; ++i) {
      mr.row(i, rows);
      std::vector<char> fast(static_cast<std::size_t>(skv), 0);
      for (std::size_t r = 0; r < rows.size(); ++r) {
        ASSERT_LT(rows[r].lo, rows[r].hi) << what;
        if (r > 0) {
          ASSERT_LT(rows[r - 1].hi, rows[r].lo) << what << ": rows not merged";
        }
        for (std::int64_t j = rows[r].lo; j < rows[r].hi; ++j)
          fast[static_cast<std::size_t>(j)] = 1;
      }
      for (std::int64_t j = 0; j < skv; ++j) {
        const bool ref = reference::visible(p, 0, h, i, j);
        ASSERT_EQ(ref, fast[static_cast<std::size_t>(j)] != 0)
            << what << " head " << h << " query " << i << " key " << j;
        area += ref;
      }
    }
    // 64x64 is the CPU tile; 128x64 (two bitmask words per key row) the shape of GPU kernels.
    for (const auto& [tq, tk] :
         {std::pair<std::int64_t, std::int64_t>{64, 64}, {16, 32}, {128, 64}}) {
      const auto s = build_tile_schedule(mr, tq, tk);
      ASSERT_EQ(s->area, area) << what;
      for (std::int64_t qt = 0; qt < s->q_tiles; ++qt) {
        std::vector<int> listed(static_cast<std::size_t>(s->k_tiles), -2);
        for (auto e = s->row_offsets[static_cast<std::size_t>(qt)];
             e < s->row_offsets[static_cast<std::size_t>(qt) + 1]; ++e) {
          listed[static_cast<std::size_t>(s->key_tile[static_cast<std::size_t>(e)])] =
              s->bits_index[static_cast<std::size_t>(e)];
        }
        for (std::int64_t kt = 0; kt < s->k_tiles; ++kt) {
          const int idx = listed[static_cast<std::size_t>(kt)];
          int seen = 0;
          int total = 0;
          for (std::int64_t i = qt * tq; i < std::min(sq, (qt + 1) * tq); ++i) {
            for (std::int64_t j = kt * tk; j < std::min(skv, (kt + 1) * tk); ++j) {
              const bool ref = reference::visible(p, 0, h, i, j);
              seen += ref;
              ++total;
              if (idx >= 0) {
                const bool bit = s->visible_in(idx, i - qt * tq, j - kt * tk);
                ASSERT_EQ(bit, ref) << what << " bitmask at " << i << "," << j;
              }
            }
          }
          if (idx == -2) {
            ASSERT_EQ(seen, 0) << what << " skipped tile " << qt << "," << kt
                               << " has visible pairs";
          }
          if (idx == -1) {
            ASSERT_EQ(seen, total)
                << what << " FULL tile " << qt << "," << kt << " has masked pairs";
          }
          if (idx >= 0) {
            ASSERT_LT(seen, total) << what << " PARTIAL tile " << qt << "," << kt << " is full";
          }
        }
      }
    }
  }
}

TEST(Masks, EveryPatternMatchesTheElementRule) {
  for (Pattern pat : all_patterns()) {
    for (const auto& [sq, skv] :
         {std::pair<std::int64_t, std::int64_t>{150, 150}, {90, 211}, {211, 90}, {1, 70}}) {
      for (int variant = 0; variant < 4; ++variant) {
        AttentionOptions o;
        if (variant == 1) o.causal = true;
        if (variant == 2) {
          o.window_left = 13;
          o.window_right = 7;
        }
        if (variant == 3) {
          o.causal = true;
          o.window_left = 9;
          o.num_sinks = 3;
        }
        MaskSpec m =
            MaskSpec::of(check::scaled_pattern(pat, skv, std::max<std::int64_t>(1, skv / 10)));
        if (pattern_uses_documents(pat)) m.doc_lens = check::scaled_documents(skv, 3);
        check_mask(m, sq, skv, 3, o,
                   std::string(pattern_name(pat)) + " sq=" + std::to_string(sq) +
                       " skv=" + std::to_string(skv) + " variant " + std::to_string(variant));
        if (HasFatalFailure()) return;
      }
    }
  }
}

TEST(Masks, NoMaskOptionsOnly) {
  for (int variant = 0; variant < 5; ++variant) {
    AttentionOptions o;
    if (variant == 1) o.causal = true;
    if (variant == 2) {
      o.window_left = 0;
      o.window_right = 0;
    }
    if (variant == 3) {
      o.window_left = 100;
      o.window_right = -1;
      o.num_sinks = 200;
    }
    if (variant == 4) {
      o.causal = true;
      o.window_left = 64;
      o.num_sinks = 1;
    }
    MaskSpec m = MaskSpec::of(PatternSpec{});
    check_mask(m, 130, 260, 1, o, "options variant " + std::to_string(variant));
    check_mask(m, 260, 130, 1, o, "options variant (sq>skv) " + std::to_string(variant));
  }
}

TEST(Masks, PerHeadAndBlockSparse) {
  check_mask(MaskSpec::strided_shards(4, 5, 11), 160, 160, 4, {}, "shards");
  auto layout = std::make_shared<BlockSparseLayout>();
  layout->block_q = 20;
  layout->block_k = 30;
  layout->heads = 2;
  layout->q_blocks = 8;
  layout->row_offsets = {0};
  for (int r = 0; r < 16; ++r) {
    for (int kb = 0; kb < 6; ++kb) {
      if ((r * 7 + kb * 3) % 4 == 0) continue;
      layout->key_blocks.push_back(kb);
      layout->partial.push_back(static_cast<std::uint8_t>((r + kb) % 2));
    }
    layout->row_offsets.push_back(static_cast<std::int64_t>(layout->key_blocks.size()));
  }
  AttentionOptions o;
  o.causal = true;
  check_mask(MaskSpec::block_sparse(layout), 150, 170, 2, o, "block_sparse");
}

TEST(Masks, DocumentsAreSeededAndCoverTheSequence) {
  const auto a = random_documents(16384, 256, 4096, 42);
  const auto b = random_documents(16384, 256, 4096, 42);
  EXPECT_EQ(a, b);
  std::int64_t total = 0;
  for (auto n : a) {
    EXPECT_GE(n, 1);
    EXPECT_LE(n, 4096);
    total += n;
  }
  EXPECT_EQ(total, 16384);
}

TEST(Masks, SkippedTilesMakeSlidingWindowSparse) {
  // sliding_window_causal with W=512 at S=16384 visits about 2*W/S of the tiles.
  AttentionOptions o;
  MaskSpec m = MaskSpec::of(check::scaled_pattern(Pattern::kSlidingWindowCausal, 16384, 512));
  o.mask = &m;
  const TensorView q = TensorView::contiguous(nullptr, DType::kF32, {1, 16384, 1, 0});
  const Problem p = make_forward_problem(q, q, q, q, {}, o);
  const auto s = build_tile_schedule(MaskRows(p, 0, 0), 64, 64);
  const double visited =
      static_cast<double>(s->key_tile.size()) / static_cast<double>(s->q_tiles * s->k_tiles);
  EXPECT_LT(visited, 0.04);
  EXPECT_GT(visited, 0.03);
}

}  // namespace
