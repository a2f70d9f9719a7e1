// SPDX-License-Identifier: Apache-2.0
// The oracle against hand-computed values and its backward against finite differences of its
// own forward: the oracle must be able to fail on its own.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/problem.hpp"
#include "longattn/longattn.hpp"

namespace {

using namespace longattn;

struct Tiny {
  std::vector<float> q{1.0F}, k{0.0F, std::log(3.0F)}, v{1.0F, 5.0F}, out{0.0F}, lse{0.0F};
  std::vector<float> sink{std::log(4.0F)};
  AttentionOptions o;
  Tiny() {
    o.scale = 1.0F;
    o.backend = Backend::kReference;
  }
  void run(bool with_lse = true) {
    attention_forward(
        TensorView::contiguous(q.data(), DType::kF32, {1, 1, 1, 1}),
        TensorView::contiguous(k.data(), DType::kF32, {1, 2, 1, 1}),
        TensorView::contiguous(v.data(), DType::kF32, {1, 2, 1, 1}),
        TensorView::contiguous(out.data(), DType::kF32, {1, 1, 1, 1}),
        with_lse ? TensorView::contiguous(lse.data(), DType::kF32, {1, 1, 1}) : TensorView{}, o);
  }
};

TEST(Reference, HandComputedSoftmax) {
  Tiny t;
  t.run();
  EXPECT_NEAR(t.out[0], 4.0F, 1e-6F);  // (1*1 + 3*5) / 4
  EXPECT_NEAR(t.lse[0], std::log(4.0F), 1e-6F);
}

TEST(Reference, HandComputedSinkLogit) {
  Tiny t;
  t.o.sink_logits = TensorView::contiguous(t.sink.data(), DType::kF32, {1});
  t.run();
  EXPECT_NEAR(t.out[0], 2.0F, 1e-6F);  // 16 / (1 + 3 + 4)
  EXPECT_NEAR(t.lse[0], std::log(8.0F), 1e-6F);
}

TEST(Reference, HandComputedSigmoidAndSoftcap) {
  Tiny t;
  t.o.score = ScoreFn::kSigmoid;
  t.o.sigmoid_bias = -1.0F;
  t.run(false);
  auto sig = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  EXPECT_NEAR(t.out[0], sig(-1.0) * 1.0 + sig(std::log(3.0) - 1.0) * 5.0, 1e-6);
  Tiny c;
  c.o.softcap = 0.5F;
  c.run();
  const double x1 = 0.5 * std::tanh(std::log(3.0) / 0.5);
  EXPECT_NEAR(c.out[0], (1.0 + std::exp(x1) * 5.0) / (1.0 + std::exp(x1)), 1e-6);
}

/// d(sum(out * dout))/dx by central differences vs the oracle backward.
void finite_difference_check(AttentionOptions o, bool sinks) {
  const std::int64_t S = 7, Skv = 9, Hq = 2, Hkv = 1, D = 3;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-1.0F, 1.0F);
  auto rand_vec = [&](std::size_t n) {
    std::vector<float> x(n);
    for (auto& e : x) e = dist(rng);
    return x;
  };
  auto q = rand_vec(S * Hq * D), k = rand_vec(Skv * Hkv * D), v = rand_vec(Skv * Hkv * D);
  auto dout = rand_vec(S * Hq * D);
  auto sink = rand_vec(Hq);
  o.backend = Backend::kReference;
  if (sinks) o.sink_logits = TensorView::contiguous(sink.data(), DType::kF32, {Hq});
  const bool softmax = o.score == ScoreFn::kSoftmax;
  auto loss = [&]() {
    std::vector<float> out(q.size()), lse(Hq * S);
    attention_forward(
        TensorView::contiguous(q.data(), DType::kF32, {1, S, Hq, D}),
        TensorView::contiguous(k.data(), DType::kF32, {1, Skv, Hkv, D}),
        TensorView::contiguous(v.data(), DType::kF32, {1, Skv, Hkv, D}),
        TensorView::contiguous(out.data(), DType::kF32, {1, S, Hq, D}),
        softmax ? TensorView::contiguous(lse.data(), DType::kF32, {1, Hq, S}) : TensorView{}, o);
    double l = 0.0;
    for (std::size_t i = 0; i < out.size(); ++i) l += static_cast<double>(out[i]) * dout[i];
    return l;
  };
  std::vector<float> out(q.size()), lse(Hq * S), dq(q.size()), dk(k.size()), dv(v.size()), ds(Hq);
  const auto qv = TensorView::contiguous(q.data(), DType::kF32, {1, S, Hq, D});
  const auto kv = TensorView::contiguous(k.data(), DType::kF32, {1, Skv, Hkv, D});
  const auto vv = TensorView::contiguous(v.data(), DType::kF32, {1, Skv, Hkv, D});
  const auto ov = TensorView::contiguous(out.data(), DType::kF32, {1, S, Hq, D});
  const auto lv =
      softmax ? TensorView::contiguous(lse.data(), DType::kF32, {1, Hq, S}) : TensorView{};
  attention_forward(qv, kv, vv, ov, lv, o);
  attention_backward(
      qv, kv, vv, ov, lv, TensorView::contiguous(dout.data(), DType::kF32, {1, S, Hq, D}),
      TensorView::contiguous(dq.data(), DType::kF32, {1, S, Hq, D}),
      TensorView::contiguous(dk.data(), DType::kF32, {1, Skv, Hkv, D}),
      TensorView::contiguous(dv.data(), DType::kF32, {1, Skv, Hkv, D}),
      sinks ? TensorView::contiguous(ds.data(), DType::kF32, {Hq}) : TensorView{}, o);
  auto check = [&](std::vector<float>& x, const std::vector<float>& grad, const char* name) {
    for (std::size_t i = 0; i < x.size(); ++i) {
      const float keep = x[i];
      const float h = 1e-2F;
      x[i] = keep + h;
      const double up = loss();
      x[i] = keep - h;
      const double down = loss();
      x[i] = keep;
      const double fd = (up - down) / (2.0 * h);
      EXPECT_NEAR(grad[i], fd, 2e-3 + 2e-3 * std::abs(fd)) << name << "[" << i << "]";
    }
  };
  check(q, dq, "dq");
  check(k, dk, "dk");
  check(v, dv, "dv");
  if (sinks) check(sink, ds, "dsink");
}

