// SPDX-License-Identifier: Apache-2.0
// Mask descriptions (names, builders) and their per-row interval form.
#include "core/mask_rows.hpp"

#include <algorithm>
#include <array>
#include <string>

#include "longattn/error.hpp"
#include "longattn/mask.hpp"

namespace longattn {
namespace {

struct PatternName {
  Pattern pattern;
  const char* name;
};

constexpr std::array<PatternName, 18> kPatternNames{{
    {Pattern::kFull, "full"},
    {Pattern::kCausal, "causal"},
    {Pattern::kFullDocument, "full_document"},
    {Pattern::kCausalDocument, "causal_document"},
    {Pattern::kSlidingWindow, "sliding_window"},
    {Pattern::kSlidingWindowCausal, "sliding_window_causal"},
    {Pattern::kGlobalSlidingWindow, "global_sliding_window"},
    {Pattern::kShareQuestion, "share_question"},
    {Pattern::kCausalBlockwise, "causal_blockwise"},
    {Pattern::kPrefixLmCausal, "prefix_lm_causal"},
    {Pattern::kPrefixLmDocument, "prefix_lm_document"},
    {Pattern::kBlockCausalDocument, "block_causal_document"},
    {Pattern::kStrided, "strided"},
    {Pattern::kFixed, "fixed"},
    {Pattern::kBigBird, "bigbird"},
    {Pattern::kDilatedSlidingWindow, "dilated_sliding_window"},
    {Pattern::kShard, "shard"},
    {Pattern::kBlockSparse, "block_sparse"},
}};

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

const char* pattern_name(Pattern pattern) noexcept {
  for (const auto& e : kPatternNames) {
    if (e.pattern == pattern) return e.name;
  }
  return "?";
}

Pattern parse_pattern(std::string_view name, const std::string& argument) {
  for (const auto& e : kPatternNames) {
    if (name == e.name) return e.pattern;
  }
  std::string known;
  for (const auto& e : kPatternNames) known += std::string(known.empty() ? "" : ", ") + e.name;
  throw Error(ErrorKind::kInvalidArgument, argument,
              "unknown mask '" + std::string(name) + "', expected one of: " + known);
}

const std::vector<Pattern>& all_patterns() {
  static const std::vector<Pattern> all = [] {
    std::vector<Pattern> v;
    for (const auto& e : kPatternNames) {
      if (e.pattern != Pattern::kBlockSparse) v.push_back(e.pattern);
    }
    return v;
  }();
  return all;
}

const std::vector<Pattern>& benchmark_patterns() {
  static const std::vector<Pattern> twelve(all_patterns().begin(), all_patterns().begin() + 12);
  return twelve;
}

bool pattern_uses_documents(Pattern pattern) noexcept {
  switch (pattern) {
    case Pattern::kFullDocument:
    case Pattern::kCausalDocument:
    case Pattern::kShareQuestion:
    case Pattern::kCausalBlockwise:
    case Pattern::kPrefixLmDocument:
    case Pattern::kBlockCausalDocument:
      return true;
    default:
      return false;
  }
}

MaskSpec MaskSpec::of(const PatternSpec& pattern) {
  MaskSpec m;
  m.heads = {pattern};
  return m;
}

MaskSpec MaskSpec::with_documents(const PatternSpec& pattern, std::vector<std::int64_t> doc_lens) {
  MaskSpec m = of(pattern);
  m.doc_lens = std::move(doc_lens);
  return m;
}

MaskSpec MaskSpec::block_sparse(std::shared_ptr<const BlockSparseLayout> layout) {
  PatternSpec p;
  p.kind = Pattern::kBlockSparse;
  MaskSpec m = of(p);
  m.layout = std::move(layout);
  return m;
}

MaskSpec MaskSpec::strided_shards(std::int64_t num_heads, std::int64_t stride,
                                  std::int64_t window) {
  if (num_heads <= 0) {
    throw Error(ErrorKind::kInvalidArgument, "num_heads",
                "expected > 0, got " + std::to_string(num_heads));
  }
  if (stride <= 0) {
    throw Error(ErrorKind::kInvalidArgument, "stride",
                "expected > 0, got " + std::to_string(stride));
  }
  MaskSpec m;
  m.heads.clear();
  for (std::int64_t h = 0; h < num_heads; ++h) {
    PatternSpec p;
    p.kind = Pattern::kShard;
    p.stride = stride;
    p.offset = h % stride;
    p.window = window;
    m.heads.push_back(p);
  }
  return m;
}

std::vector<std::int64_t> random_documents(std::int64_t total, std::int64_t min_len,
                                           std::int64_t max_len, std::uint64_t seed) {
  if (min_len <= 0 || max_len < min_len) {
    throw Error(ErrorKind::kInvalidArgument, "min_len",
                "expected 0 < min_len <= max_len, got " + std::to_string(min_len) + ", " +
                    std::to_string(max_len));
  }
  std::vector<std::int64_t> lens;
  std::int64_t covered = 0;
  std::uint64_t state = seed;
  const auto span = static_cast<std::uint64_t>(max_len - min_len + 1);
  while (covered < total) {
    state = splitmix64(state);
    std::int64_t n = min_len + static_cast<std::int64_t>(state % span);
    n = std::min(n, total - covered);
    lens.push_back(n);
    covered += n;
  }
  return lens;
}

namespace detail {

DocTable build_doc_table(const std::vector<std::int64_t>& doc_lens) {
  DocTable t;
  std::int64_t pos = 0;
  for (std::size_t d = 0; d < doc_lens.size(); ++d) {
    t.start.push_back(pos);
    pos += doc_lens[d];
    t.end.push_back(pos);
  }
  t.doc_of.resize(static_cast<std::size_t>(pos));
  for (std::size_t d = 0; d < doc_lens.size(); ++d) {
    std::fill(t.doc_of.begin() + t.start[d], t.doc_of.begin() + t.end[d],
              static_cast<std::int32_t>(d));
  }
  return t;
}

std::vector<std::int64_t> bigbird_random_blocks(std::uint64_t seed, std::int64_t head,
                                                std::int64_t q_block, std::int64_t count,
                                                std::int64_t num_blocks) {
  std::vector<std::int64_t> picked;
  if (count <= 0 || num_blocks <= 0) return picked;
  if (count >= num_blocks) {
    for (std::int64_t b = 0; b < num_blocks; ++b) picked.push_back(b);
    return picked;
  }
  std::uint64_t state =
      splitmix64(seed ^ splitmix64(static_cast<std::uint64_t>(head) * 0x1000193ULL +
                                   static_cast<std::uint64_t>(q_block)));
  // Rejection sampling of distinct blocks; count < num_blocks so this terminates quickly.
  while (static_cast<std::int64_t>(picked.size()) < count) {
    state = splitmix64(state);
    const auto b = static_cast<std::int64_t>(state % static_cast<std::uint64_t>(num_blocks));
    if (std::find(picked.begin(), picked.end(), b) == picked.end()) picked.push_back(b);
  }
  std::sort(picked.begin(), picked.end());
  return picked;
}

void normalize_intervals(std::vector<Interval>& v, std::int64_t skv) {
  std::size_t n = 0;
  for (auto& iv : v) {
    iv.lo = std::max<std::int64_t>(iv.lo, 0);
    iv.hi = std::min(iv.hi, skv);
    if (iv.lo < iv.hi) v[n++] = iv;
  }
  v.resize(n);
  if (!std::is_sorted(v.begin(), v.end(),
                      [](const Interval& a, const Interval& b) { return a.lo < b.lo; })) {
    std::sort(v.begin(), v.end(), [](const Interval& a, const Interval& b) { return a.lo < b.lo; });
  }
  std::size_t m = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (m > 0 && v[i].lo <= v[m - 1].hi) {
      v[m - 1].hi = std::max(v[m - 1].hi, v[i].hi);
    } else {
      v[m++] = v[i];
    }
  }
  v.resize(m);
}

void intersect_intervals(const std::vector<Interval>& a, const std::vector<Interval>& b,
                         std::vector<Interval>& out) {
  out.clear();
  std::size_t i = 0;
  std::size_t j = 0;
  while (i < a.size() && j < b.size()) {
    const std::int64_t lo = std::max(a[i].lo, b[j].lo);
    const std::int64_t hi = std::min(a[i].hi, b[j].hi);
    if (lo < hi) out.push_back({lo, hi});
    if (a[i].hi < b[j].hi) {
      ++i;
    } else {
      ++j;
    }
  }
}

MaskRows::MaskRows(const Problem& problem, std::int64_t batch, std::int64_t head)
    : p_(problem),
      batch_(batch),
      head_(head),
      sq_(problem.seqs[static_cast<std::size_t>(batch)].sq),
      skv_(problem.seqs[static_cast<std::size_t>(batch)].skv),
      pattern_(problem.pattern_for_head(head)) {}

namespace {
std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  const std::int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}
std::int64_t floor_mod(std::int64_t a, std::int64_t b) { return a - floor_div(a, b) * b; }
}  // namespace

void MaskRows::option_row(std::int64_t qp, std::vector<Interval>& out) const {
  out.clear();
  const std::int64_t lo = p_.window_left < 0 ? 0 : qp - p_.window_left;
  const std::int64_t hi = p_.window_right < 0 ? skv_ : qp + p_.window_right + 1;
  out.push_back({lo, hi});
  if (p_.num_sinks > 0) out.push_back({0, p_.num_sinks});
  if (p_.causal) {
    for (auto& iv : out) iv.hi = std::min(iv.hi, qp + 1);
  }
  normalize_intervals(out, skv_);
}

void MaskRows::pattern_row(std::int64_t qp, std::vector<Interval>& out) const {
  out.clear();
  const PatternSpec& pat = *pattern_;
  const std::int64_t skv = skv_;
  const bool in_seq = qp >= 0 && qp < skv;
  const DocTable& docs = p_.docs;
  std::int32_t dq = -1;
  std::int64_t ds = 0;
  std::int64_t de = 0;
  if (pattern_uses_documents(pat.kind)) {
    if (!in_seq) return;  // a query with no document sees nothing
    dq = docs.doc_of[static_cast<std::size_t>(qp)];
    ds = docs.start[static_cast<std::size_t>(dq)];
    de = docs.end[static_cast<std::size_t>(dq)];
  }
  const std::int64_t w = pat.window;
  switch (pat.kind) {
    case Pattern::kFull:
      out.push_back({0, skv});
      break;
    case Pattern::kCausal:
      out.push_back({0, qp + 1});
      break;
    case Pattern::kFullDocument:
      out.push_back({ds, de});
      break;
    case Pattern::kCausalDocument:
      out.push_back({ds, qp + 1});
      break;
    case Pattern::kSlidingWindow:
      out.push_back({qp - w, qp + w + 1});
      break;
    case Pattern::kSlidingWindowCausal:
      out.push_back({qp - w, qp + 1});
      break;
    case Pattern::kGlobalSlidingWindow:
      if (qp < 2 * w) {
        out.push_back({0, skv});
      } else {
        out.push_back({0, 2 * w});
        out.push_back({qp - w, qp + w + 1});
      }
      break;
    case Pattern::kShareQuestion:
      out.push_back({ds, qp + 1});
      if (dq != 0) out.push_back({docs.start[0], docs.end[0]});
      break;
    case Pattern::kCausalBlockwise:
      out.push_back({ds, qp + 1});
      if (dq == docs.last()) out.push_back({0, docs.start[static_cast<std::size_t>(dq)]});
      break;
    case Pattern::kPrefixLmCausal:
      out.push_back({0, std::max(qp, pat.prefix) + 1});
      break;
    case Pattern::kPrefixLmDocument:
      out.push_back({ds, std::max(qp + 1, std::min(de, ds + pat.prefix + 1))});
      break;
    case Pattern::kBlockCausalDocument:
      out.push_back({ds, std::min(de, (qp / pat.block + 1) * pat.block)});
      break;
    case Pattern::kStrided: {
      if (qp < 0) break;
      const std::int64_t s = pat.stride;
      for (std::int64_t j = qp % s; j <= qp - s; j += s) out.push_back({j, j + 1});
      out.push_back({qp - s + 1, qp + 1});
      break;
    }
    case Pattern::kFixed: {
      if (qp < 0) break;
      const std::int64_t bs = pat.block;
      const std::int64_t own = (qp / bs) * bs;
      if (pat.summary > 0) {
        for (std::int64_t b0 = 0; b0 < own; b0 += bs)
          out.push_back({b0 + bs - pat.summary, b0 + bs});
      }
      out.push_back({own, qp + 1});
      break;
    }
    case Pattern::kBigBird: {
      const std::int64_t bs = pat.block;
      const std::int64_t qb = floor_div(qp, bs);
      if (qb < pat.global_blocks) {
        out.push_back({0, skv});
        break;
      }
      const std::int64_t nkb = (skv + bs - 1) / bs;
      out.push_back({0, pat.global_blocks * bs});
      out.push_back({(qb - pat.window_blocks) * bs, (qb + pat.window_blocks + 1) * bs});
      for (std::int64_t kb : bigbird_random_blocks(pat.seed, head_, qb, pat.random_blocks, nkb)) {
        out.push_back({kb * bs, (kb + 1) * bs});
      }
      break;
    }
    case Pattern::kDilatedSlidingWindow: {
      const std::int64_t d = pat.dilation;
      if (d == 1) {
        out.push_back({qp - w, qp + w + 1});
        break;
      }
      const std::int64_t first = std::max(qp - w * d, floor_mod(qp, d));
      for (std::int64_t j = first; j <= qp + w * d && j < skv; j += d) out.push_back({j, j + 1});
      break;
    }
    case Pattern::kShard: {
      if (qp < 0) break;
      const std::int64_t s = pat.stride;
      const std::int64_t local = qp - w;
      for (std::int64_t j = pat.offset; j < std::min(local, qp + 1); j += s) {
        out.push_back({j, j + 1});
      }
      out.push_back({local, qp + 1});
      break;
    }
    case Pattern::kBlockSparse:
      break;  // handled by layout_row
  }
  normalize_intervals(out, skv);
}

void MaskRows::layout_row(std::int64_t i, std::int64_t qp, std::vector<Interval>& out) const {
  out.clear();
  const BlockSparseLayout& l = *p_.mask->layout;
  const std::int64_t b = l.batches == 1 ? 0 : batch_;
  const std::int64_t h = l.heads == 1 ? 0 : head_;
  const std::int64_t qb = i / l.block_q;
  const std::int64_t r = (b * l.heads + h) * l.q_blocks + qb;
  option_row(qp, scratch_a_);
  for (std::int64_t e = l.row_offsets[static_cast<std::size_t>(r)];
       e < l.row_offsets[static_cast<std::size_t>(r + 1)]; ++e) {
    const std::int64_t kb = l.key_blocks[static_cast<std::size_t>(e)];
    const Interval block{kb * l.block_k, std::min((kb + 1) * l.block_k, skv_)};
    const bool partial = !l.partial.empty() && l.partial[static_cast<std::size_t>(e)] != 0;
    if (!partial) {
      out.push_back(block);
      continue;
    }
    for (const auto& iv : scratch_a_) {
      const std::int64_t lo = std::max(iv.lo, block.lo);
      const std::int64_t hi = std::min(iv.hi, block.hi);
      if (lo < hi) out.push_back({lo, hi});
    }
  }
  normalize_intervals(out, skv_);
}

void MaskRows::row(std::int64_t i, std::vector<Interval>& out) const {
  const std::int64_t qp = i + (skv_ - sq_);
  if (pattern_ != nullptr && pattern_->kind == Pattern::kBlockSparse) {
    layout_row(i, qp, out);
    return;
  }
  option_row(qp, scratch_a_);
  if (pattern_ == nullptr) {
    out = scratch_a_;
    return;
  }
  pattern_row(qp, scratch_b_);
  intersect_intervals(scratch_a_, scratch_b_, out);
}

}  // namespace detail
}  // namespace longattn
