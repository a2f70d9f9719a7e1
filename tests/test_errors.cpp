// SPDX-License-Identifier: Apache-2.0
// Bad input gets one exception type whose message names the argument and what was expected.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "longattn/longattn.hpp"

namespace {

using namespace longattn;

struct Fixture {
  std::int64_t B = 2, S = 8, Hq = 4, Hkv = 2, D = 32;
  std::vector<float> q = std::vector<float>(static_cast<std::size_t>(B * S * Hq * D), 0.1F);
  std::vector<float> k = std::vector<float>(static_cast<std::size_t>(B * S * Hkv * D), 0.2F);
  std::vector<float> v = k;
  std::vector<float> out = q;
  std::vector<float> lse = std::vector<float>(static_cast<std::size_t>(B * Hq * S));
  TensorView qv = TensorView::contiguous(q.data(), DType::kF32, {B, S, Hq, D});
  TensorView kv = TensorView::contiguous(k.data(), DType::kF32, {B, S, Hkv, D});
  TensorView vv = TensorView::contiguous(v.data(), DType::kF32, {B, S, Hkv, D});
  TensorView ov = TensorView::contiguous(out.data(), DType::kF32, {B, S, Hq, D});
  TensorView lv = TensorView::contiguous(lse.data(), DType::kF32, {B, Hq, S});
  AttentionOptions opt;
  void run() { attention_forward(qv, kv, vv, ov, lv, opt); }
};

/// Expects an Error whose argument is `arg` and whose message contains `fragment`.
void expect_error(const std::function<void(Fixture&)>& mutate, const std::string& arg,
                  const std::string& fragment) {
  Fixture f;
  mutate(f);
  try {
    f.run();
    ADD_FAILURE() << "no error; expected one about " << arg;
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), arg) << e.what();
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(Errors, ValidCallRuns) {
  Fixture f;
  EXPECT_NO_THROW(f.run());
  for (float x : f.out) EXPECT_NEAR(x, 0.2F, 1e-6F);
  EXPECT_NEAR(f.lse[0], std::log(8.0F) + 0.1F * 0.2F * 32.0F / std::sqrt(32.0F), 1e-5F);
}

TEST(Errors, NameTheArgument) {
  expect_error([](Fixture& f) { f.qv.rank = 2; }, "q", "expected rank 4");
  expect_error([](Fixture& f) { f.kv.dtype = DType::kBF16; }, "k", "expected the dtype of q");
  expect_error([](Fixture& f) { f.vv.dtype = DType::kF16; }, "v", "expected the dtype of q");
  expect_error([](Fixture& f) { f.qv.dtype = DType::kI32; }, "q",
               "expected dtype fp32, bf16 or fp16");
  expect_error(
      [](Fixture& f) {
        f.kv.shape[2] = 3;
        f.vv.shape[2] = 3;
      },
      "q", "not a multiple of Hkv");
  expect_error([](Fixture& f) { f.qv.strides[3] = 2; }, "q", "last dimension must be contiguous");
  expect_error(
      [](Fixture& f) {
        f.kv.shape[3] = 16;
        f.vv.shape[3] = 16;
      },
      "k", "head dim");
  expect_error([](Fixture& f) { f.qv.data = nullptr; }, "q", "null data pointer");
  expect_error([](Fixture& f) { f.ov.shape[1] = 7; }, "out", "expected the shape of q");
  expect_error([](Fixture& f) { f.lv.shape[2] = 3; }, "lse", "expected shape [B, Hq, Sq]");
  expect_error([](Fixture& f) { f.opt.window_left = -5; }, "options.window_left", "expected -1");
  expect_error([](Fixture& f) { f.opt.num_sinks = -1; }, "options.num_sinks", ">= 0");
  expect_error([](Fixture& f) { f.opt.softcap = -1.0F; }, "options.softcap", ">= 0");
  expect_error([](Fixture& f) { f.opt.softcap = 1e-40F; }, "options.softcap", "not subnormal");
  expect_error([](Fixture& f) { f.opt.scale = NAN; }, "options.scale", "finite");
  expect_error([](Fixture& f) { f.opt.score = ScoreFn::kSigmoid; }, "lse",
               "not defined for score=sigmoid");
  expect_error(
      [](Fixture& f) {
        f.kv.shape[0] = 1;
        f.vv.shape[0] = 1;
      },
      "k", "batch");
  expect_error(
      [](Fixture& f) {
        f.qv.shape[3] = 24;
        f.kv.shape[3] = 24;
        f.vv.shape[3] = 24;
        f.ov.shape[3] = 24;
      },
      "q", "multiple of 16");
  expect_error([](Fixture& f) { f.opt.backend = Backend::kCUDA; }, "options.backend", "CUDA");
}

TEST(Errors, VarlenArguments) {
  static std::vector<std::int32_t> cu = {0, 5, 3};
  static std::vector<std::int32_t> good = {0, 8, 16};
  auto varlen = [](Fixture& f) {
    f.qv = TensorView::contiguous(f.q.data(), DType::kF32, {16, f.Hq, f.D});
    f.kv = TensorView::contiguous(f.k.data(), DType::kF32, {16, f.Hkv, f.D});
    f.vv = TensorView::contiguous(f.v.data(), DType::kF32, {16, f.Hkv, f.D});
    f.ov = TensorView::contiguous(f.out.data(), DType::kF32, {16, f.Hq, f.D});
    f.lv = TensorView::contiguous(f.lse.data(), DType::kF32, {f.Hq, 16});
    f.opt.cu_seqlens_q = TensorView::contiguous(good.data(), DType::kI32, {3});
    f.opt.cu_seqlens_k = TensorView::contiguous(good.data(), DType::kI32, {3});
  };
  {
    Fixture f;
    varlen(f);
    EXPECT_NO_THROW(f.run());
  }
  expect_error(
      [&](Fixture& f) {
        varlen(f);
        f.opt.cu_seqlens_q = TensorView::contiguous(cu.data(), DType::kI32, {3});
      },
      "options.cu_seqlens_q", "not monotone");
  static std::vector<std::int32_t> short_total = {0, 8, 15};
  expect_error(
      [&](Fixture& f) {
        varlen(f);
        f.opt.cu_seqlens_k = TensorView::contiguous(short_total.data(), DType::kI32, {3});
      },
      "options.cu_seqlens_k", "does not match the packed length 16");
  expect_error(
      [&](Fixture& f) {
        varlen(f);
        f.opt.cu_seqlens_k = {};
      },
      "options.cu_seqlens_k", "both");
  expect_error(
      [&](Fixture& f) {
        varlen(f);
        f.lv.shape[1] = 15;
      },
      "lse", "[Hq, total_q]");
}

TEST(Errors, MaskArguments) {
  static MaskSpec docs_missing = MaskSpec::of(PatternSpec{Pattern::kCausalDocument});
  expect_error([](Fixture& f) { f.opt.mask = &docs_missing; }, "mask.doc_lens", "required");
  static MaskSpec docs_short =
      MaskSpec::with_documents(PatternSpec{Pattern::kFullDocument}, {3, 4});
  expect_error([](Fixture& f) { f.opt.mask = &docs_short; }, "mask.doc_lens", "cover 7 keys");
  static MaskSpec bad_window = [] {
    PatternSpec p{Pattern::kSlidingWindow};
    p.window = -3;
    return MaskSpec::of(p);
  }();
  expect_error([](Fixture& f) { f.opt.mask = &bad_window; }, "mask.heads[0].window", ">= 0");
  static MaskSpec heads3 = [] {
    MaskSpec m;
    m.heads = {PatternSpec{}, PatternSpec{}, PatternSpec{}};
    return m;
  }();
  expect_error([](Fixture& f) { f.opt.mask = &heads3; }, "mask.heads", "expected 1 or Hq=4");
  static MaskSpec no_layout = [] {
    MaskSpec m = MaskSpec::of(PatternSpec{Pattern::kBlockSparse});
    return m;
  }();
  expect_error([](Fixture& f) { f.opt.mask = &no_layout; }, "mask.layout", "required");
  static MaskSpec bad_layout = [] {
    auto l = std::make_shared<BlockSparseLayout>();
    l->q_blocks = 1;
    l->row_offsets = {0, 1};
    l->key_blocks = {5};
    return MaskSpec::block_sparse(l);
  }();
  expect_error([](Fixture& f) { f.opt.mask = &bad_layout; }, "mask.layout.key_blocks", "outside");
}

TEST(Errors, ParseNames) {
  EXPECT_THROW((void)parse_pattern("diagonal"), Error);
  EXPECT_EQ(parse_pattern("prefix_lm_document"), Pattern::kPrefixLmDocument);
  EXPECT_THROW((void)parse_dtype("fp8"), Error);
  EXPECT_EQ(benchmark_patterns().size(), 12U);
}

TEST(Errors, EmptyAndFullyMaskedRows) {
  // Sq > Skv with causal: the first Sq - Skv queries see nothing -> out 0, lse -inf, no NaN.
  std::vector<float> q(1 * 10 * 1 * 16, 0.3F), k(1 * 4 * 1 * 16, 0.7F), out(q.size(), 5.0F),
      lse(10);
  AttentionOptions o;
  o.causal = true;
  attention_forward(TensorView::contiguous(q.data(), DType::kF32, {1, 10, 1, 16}),
                    TensorView::contiguous(k.data(), DType::kF32, {1, 4, 1, 16}),
                    TensorView::contiguous(k.data(), DType::kF32, {1, 4, 1, 16}),
                    TensorView::contiguous(out.data(), DType::kF32, {1, 10, 1, 16}),
                    TensorView::contiguous(lse.data(), DType::kF32, {1, 1, 10}), o);
  for (int i = 0; i < 6; ++i) {
    EXPECT_TRUE(std::isinf(lse[static_cast<std::size_t>(i)]) &&
                lse[static_cast<std::size_t>(i)] < 0);
    EXPECT_EQ(out[static_cast<std::size_t>(i * 16)], 0.0F);
  }
  for (int i = 6; i < 10; ++i) EXPECT_NEAR(out[static_cast<std::size_t>(i * 16)], 0.7F, 1e-6F);
}

}  // namespace