TEST(Reference, BackwardMatchesFiniteDifferences) {
  AttentionOptions plain;
  finite_difference_check(plain, false);
  AttentionOptions causal_window;
  causal_window.causal = true;
  causal_window.window_left = 3;
  causal_window.num_sinks = 1;
  finite_difference_check(causal_window, true);
  AttentionOptions capped;
  capped.softcap = 0.7F;
  finite_difference_check(capped, true);
  AttentionOptions sigmoid;
  sigmoid.score = ScoreFn::kSigmoid;
  sigmoid.sigmoid_bias = 0.3F;
  sigmoid.softcap = 2.0F;
  finite_difference_check(sigmoid, false);
}

}  // namespace

namespace {

// The scalar fp16/bf16 conversions against the compiler's own: _Float16 (a GCC extension in
// C++ on x86-64) or, on aarch64, the ACLE's __fp16 (IEEE binary16 there; GCC 12 has no C++
// _Float16 on that target).
#if defined(__aarch64__)
using CompilerHalf = __fp16;
#else
using CompilerHalf = _Float16;
#endif

TEST(Conversions, Fp16MatchesCompiler) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const auto bits = static_cast<std::uint16_t>(h);
    CompilerHalf ref;
    std::memcpy(&ref, &bits, 2);
    const float f = longattn::detail::f16_to_float(bits);
    if (std::isnan(static_cast<float>(ref))) {
      EXPECT_TRUE(std::isnan(f));
      continue;
    }
    ASSERT_EQ(f, static_cast<float>(ref)) << h;
    ASSERT_EQ(longattn::detail::float_to_f16(f), bits) << h;
  }
  std::mt19937 rng(1);
  std::uniform_int_distribution<std::uint32_t> any;
  for (int i = 0; i < 1000000; ++i) {
    std::uint32_t u = any(rng);
    float x;
    std::memcpy(&x, &u, 4);
    if (std::isnan(x)) continue;
    const auto ref = static_cast<CompilerHalf>(x);
    std::uint16_t rb;
    std::memcpy(&rb, &ref, 2);
    ASSERT_EQ(longattn::detail::float_to_f16(x), rb) << x;
  }
}

