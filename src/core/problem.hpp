// SPDX-License-Identifier: Apache-2.0
// The validated, normalized form of one attention call that every backend consumes.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "longattn/attention.hpp"

namespace longattn::detail {

/// An attention operand addressed by (batch, token, head, dim); the dim stride is 1.
struct Operand {
  void* data = nullptr;
  DType dtype = DType::kF32;
  std::vector<std::int64_t> batch_offset;  // element offset of (b, token 0, head 0)
  std::int64_t token_stride = 0;
  std::int64_t head_stride = 0;

  [[nodiscard]] bool present() const { return !batch_offset.empty(); }
  [[nodiscard]] std::int64_t offset(std::int64_t b, std::int64_t t, std::int64_t h) const {
    return batch_offset[static_cast<std::size_t>(b)] + t * token_stride + h * head_stride;
  }
  template <class T>
  [[nodiscard]] T* row(std::int64_t b, std::int64_t t, std::int64_t h) const {
    return static_cast<T*>(data) + offset(b, t, h);
  }
};

/// The fp32 log-sum-exp vector addressed by (batch, head, token).
struct LseOperand {
  float* data = nullptr;
  std::vector<std::int64_t> batch_offset;
  std::int64_t head_stride = 0;
  std::int64_t token_stride = 0;

  [[nodiscard]] bool present() const { return data != nullptr || !batch_offset.empty(); }
  [[nodiscard]] float& at(std::int64_t b, std::int64_t h, std::int64_t t) const {
    return data[batch_offset[static_cast<std::size_t>(b)] + h * head_stride + t * token_stride];
  }
};

/// Lengths of one batch entry.
struct Sequence {
  std::int64_t sq = 0;
  std::int64_t skv = 0;
};

/// Documents over a key sequence: the document of each position and each document's range.
struct DocTable {
  std::vector<std::int32_t> doc_of;  // per key position
  std::vector<std::int64_t> start;   // per document
  std::vector<std::int64_t> end;     // per document (exclusive)
  [[nodiscard]] bool empty() const { return start.empty(); }
  [[nodiscard]] std::int32_t last() const { return static_cast<std::int32_t>(start.size()) - 1; }
};

/// A fully validated call. Pointers are not owned.
struct Problem {
  std::int64_t batch = 0;
  std::int64_t hq = 0;
  std::int64_t hkv = 0;
  std::int64_t dim = 0;
  bool varlen = false;
  DType dtype = DType::kF32;
  std::vector<Sequence> seqs;

  Operand q, k, v, out;
  LseOperand lse;
  // Backward only.
  Operand dout, dq, dk, dv;
  float* dsink = nullptr;
  std::int64_t dsink_stride = 1;

  float scale = 1.0F;
  bool causal = false;
  std::int64_t window_left = -1;
  std::int64_t window_right = -1;
  std::int64_t num_sinks = 0;
  std::vector<float> sink_logits;  // empty = none; else one per query head
  float softcap = 0.0F;
  ScoreFn score = ScoreFn::kSoftmax;
  float sigmoid_bias = 0.0F;
  const MaskSpec* mask = nullptr;
  DocTable docs;  // built from mask->doc_lens when present

  bool deterministic = false;  // backward: same bits on every run (options.deterministic)
  int num_threads = 0;
  void* stream = nullptr;  // cudaStream_t of a GPU call (null = the default stream)
  int device_index = -1;   // GPU ordinal of a GPU call, -1 for host tensors

  [[nodiscard]] std::int64_t group() const { return hkv == 0 ? 1 : hq / hkv; }
  [[nodiscard]] bool has_sink_logits() const { return !sink_logits.empty(); }
  [[nodiscard]] const PatternSpec* pattern_for_head(std::int64_t h) const {
    if (mask == nullptr) return nullptr;
    return mask->heads.size() == 1 ? &mask->heads[0] : &mask->heads[static_cast<std::size_t>(h)];
  }
};

/// Which op a validation is for.
enum class Op { kForward, kBackward };

/// Validates the forward arguments and builds the Problem. @throws Error.
Problem make_forward_problem(const TensorView& q, const TensorView& k, const TensorView& v,
                             const TensorView& out, const TensorView& lse,
                             const AttentionOptions& options);

/// Validates the backward arguments and builds the Problem. @throws Error.
Problem make_backward_problem(const TensorView& q, const TensorView& k, const TensorView& v,
                              const TensorView& out, const TensorView& lse, const TensorView& dout,
                              const TensorView& dq, const TensorView& dk, const TensorView& dv,
                              const TensorView& dsink_logits, const AttentionOptions& options);

/// The (batch, token, head) addressing of a validated rank-4 (or varlen rank-3) view; `cu` holds
/// the cumulative lengths when varlen.
Operand make_operand(const TensorView& t, bool varlen, const std::vector<std::int64_t>& cu,
                     std::int64_t batch);

/// Element conversions shared by all CPU-side code.
float load_as_float(const void* base, DType dtype, std::int64_t index);
void store_from_float(void* base, DType dtype, std::int64_t index, float value);
/// fp32 -> bf16, round to nearest even, NaN stays NaN. Inline: the kernels call it per element.
inline std::uint16_t float_to_bf16(float value) {
  std::uint32_t bits = 0;
  std::memcpy(&bits, &value, 4);
  if ((bits & 0x7fffffffU) > 0x7f800000U) return static_cast<std::uint16_t>((bits >> 16) | 0x40U);
  bits += 0x7fffU + ((bits >> 16) & 1U);
  return static_cast<std::uint16_t>(bits >> 16);
}
inline float bf16_to_float(std::uint16_t bits) {
  const std::uint32_t wide = static_cast<std::uint32_t>(bits) << 16;
  float value = 0;
  std::memcpy(&value, &wide, 4);
  return value;
}
std::uint16_t float_to_f16(float value);
float f16_to_float(std::uint16_t bits);

inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

}  // namespace longattn::detail
