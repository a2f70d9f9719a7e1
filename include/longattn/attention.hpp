// SPDX-License-Identifier: Apache-2.0
/// @file attention.hpp
/// @brief Exact attention forward and backward: options, layouts and entry points.
///
/// Layouts (last dimension contiguous, other strides free):
///   batched: q [B, Sq, Hq, D], k/v [B, Skv, Hkv, D], out [B, Sq, Hq, D], lse [B, Hq, Sq]
///   varlen (padding-free): q [total_q, Hq, D], k/v [total_k, Hkv, D], out [total_q, Hq, D],
///     lse [Hq, total_q], with int32 cu_seqlens_q / cu_seqlens_k of length B+1.
/// Hq must be a multiple of Hkv (GQA/MQA: query head h reads KV head h / (Hq / Hkv)).
///
/// Element rule (before the mask pattern): query i sits at position qp = i + (Skv - Sq); it may
/// see key j when (not causal or j <= qp) and (j in [qp - window_left, qp + window_right] or
/// j < num_sinks). A negative window side is unbounded. The mask pattern is intersected with
/// this rule (see mask.hpp; a block-sparse layout's full blocks bypass it).
///
/// Scores: x = scale * q.k; with softcap c > 0, x = c * tanh(x / c). Softmax gives
/// out = sum_j softmax_j(x) v_j (an optional per-head sink logit joins the denominator with no
/// value); sigmoid gives out = sum_j sigmoid(x + sigmoid_bias) v_j. A query that sees no key
/// gets out = 0 and lse = -inf (or the sink logit when one is given); a logit of -inf counts as
/// masked. NaN and Inf inputs propagate (forward) to the outputs of the queries that see them,
/// and to no other query; in V they propagate where the query's fp32 weight for that key is
/// nonzero (a weight that underflows, a logit ~88 below the row's maximum, does not carry them).
/// The backward follows the same rule: a (query, key) pair of weight 0 contributes nothing to
/// dq, dk or dv, whatever Inf/NaN the Q, K, V or dout rows of that pair hold (a NaN in one
/// document of a document mask leaves the other documents' gradients finite). On the GPU, inputs
/// holding an Inf or NaN take the generic CUDA kernels (exact, several times slower).
#pragma once

#include <cstdint>
#include <optional>

#include "longattn/mask.hpp"
#include "longattn/tensor.hpp"

namespace longattn {

/// The score function.
enum class ScoreFn : std::uint8_t {
  kSoftmax,  ///< softmax over visible keys (lse is the natural-log normalizer)
  kSigmoid,  ///< FlashSigmoid: elementwise sigmoid(x + bias), no normalization
};

/// Which implementation runs the call.
enum class Backend : std::uint8_t {
  kAuto,       ///< CPU for CPU tensors, CUDA for CUDA tensors
  kCPU,        ///< the SIMD + OpenMP CPU engine
  kReference,  ///< the float64 oracle (slow; for checking)
  kCUDA,       ///< the CUDA engine (when built with LONGATTN_CUDA)
};

/// "auto", "cpu", "reference", "cuda".
[[nodiscard]] const char* backend_name(Backend backend) noexcept;

/// Options shared by forward and backward. Defaults give plain non-causal softmax attention.
struct AttentionOptions {
  std::optional<float> scale;      ///< Softmax scale; default 1/sqrt(D).
  bool causal = false;             ///< Bottom-right aligned causal.
  std::int64_t window_left = -1;   ///< Keys visible before the query position (-1 unbounded).
  std::int64_t window_right = -1;  ///< Keys visible after the query position (-1 unbounded).
  std::int64_t num_sinks = 0;      ///< The first N keys bypass the window (never causality).
  /// Optional fp32 [Hq] learnable sink logits (an extra softmax term with no value).
  TensorView sink_logits;
  float softcap = 0.0F;               ///< Logit softcap c (0 = off; else a normal float).
  ScoreFn score = ScoreFn::kSoftmax;  ///< Score function.
  float sigmoid_bias = 0.0F;          ///< Bias b for ScoreFn::kSigmoid.
  const MaskSpec* mask = nullptr;     ///< Optional mask pattern (null = none). Not owned.
  TensorView cu_seqlens_q;            ///< int32 [B+1] for varlen, else absent.
  TensorView cu_seqlens_k;            ///< int32 [B+1] for varlen, else absent.
  Backend backend = Backend::kAuto;   ///< Implementation choice.
  /// Backward: the same gradient bits on every run. The CUDA tensor-core backward otherwise adds
  /// dQ with fp32 atomics, whose order (and so the last bits of dQ) varies from run to run; with
  /// `deterministic` it recomputes the scores per query tile instead (7 tile products instead
  /// of 5, so slower). The CPU engine and the generic CUDA kernels are always deterministic.
  bool deterministic = false;
  int num_threads = 0;  ///< CPU threads (0 = OpenMP default).
  /// CUDA stream (a cudaStream_t) for GPU tensors; null = the legacy default stream. The call
  /// is asynchronous on this stream except for small host<->device copies of cu_seqlens and
  /// sink logits given in GPU memory, which synchronize.
  void* cuda_stream = nullptr;
};

/// Forward: out = attention(q, k, v). `lse` may be an absent view; when given it must be fp32
/// [B, Hq, Sq] (batched) or [Hq, total_q] (varlen). Not defined for ScoreFn::kSigmoid.
/// `out` has q's dtype and shape.
/// @throws Error on invalid arguments (the message names the argument).
void attention_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                       const TensorView& out, const TensorView& lse,
                       const AttentionOptions& options = {});

/// Backward: gradients of sum(out * dout) with respect to q, k, v (and the sink logits).
/// `out` and `lse` are the forward's results (lse is required for softmax, ignored for sigmoid).
/// dq/dk/dv have the dtype and shape of q/k/v; `dsink_logits` is an optional fp32 [Hq] output
/// (required to be absent when options.sink_logits is absent).
/// @throws Error on invalid arguments (the message names the argument).
void attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out, const TensorView& lse, const TensorView& dout,
                        const TensorView& dq, const TensorView& dk, const TensorView& dv,
                        const TensorView& dsink_logits, const AttentionOptions& options = {});

/// The library version string ("0.1.0").
[[nodiscard]] const char* version() noexcept;

}  // namespace longattn
