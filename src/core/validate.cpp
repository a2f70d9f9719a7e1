// SPDX-License-Identifier: Apache-2.0
// Argument validation: every check names the argument, the value and what was expected.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "core/mask_rows.hpp"
#include "core/problem.hpp"
#include "cuda/cuda_backend.hpp"
#include "longattn/error.hpp"

namespace longattn::detail {
namespace {

[[noreturn]] void fail(const std::string& arg, const std::string& msg) {
  throw Error(ErrorKind::kInvalidArgument, arg, msg);
}

std::string shape_str(const TensorView& t) {
  std::string s = "[";
  for (int i = 0; i < t.rank; ++i) {
    if (i) s += ", ";
    s += std::to_string(t.shape[static_cast<std::size_t>(i)]);
  }
  return s + "]";
}

void check_basic(const TensorView& t, const std::string& name) {
  if (t.rank < 0 || t.rank > TensorView::kMaxRank) {
    fail(name, "rank " + std::to_string(t.rank) + " is out of range 0..4");
  }
  for (int i = 0; i < t.rank; ++i) {
    const auto d = static_cast<std::size_t>(i);
    if (t.shape[d] < 0) fail(name, "negative extent " + std::to_string(t.shape[d]));
    if (t.strides[d] < 0) fail(name, "negative stride " + std::to_string(t.strides[d]));
  }
  if (t.data == nullptr && t.numel() != 0) {
    fail(name, "null data pointer for a tensor of shape " + shape_str(t) + " (" +
                   std::to_string(t.numel()) + " elements)");
  }
}

/// Checks an attention operand of rank 4 [B, S, H, D] (or 3 [total, H, D] when varlen).
void check_operand(const TensorView& t, const std::string& name, bool varlen, const char* layout) {
  check_basic(t, name);
  const int want = varlen ? 3 : 4;
  if (t.rank != want) {
    fail(name, "expected rank " + std::to_string(want) + " " + layout + ", got rank " +
                   std::to_string(t.rank) + " " + shape_str(t));
  }
  if (t.dtype != DType::kF32 && t.dtype != DType::kBF16 && t.dtype != DType::kF16) {
    fail(name, std::string("expected dtype fp32, bf16 or fp16, got ") + dtype_name(t.dtype));
  }
  const auto last = static_cast<std::size_t>(t.rank - 1);
  if (t.shape[last] > 1 && t.strides[last] != 1) {
    fail(name, "the last dimension must be contiguous (stride 1), got stride " +
                   std::to_string(t.strides[last]));
  }
}

void expect_same_dims(const TensorView& t, const std::string& name, const TensorView& ref,
                      const std::string& ref_name) {
  if (t.rank != ref.rank || t.shape != ref.shape) {
    fail(name,
         "expected the shape of " + ref_name + " " + shape_str(ref) + ", got " + shape_str(t));
  }
}

void expect_dtype(const TensorView& t, const std::string& name, DType dtype,
                  const std::string& why) {
  if (t.dtype != dtype) {
    fail(name, std::string("expected dtype ") + dtype_name(dtype) + " (" + why + "), got " +
                   dtype_name(t.dtype));
  }
}

void expect_device(const TensorView& t, const std::string& name, const TensorView& like) {
  if (t.device != like.device) {
    fail(name, std::string("expected a tensor on ") + device_name(like.device) + " like q, got " +
                   device_name(t.device));
  }
  if (t.device == Device::kCUDA && t.device_index != like.device_index) {
    fail(name, "expected a tensor on GPU " + std::to_string(like.device_index) +
                   " like q, got GPU " + std::to_string(t.device_index));
  }
}

/// Copies `count` elements of a rank-1 view (any stride, host or GPU memory) to the host.
template <class E>
std::vector<E> read_small_vector(const TensorView& t) {
  const std::int64_t n = t.shape[0];
  std::vector<E> out(static_cast<std::size_t>(n));
  if (n == 0) return out;
  const std::int64_t span = (n - 1) * t.strides[0] + 1;
  std::vector<E> raw;
  const E* src = static_cast<const E*>(t.data);
  if (t.device == Device::kCUDA) {
    raw.resize(static_cast<std::size_t>(span));
    cuda::copy_to_host(raw.data(), t.data, static_cast<std::size_t>(span) * sizeof(E),
                       t.device_index);
    src = raw.data();
  }
  for (std::int64_t i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = src[i * t.strides[0]];
  return out;
}

std::vector<std::int64_t> read_cu_seqlens(const TensorView& t, const std::string& name,
                                          std::int64_t total) {
  check_basic(t, name);
  if (t.rank != 1) fail(name, "expected rank 1 [B+1], got rank " + std::to_string(t.rank));
  if (t.dtype != DType::kI32) {
    fail(name, std::string("expected dtype int32, got ") + dtype_name(t.dtype));
  }
  if (t.shape[0] < 1) fail(name, "expected length B+1 >= 1, got 0");
  // GPU lengths are copied to the host: the schedule is built on the CPU.
  const std::vector<std::int32_t> raw = read_small_vector<std::int32_t>(t);
  std::vector<std::int64_t> cu(raw.begin(), raw.end());
  if (cu[0] != 0) fail(name, "expected cu_seqlens[0] == 0, got " + std::to_string(cu[0]));
  for (std::size_t i = 1; i < cu.size(); ++i) {
    if (cu[i] < cu[i - 1]) {
      fail(name, "not monotone: element " + std::to_string(i) + " = " + std::to_string(cu[i]) +
                     " < element " + std::to_string(i - 1) + " = " + std::to_string(cu[i - 1]));
    }
  }
  if (cu.back() != total) {
    fail(name, "last element " + std::to_string(cu.back()) + " does not match the packed length " +
                   std::to_string(total));
  }
  return cu;
}

}  // namespace

Operand make_operand(const TensorView& t, bool varlen, const std::vector<std::int64_t>& cu,
                     std::int64_t batch) {
  Operand op;
  op.data = t.data;
  op.dtype = t.dtype;
  const std::size_t tok = varlen ? 0 : 1;
  op.token_stride = t.strides[tok];
  op.head_stride = t.strides[tok + 1];
  op.batch_offset.resize(static_cast<std::size_t>(batch));
  for (std::int64_t b = 0; b < batch; ++b) {
    op.batch_offset[static_cast<std::size_t>(b)] =
        varlen ? cu[static_cast<std::size_t>(b)] * op.token_stride : b * t.strides[0];
  }
  return op;
}

namespace {

constexpr std::int64_t kMaxMaskParameter = std::int64_t{1} << 40;

void check_pattern(const PatternSpec& p, const std::string& arg, const MaskSpec& mask) {
  auto positive = [&](std::int64_t value, const char* field) {
    if (value <= 0) fail(arg + "." + field, "expected > 0, got " + std::to_string(value));
  };
  auto non_negative = [&](std::int64_t value, const char* field) {
    if (value < 0) fail(arg + "." + field, "expected >= 0, got " + std::to_string(value));
  };
  // Bounded so that window * dilation, 2 * window and block products stay far from overflow.
  for (const auto& [value, field] :
       {std::pair{p.window, "window"}, std::pair{p.block, "block"}, std::pair{p.prefix, "prefix"},
        std::pair{p.stride, "stride"}, std::pair{p.summary, "summary"},
        std::pair{p.dilation, "dilation"}, std::pair{p.global_blocks, "global_blocks"},
        std::pair{p.window_blocks, "window_blocks"}, std::pair{p.random_blocks, "random_blocks"}}) {
    if (value > kMaxMaskParameter) {
      fail(arg + "." + field, "expected <= 2^40, got " + std::to_string(value));
    }
  }
  switch (p.kind) {
    case Pattern::kSlidingWindow:
    case Pattern::kSlidingWindowCausal:
    case Pattern::kGlobalSlidingWindow:
      non_negative(p.window, "window");
      break;
    case Pattern::kPrefixLmCausal:
    case Pattern::kPrefixLmDocument:
      non_negative(p.prefix, "prefix");
      break;
    case Pattern::kBlockCausalDocument:
      positive(p.block, "block");
      break;
    case Pattern::kStrided:
      positive(p.stride, "stride");
      break;
    case Pattern::kFixed:
      positive(p.block, "block");
      non_negative(p.summary, "summary");
      if (p.summary > p.block) {
        fail(arg + ".summary", "expected <= block (" + std::to_string(p.block) + "), got " +
                                   std::to_string(p.summary));
      }
      break;
    case Pattern::kBigBird:
      positive(p.block, "block");
      non_negative(p.global_blocks, "global_blocks");
      non_negative(p.window_blocks, "window_blocks");
      non_negative(p.random_blocks, "random_blocks");
      if (p.global_blocks + p.window_blocks + 1 > kMaxMaskParameter / p.block) {
        fail(arg + ".block", "(global_blocks + window_blocks + 1) * block must be <= 2^40");
      }
      break;
    case Pattern::kDilatedSlidingWindow:
      non_negative(p.window, "window");
      positive(p.dilation, "dilation");
      if (p.window > kMaxMaskParameter / p.dilation) {
        fail(arg + ".window", "window * dilation must be <= 2^40, got " + std::to_string(p.window) +
                                  " * " + std::to_string(p.dilation));
      }
      break;
    case Pattern::kShard:
      non_negative(p.window, "window");
      positive(p.stride, "stride");
      if (p.offset < 0 || p.offset >= p.stride) {
        fail(arg + ".offset", "expected in [0, stride=" + std::to_string(p.stride) + "), got " +
                                  std::to_string(p.offset));
      }
      break;
    case Pattern::kBlockSparse:
      if (!mask.layout) fail("mask.layout", "required by pattern block_sparse, got none");
      break;
    default:
      break;
  }
}

void check_layout(const BlockSparseLayout& l, const Problem& p) {
  const std::string a = "mask.layout";
  if (l.block_q <= 0) fail(a + ".block_q", "expected > 0, got " + std::to_string(l.block_q));
  if (l.block_k <= 0) fail(a + ".block_k", "expected > 0, got " + std::to_string(l.block_k));
  if (l.batches != 1 && l.batches != p.batch) {
    fail(a + ".batches",
         "expected 1 or B=" + std::to_string(p.batch) + ", got " + std::to_string(l.batches));
  }
  if (l.heads != 1 && l.heads != p.hq) {
    fail(a + ".heads",
         "expected 1 or Hq=" + std::to_string(p.hq) + ", got " + std::to_string(l.heads));
  }
  std::int64_t max_sq = 0;
  std::int64_t max_skv = 0;
  for (const auto& s : p.seqs) {
    max_sq = std::max(max_sq, s.sq);
    max_skv = std::max(max_skv, s.skv);
  }
  const std::int64_t need_qb = (max_sq + l.block_q - 1) / l.block_q;
  if (l.q_blocks < need_qb) {
    fail(a + ".q_blocks", "expected >= ceil(Sq / block_q) = " + std::to_string(need_qb) + ", got " +
                              std::to_string(l.q_blocks));
  }
  const std::int64_t rows = l.batches * l.heads * l.q_blocks;
  if (static_cast<std::int64_t>(l.row_offsets.size()) != rows + 1) {
    fail(a + ".row_offsets",
         "expected length batches*heads*q_blocks+1 = " + std::to_string(rows + 1) + ", got " +
             std::to_string(l.row_offsets.size()));
  }
  if (l.row_offsets.front() != 0) fail(a + ".row_offsets", "expected row_offsets[0] == 0");
  for (std::size_t i = 1; i < l.row_offsets.size(); ++i) {
    if (l.row_offsets[i] < l.row_offsets[i - 1]) {
      fail(a + ".row_offsets", "not monotone at element " + std::to_string(i));
    }
  }
  if (l.row_offsets.back() != static_cast<std::int64_t>(l.key_blocks.size())) {
    fail(a + ".row_offsets", "last element " + std::to_string(l.row_offsets.back()) +
                                 " does not match key_blocks length " +
                                 std::to_string(l.key_blocks.size()));
  }
  if (!l.partial.empty() && l.partial.size() != l.key_blocks.size()) {
    fail(a + ".partial", "expected empty or the length of key_blocks (" +
                             std::to_string(l.key_blocks.size()) + "), got " +
                             std::to_string(l.partial.size()));
  }
  const std::int64_t kb_max = (max_skv + l.block_k - 1) / l.block_k;
  for (std::size_t i = 0; i < l.key_blocks.size(); ++i) {
    if (l.key_blocks[i] < 0 || l.key_blocks[i] >= std::max<std::int64_t>(kb_max, 1)) {
      fail(a + ".key_blocks", "entry " + std::to_string(i) + " = " +
                                  std::to_string(l.key_blocks[i]) + " is outside [0, " +
                                  std::to_string(kb_max) + ")");
    }
  }
  std::vector<std::int32_t> row;
  for (std::size_t r = 0; r + 1 < l.row_offsets.size(); ++r) {
    row.assign(l.key_blocks.begin() + l.row_offsets[r],
               l.key_blocks.begin() + l.row_offsets[r + 1]);
    std::sort(row.begin(), row.end());
    if (std::adjacent_find(row.begin(), row.end()) != row.end()) {
      fail(a + ".key_blocks", "row " + std::to_string(r) + " lists key block " +
                                  std::to_string(*std::adjacent_find(row.begin(), row.end())) +
                                  " twice, expected each key block at most once per row");
    }
  }
}

void check_mask(Problem& p, const MaskSpec& mask) {
  if (mask.heads.size() != 1 && static_cast<std::int64_t>(mask.heads.size()) != p.hq) {
    fail("mask.heads", "expected 1 or Hq=" + std::to_string(p.hq) + " patterns, got " +
                           std::to_string(mask.heads.size()));
  }
  bool uses_docs = false;
  bool uses_layout = false;
  for (std::size_t h = 0; h < mask.heads.size(); ++h) {
    const auto& pat = mask.heads[h];
    check_pattern(pat, "mask.heads[" + std::to_string(h) + "]", mask);
    uses_docs |= pattern_uses_documents(pat.kind);
    uses_layout |= pat.kind == Pattern::kBlockSparse;
  }
  if (uses_layout) check_layout(*mask.layout, p);
  if (!uses_docs) return;
  if (mask.doc_lens.empty()) {
    fail("mask.doc_lens", "required by a document pattern, got none");
  }
  std::int64_t total = 0;
  for (std::size_t i = 0; i < mask.doc_lens.size(); ++i) {
    if (mask.doc_lens[i] <= 0) {
      fail("mask.doc_lens", "entry " + std::to_string(i) + " = " +
                                std::to_string(mask.doc_lens[i]) + ", expected > 0");
    }
    total += mask.doc_lens[i];
  }
  for (std::size_t b = 0; b < p.seqs.size(); ++b) {
    if (p.seqs[b].skv != total) {
      fail("mask.doc_lens", "documents cover " + std::to_string(total) + " keys but batch entry " +
                                std::to_string(b) + " has Skv = " + std::to_string(p.seqs[b].skv));
    }
  }
  p.docs = build_doc_table(mask.doc_lens);
}

struct Shapes {
  bool varlen = false;
  std::int64_t batch = 0;
  std::vector<std::int64_t> cu_q;
  std::vector<std::int64_t> cu_k;
};

/// Validates q, k, v and options; fills everything in `p` except outputs.
Shapes fill_inputs(Problem& p, const TensorView& q, const TensorView& k, const TensorView& v,
                   const AttentionOptions& o) {
  Shapes s;
  const bool has_cu_q = !o.cu_seqlens_q.empty_view();
  const bool has_cu_k = !o.cu_seqlens_k.empty_view();
  if (has_cu_q != has_cu_k) {
    fail(has_cu_q ? "options.cu_seqlens_k" : "options.cu_seqlens_q",
         "varlen needs both cu_seqlens_q and cu_seqlens_k, got only one");
  }
  s.varlen = has_cu_q;
  const char* q_layout = s.varlen ? "[total_q, Hq, D]" : "[B, Sq, Hq, D]";
  const char* kv_layout = s.varlen ? "[total_k, Hkv, D]" : "[B, Skv, Hkv, D]";
  check_operand(q, "q", s.varlen, q_layout);
  check_operand(k, "k", s.varlen, kv_layout);
  check_operand(v, "v", s.varlen, kv_layout);
  expect_device(k, "k", q);
  expect_device(v, "v", q);
  if (k.dtype != q.dtype) {
    fail("k", std::string("expected the dtype of q (") + dtype_name(q.dtype) + "), got " +
                  dtype_name(k.dtype));
  }
  if (v.dtype != q.dtype) {
    fail("v", std::string("expected the dtype of q (") + dtype_name(q.dtype) + "), got " +
                  dtype_name(v.dtype));
  }
  expect_same_dims(v, "v", k, "k");
  const std::size_t h_idx = s.varlen ? 1 : 2;
  const std::size_t d_idx = h_idx + 1;
  p.hq = q.shape[h_idx];
  p.hkv = k.shape[h_idx];
  p.dim = q.shape[d_idx];
  if (k.shape[d_idx] != p.dim) {
    fail("k", "head dim " + std::to_string(k.shape[d_idx]) + " does not match q's " +
                  std::to_string(p.dim));
  }
  if (p.hkv == 0 ? p.hq != 0 : p.hq % p.hkv != 0) {
    fail("q",
         "Hq = " + std::to_string(p.hq) + " is not a multiple of Hkv = " + std::to_string(p.hkv));
  }
  if (s.varlen) {
    s.cu_q = read_cu_seqlens(o.cu_seqlens_q, "options.cu_seqlens_q", q.shape[0]);
    s.cu_k = read_cu_seqlens(o.cu_seqlens_k, "options.cu_seqlens_k", k.shape[0]);
    if (s.cu_q.size() != s.cu_k.size()) {
      fail("options.cu_seqlens_k", "expected length " + std::to_string(s.cu_q.size()) +
                                       " like cu_seqlens_q, got " + std::to_string(s.cu_k.size()));
    }
    s.batch = static_cast<std::int64_t>(s.cu_q.size()) - 1;
  } else {
    s.batch = q.shape[0];
    if (k.shape[0] != s.batch) {
      fail("k", "batch " + std::to_string(k.shape[0]) + " does not match q's " +
                    std::to_string(s.batch));
    }
  }
  p.batch = s.batch;
  p.varlen = s.varlen;
  p.dtype = q.dtype;
  p.seqs.resize(static_cast<std::size_t>(s.batch));
  for (std::int64_t b = 0; b < s.batch; ++b) {
    auto& seq = p.seqs[static_cast<std::size_t>(b)];
    const auto ub = static_cast<std::size_t>(b);
    seq.sq = s.varlen ? s.cu_q[ub + 1] - s.cu_q[ub] : q.shape[1];
    seq.skv = s.varlen ? s.cu_k[ub + 1] - s.cu_k[ub] : k.shape[1];
  }
  p.q = make_operand(q, s.varlen, s.cu_q, s.batch);
  p.k = make_operand(k, s.varlen, s.cu_k, s.batch);
  p.v = make_operand(v, s.varlen, s.cu_k, s.batch);

  // Options.
  p.stream = o.cuda_stream;
  p.device_index = q.device == Device::kCUDA ? q.device_index : -1;
  const Device q_device = q.device;
  const int q_index = q.device_index;
  if (o.scale && !std::isfinite(*o.scale)) {
    fail("options.scale", "expected a finite value, got " + std::to_string(*o.scale));
  }
  p.scale = o.scale ? *o.scale : (p.dim > 0 ? 1.0F / std::sqrt(static_cast<float>(p.dim)) : 1.0F);
  p.causal = o.causal;
  if (o.window_left < -1) {
    fail("options.window_left",
         "expected -1 (unbounded) or >= 0, got " + std::to_string(o.window_left));
  }
  if (o.window_right < -1) {
    fail("options.window_right",
         "expected -1 (unbounded) or >= 0, got " + std::to_string(o.window_right));
  }
  // A window wider than both sequences is unbounded; keeping it as given could overflow qp +- w.
  std::int64_t longest = 0;
  for (const auto& seq : p.seqs) longest = std::max({longest, seq.sq, seq.skv});
  p.window_left = o.window_left > 2 * longest ? -1 : o.window_left;
  p.window_right = o.window_right > 2 * longest ? -1 : o.window_right;
  if (o.num_sinks < 0) {
    fail("options.num_sinks", "expected >= 0, got " + std::to_string(o.num_sinks));
  }
  p.num_sinks = o.num_sinks;
  // (Subnormal caps are refused: 1 / c, which the CUDA kernels multiply by, would overflow.)
  if (!(o.softcap >= 0.0F) || !std::isfinite(o.softcap) ||
      (o.softcap > 0.0F && o.softcap < std::numeric_limits<float>::min())) {
    char text[160];
    std::snprintf(text, sizeof text,
                  "expected >= 0 (0 = off), finite and not subnormal (>= %g when on), got %g",
                  static_cast<double>(std::numeric_limits<float>::min()),
                  static_cast<double>(o.softcap));
    fail("options.softcap", text);
  }
  p.softcap = o.softcap;
  p.score = o.score;
  if (!std::isfinite(o.sigmoid_bias)) {
    fail("options.sigmoid_bias", "expected a finite value, got " + std::to_string(o.sigmoid_bias));
  }
  p.sigmoid_bias = o.sigmoid_bias;
  p.deterministic = o.deterministic;
  if (!o.sink_logits.empty_view()) {
    const auto& t = o.sink_logits;
    check_basic(t, "options.sink_logits");
    if (o.score != ScoreFn::kSoftmax) {
      fail("options.sink_logits", "only defined for score=softmax");
    }
    if (t.rank != 1 || t.shape[0] != p.hq) {
      fail("options.sink_logits",
           "expected shape [Hq] = [" + std::to_string(p.hq) + "], got " + shape_str(t));
    }
    expect_dtype(t, "options.sink_logits", DType::kF32, "sink logits are fp32");
    if (t.device != Device::kCPU && (t.device != q_device || t.device_index != q_index)) {
      fail("options.sink_logits", "expected host memory or the GPU of q");
    }
    p.sink_logits = read_small_vector<float>(t);
    for (std::int64_t h = 0; h < p.hq; ++h) {
      const float value = p.sink_logits[static_cast<std::size_t>(h)];
      if (!std::isfinite(value)) {
        fail("options.sink_logits", "entry " + std::to_string(h) + " is " + std::to_string(value) +
                                        ", expected a finite logit");
      }
      p.sink_logits[static_cast<std::size_t>(h)] = value;
    }
  }
  if (o.num_threads < 0) {
    fail("options.num_threads",
         "expected >= 0 (0 = default), got " + std::to_string(o.num_threads));
  }
  p.num_threads = o.num_threads;
  p.mask = o.mask;
  if (o.mask != nullptr) check_mask(p, *o.mask);
  return s;
}

void check_output_like(const TensorView& t, const std::string& name, const TensorView& like,
                       const std::string& like_name) {
  check_basic(t, name);
  expect_same_dims(t, name, like, like_name);
  if (t.dtype != like.dtype) {
    fail(name, std::string("expected the dtype of ") + like_name + " (" + dtype_name(like.dtype) +
                   "), got " + dtype_name(t.dtype));
  }
  expect_device(t, name, like);
  const auto last = static_cast<std::size_t>(t.rank - 1);
  if (t.shape[last] > 1 && t.strides[last] != 1) {
    fail(name, "the last dimension must be contiguous (stride 1), got stride " +
                   std::to_string(t.strides[last]));
  }
}

LseOperand make_lse(const TensorView& lse, const Problem& p, const Shapes& s, const TensorView& q,
                    bool required) {
  LseOperand out;
  if (lse.empty_view()) {
    if (required) fail("lse", "required (the forward's log-sum-exp, fp32), got none");
    return out;
  }
  check_basic(lse, "lse");
  expect_dtype(lse, "lse", DType::kF32, "the log-sum-exp is fp32");
  expect_device(lse, "lse", q);
  if (s.varlen) {
    if (lse.rank != 2 || lse.shape[0] != p.hq || lse.shape[1] != q.shape[0]) {
      fail("lse", "expected shape [Hq, total_q] = [" + std::to_string(p.hq) + ", " +
                      std::to_string(q.shape[0]) + "], got " + shape_str(lse));
    }
  } else if (lse.rank != 3 || lse.shape[0] != p.batch || lse.shape[1] != p.hq ||
             lse.shape[2] != q.shape[1]) {
    fail("lse", "expected shape [B, Hq, Sq] = [" + std::to_string(p.batch) + ", " +
                    std::to_string(p.hq) + ", " + std::to_string(q.shape[1]) + "], got " +
                    shape_str(lse));
  }
  out.data = static_cast<float*>(lse.data);
  out.batch_offset.resize(static_cast<std::size_t>(p.batch));
  if (s.varlen) {
    out.head_stride = lse.strides[0];
    out.token_stride = lse.strides[1];
    for (std::int64_t b = 0; b < p.batch; ++b) {
      out.batch_offset[static_cast<std::size_t>(b)] =
          s.cu_q[static_cast<std::size_t>(b)] * out.token_stride;
    }
  } else {
    out.head_stride = lse.strides[1];
    out.token_stride = lse.strides[2];
    for (std::int64_t b = 0; b < p.batch; ++b) {
      out.batch_offset[static_cast<std::size_t>(b)] = b * lse.strides[0];
    }
  }
  return out;
}

}  // namespace

Problem make_forward_problem(const TensorView& q, const TensorView& k, const TensorView& v,
                             const TensorView& out, const TensorView& lse,
                             const AttentionOptions& options) {
  Problem p;
  const Shapes s = fill_inputs(p, q, k, v, options);
  check_output_like(out, "out", q, "q");
  p.out = make_operand(out, s.varlen, s.cu_q, s.batch);
  if (!lse.empty_view() && p.score == ScoreFn::kSigmoid) {
    fail("lse", "the log-sum-exp is not defined for score=sigmoid; pass no lse");
  }
  p.lse = make_lse(lse, p, s, q, false);
  return p;
}

Problem make_backward_problem(const TensorView& q, const TensorView& k, const TensorView& v,
                              const TensorView& out, const TensorView& lse, const TensorView& dout,
                              const TensorView& dq, const TensorView& dk, const TensorView& dv,
                              const TensorView& dsink_logits, const AttentionOptions& options) {
  Problem p;
  const Shapes s = fill_inputs(p, q, k, v, options);
  check_output_like(out, "out", q, "q");
  check_output_like(dout, "dout", q, "q");
  check_output_like(dq, "dq", q, "q");
  check_output_like(dk, "dk", k, "k");
  check_output_like(dv, "dv", v, "v");
  p.out = make_operand(out, s.varlen, s.cu_q, s.batch);
  p.dout = make_operand(dout, s.varlen, s.cu_q, s.batch);
  p.dq = make_operand(dq, s.varlen, s.cu_q, s.batch);
  p.dk = make_operand(dk, s.varlen, s.cu_k, s.batch);
  p.dv = make_operand(dv, s.varlen, s.cu_k, s.batch);
  if (p.score == ScoreFn::kSoftmax) {
    p.lse = make_lse(lse, p, s, q, true);
  }
  if (!dsink_logits.empty_view()) {
    if (!p.has_sink_logits()) {
      fail("dsink_logits", "given, but options.sink_logits is absent");
    }
    check_basic(dsink_logits, "dsink_logits");
    expect_device(dsink_logits, "dsink_logits", q);
    expect_dtype(dsink_logits, "dsink_logits", DType::kF32, "sink logits are fp32");
    if (dsink_logits.rank != 1 || dsink_logits.shape[0] != p.hq) {
      fail("dsink_logits",
           "expected shape [Hq] = [" + std::to_string(p.hq) + "], got " + shape_str(dsink_logits));
    }
    p.dsink = static_cast<float*>(dsink_logits.data);
    p.dsink_stride = dsink_logits.strides[0];
  }
  return p;
}

}  // namespace longattn::detail