namespace {

TEST(Errors, HugeWindowsMeanUnboundedAndParametersAreBounded) {
  Fixture a;
  a.opt.window_right = std::numeric_limits<std::int64_t>::max();
  a.opt.window_left = std::numeric_limits<std::int64_t>::max();
  a.run();
  Fixture b;
  b.run();
  EXPECT_EQ(a.out, b.out);
  static MaskSpec dilated = [] {
    PatternSpec p{Pattern::kDilatedSlidingWindow};
    p.window = std::int64_t{1} << 30;
    p.dilation = std::int64_t{1} << 30;
    return MaskSpec::of(p);
  }();
  expect_error([](Fixture& f) { f.opt.mask = &dilated; }, "mask.heads[0].window", "2^40");
}

TEST(Errors, SinkLogitsFiniteAndLayoutsWithoutDuplicates) {
  static std::vector<float> sinks = {0.0F, -INFINITY, 1.0F, 2.0F};
  expect_error(
      [](Fixture& f) {
        f.opt.sink_logits = TensorView::contiguous(sinks.data(), DType::kF32, {4});
      },
      "options.sink_logits", "finite");
  static MaskSpec dup = [] {
    auto l = std::make_shared<BlockSparseLayout>();
    l->block_q = 8;
    l->block_k = 4;
    l->q_blocks = 1;
    l->row_offsets = {0, 2};
    l->key_blocks = {1, 1};
    return MaskSpec::block_sparse(l);
  }();
  expect_error([](Fixture& f) { f.opt.mask = &dup; }, "mask.layout.key_blocks", "twice");
}

}  // namespace