TEST(Conversions, Bf16RoundsToNearestEven) {
  using longattn::detail::bf16_to_float;
  using longattn::detail::float_to_bf16;
  EXPECT_EQ(float_to_bf16(1.0F), 0x3f80);
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0F + 1.0F / 256.0F)), 1.0F);  // tie -> even
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0F + 3.0F / 256.0F)), 1.0F + 4.0F / 256.0F);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
}

// A NaN or Inf in one document of a document mask reaches only that document's outputs and
// gradients, on the oracle and on the CPU engine: pairs across documents are masked (weight 0)
// and carry nothing, although the engine's 64 x 64 tiles mix the documents.
TEST(NonFinite, OneDocumentPoisonsOnlyItself) {
  constexpr std::int64_t kS = 200;
  constexpr std::int64_t kH = 2;
  constexpr std::int64_t kD = 32;
  const std::vector<std::int64_t> docs{60, 80, 60};  // document 1: tokens [60, 140)
  PatternSpec pattern;
  pattern.kind = Pattern::kCausalDocument;
  const MaskSpec mask = MaskSpec::with_documents(pattern, docs);
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> dist(-1.0F, 1.0F);
  auto tensor = [&](std::vector<float>& x) {
    x.resize(static_cast<std::size_t>(kS * kH * kD));
    for (float& e : x) e = dist(rng);
  };
  std::vector<float> q, k, v, dout;
  tensor(q);
  tensor(k);
  tensor(v);
  tensor(dout);
  auto at = [](std::vector<float>& x, std::int64_t token, std::int64_t head, std::int64_t d) {
    return &x[static_cast<std::size_t>((token * kH + head) * kD + d)];
  };
  *at(q, 70, 0, 3) = std::numeric_limits<float>::quiet_NaN();
  *at(k, 100, 1, 5) = std::numeric_limits<float>::infinity();
  *at(v, 90, 0, 7) = std::numeric_limits<float>::quiet_NaN();
  *at(dout, 120, 1, 0) = -std::numeric_limits<float>::infinity();
  for (Backend backend : {Backend::kReference, Backend::kCPU}) {
    AttentionOptions o;
    o.mask = &mask;
    o.backend = backend;
    auto view = [&](std::vector<float>& x) {
      return TensorView::contiguous(x.data(), DType::kF32, {1, kS, kH, kD});
    };
    std::vector<float> out(q.size()), lse(static_cast<std::size_t>(kH * kS)), dq(q.size()),
        dk(q.size()), dv(q.size());
    const TensorView lse_view = TensorView::contiguous(lse.data(), DType::kF32, {1, kH, kS});
    attention_forward(view(q), view(k), view(v), view(out), lse_view, o);
    attention_backward(view(q), view(k), view(v), view(out), lse_view, view(dout), view(dq),
                       view(dk), view(dv), TensorView{}, o);
    for (auto* grad : {&out, &dq, &dk, &dv}) {
      std::int64_t poisoned_in_doc1 = 0;
      for (std::int64_t t = 0; t < kS; ++t) {
        for (std::int64_t h = 0; h < kH; ++h) {
          for (std::int64_t d = 0; d < kD; ++d) {
            const bool finite = std::isfinite(*at(*grad, t, h, d));
            if (t >= 60 && t < 140) {
              poisoned_in_doc1 += finite ? 0 : 1;
            } else {
              ASSERT_TRUE(finite) << "backend " << static_cast<int>(backend) << ", token " << t
                                  << " head " << h << " dim " << d;
            }
          }
        }
      }
      EXPECT_GT(poisoned_in_doc1, 0);  // the poison is not dropped inside its document
    }
  }
}

}  // namespace
