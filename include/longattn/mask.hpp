// SPDX-License-Identifier: Apache-2.0
/// @file mask.hpp
/// @brief Mask descriptions: named patterns, per-head patterns and caller-supplied block layouts.
///
/// A mask is a *description*; each backend compiles it into a block schedule for its own tile
/// shape (FULL tiles need no element test, PARTIAL tiles carry an element bitmask, absent tiles
/// cost nothing). Positions: key j is its index in the key sequence; query i sits at position
/// `qp = i + (Skv - Sq)` (bottom-right alignment), which equals i for self-attention.
/// Documents are given as lengths over the key sequence and a query belongs to the document of
/// its position; a query whose position is negative belongs to no document.
///
/// Pattern semantics (d(t) the document of position t, s(t) its first position, first/last the
/// first and last document, W = window, P = prefix, BS = block):
///   full                   all pairs
///   causal                 j <= qp
///   full_document          d(qp) == d(j)
///   causal_document        d(qp) == d(j) and j <= qp
///   sliding_window         |qp - j| <= W
///   sliding_window_causal  j <= qp and qp - j <= W
///   global_sliding_window  |qp - j| <= W or qp < 2W or j < 2W
///   share_question         causal_document or (d(j) == first and d(qp) != first)
///   causal_blockwise       causal_document or (d(qp) == last and d(j) != last)
///   prefix_lm_causal       j <= qp or j <= P
///   prefix_lm_document     causal_document or (d(qp) == d(j) and j - s(j) <= P)
///   block_causal_document  d(qp) == d(j) and j < (qp / BS + 1) * BS
///   strided                j <= qp and ((qp - j) < stride or (qp - j) % stride == 0)
///                          (Sparse Transformer, strided heads combined)
///   fixed                  j <= qp and (j / BS == qp / BS or j % BS >= BS - summary)
///                          (Sparse Transformer, fixed pattern with `summary` columns per block)
///   bigbird                with qb = qp / BS, kb = j / BS: qb < global_blocks or
///                          kb < global_blocks or |qb - kb| <= window_blocks or kb is one of
///                          `random_blocks` key blocks drawn for (head, qb) from `seed`
///   dilated_sliding_window |qp - j| % dilation == 0 and |qp - j| <= W * dilation
///   shard                  j <= qp and (qp - j <= W or j % stride == offset)
///                          (S2-Attention-style strided shard; see MaskSpec::strided_shards)
///   block_sparse           the caller's BlockSparseLayout decides (see there)
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace longattn {

/// A named mask pattern.
enum class Pattern : std::uint8_t {
  kFull,
  kCausal,
  kFullDocument,
  kCausalDocument,
  kSlidingWindow,
  kSlidingWindowCausal,
  kGlobalSlidingWindow,
  kShareQuestion,
  kCausalBlockwise,
  kPrefixLmCausal,
  kPrefixLmDocument,
  kBlockCausalDocument,
  kStrided,
  kFixed,
  kBigBird,
  kDilatedSlidingWindow,
  kShard,
  kBlockSparse,
};

/// The snake_case name of a pattern ("sliding_window_causal").
[[nodiscard]] const char* pattern_name(Pattern pattern) noexcept;
/// Parses a snake_case pattern name. @throws Error naming `argument` for an unknown name.
[[nodiscard]] Pattern parse_pattern(std::string_view name, const std::string& argument = "mask");
/// All patterns except kBlockSparse, in declaration order.
[[nodiscard]] const std::vector<Pattern>& all_patterns();
/// The twelve kernel-benchmark patterns of the Long-Context Attention Benchmark.
[[nodiscard]] const std::vector<Pattern>& benchmark_patterns();
/// True for patterns that read MaskSpec::doc_lens.
[[nodiscard]] bool pattern_uses_documents(Pattern pattern) noexcept;

/// One pattern with its parameters. Fields a pattern does not use are ignored.
struct PatternSpec {
  Pattern kind = Pattern::kFull;   ///< Which pattern.
  std::int64_t window = 1024;      ///< W: sliding windows, global window, dilated, shard local.
  std::int64_t block = 2048;       ///< BS: block_causal_document, fixed, bigbird.
  std::int64_t prefix = 0;         ///< P: prefix_lm_* (keys j <= P are the prefix).
  std::int64_t stride = 128;       ///< strided, shard.
  std::int64_t offset = 0;         ///< shard: which residue class of keys this head reads.
  std::int64_t summary = 1;        ///< fixed: summary columns at the end of each block.
  std::int64_t dilation = 2;       ///< dilated_sliding_window.
  std::int64_t global_blocks = 1;  ///< bigbird.
  std::int64_t window_blocks = 1;  ///< bigbird: blocks on each side of the diagonal.
  std::int64_t random_blocks = 2;  ///< bigbird: random key blocks per query block.
  std::uint64_t seed = 0;          ///< bigbird random draw.
};

/// A caller-supplied block-sparse layout: for each (batch, head, query block) a CSR list of key
/// blocks. A listed block marked full is visible whole; a listed block marked partial is visible
/// where the options' element rule (causal, window, sinks) allows; unlisted blocks are masked.
struct BlockSparseLayout {
  std::int64_t block_q = 64;  ///< Query rows per block (> 0).
  std::int64_t block_k = 64;  ///< Keys per block (> 0).
  std::int64_t batches = 1;   ///< B (1 = the same layout for every batch entry).
  std::int64_t heads = 1;     ///< Hq (1 = the same layout for every head).
  std::int64_t q_blocks = 0;  ///< Query blocks per (batch, head) = ceil(Sq / block_q).
  /// CSR offsets, length batches*heads*q_blocks + 1, row r = (b*heads + h)*q_blocks + qb.
  std::vector<std::int64_t> row_offsets;
  std::vector<std::int32_t> key_blocks;  ///< Key block indices, one per CSR entry.
  std::vector<std::uint8_t> partial;     ///< Per entry: 1 = partial, 0 = full (empty = all full).
};

/// What the caller asks to mask: one pattern for all heads or one per head, plus documents.
struct MaskSpec {
  /// Size 1 (every head) or Hq (head h uses heads[h]).
  std::vector<PatternSpec> heads{PatternSpec{}};
  /// Document lengths over the key sequence (sum = Skv); needed by document patterns.
  std::vector<std::int64_t> doc_lens;
  /// Required when a head's pattern is kBlockSparse.
  std::shared_ptr<const BlockSparseLayout> layout;

  /// One pattern for every head.
  static MaskSpec of(const PatternSpec& pattern);
  /// One pattern for every head, with documents.
  static MaskSpec with_documents(const PatternSpec& pattern, std::vector<std::int64_t> doc_lens);
  /// A caller block-sparse layout for every head.
  static MaskSpec block_sparse(std::shared_ptr<const BlockSparseLayout> layout);
  /// S2-Attention-style heterogeneous heads: head h reads keys j with j % stride == h % stride,
  /// plus a causal local window of `window` keys.
  static MaskSpec strided_shards(std::int64_t num_heads, std::int64_t stride, std::int64_t window);
};

/// Seeded document lengths drawn uniformly from [min_len, max_len] until they cover `total`
/// (the last is cut to fit). Deterministic for a given seed on every platform.
[[nodiscard]] std::vector<std::int64_t> random_documents(std::int64_t total, std::int64_t min_len,
                                                         std::int64_t max_len,
                                                         std::uint64_t seed = 42);

}  // namespace longattn