// GPU tensors where no GPU can run them (this CI machine): a clear error, never a crash or a
// silent result. Where a GPU is usable the CUDA tests (check --device cuda) cover the calls.
TEST(Errors, GpuTensorsWithoutAUsableGpu) {
  const RuntimeInfo info = runtime_info();
  const bool built =
      std::find(info.backends.begin(), info.backends.end(), "cuda") != info.backends.end();
  if (built && !info.gpus.empty() && info.gpus.front().rfind("no ", 0) != 0) {
    GTEST_SKIP() << "a GPU is usable here: " << info.gpus.front();
  }
  Fixture f;
  for (TensorView* t : {&f.qv, &f.kv, &f.vv, &f.ov, &f.lv}) t->device = Device::kCUDA;
  try {
    f.run();
    ADD_FAILURE() << "no error for GPU tensors without a GPU";
  } catch (const Error& e) {
    const std::string what = e.what();
    if (built) {
      EXPECT_EQ(e.kind(), ErrorKind::kRuntime) << what;
      EXPECT_EQ(e.argument(), "q") << what;
      EXPECT_NE(what.find("not usable"), std::string::npos) << what;
    } else {
      EXPECT_EQ(e.kind(), ErrorKind::kUnsupported) << what;
      EXPECT_NE(what.find("LONGATTN_CUDA"), std::string::npos) << what;
    }
  }
  // Tensors on two different GPUs: named before any GPU is touched.
  Fixture mixed;
  for (TensorView* t : {&mixed.qv, &mixed.kv, &mixed.vv, &mixed.ov, &mixed.lv}) {
    t->device = Device::kCUDA;
  }
  mixed.kv.device_index = 1;
  try {
    mixed.run();
    ADD_FAILURE() << "no error for k on another GPU";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "k") << e.what();
    EXPECT_NE(std::string(e.what()).find("GPU 0 like q, got GPU 1"), std::string::npos) << e.what();
  }
  // Asking for the CUDA backend with host tensors names the option.
  Fixture g;
  g.opt.backend = Backend::kCUDA;
  EXPECT_THROW(g.run(), Error);
}
