// SPDX-License-Identifier: Apache-2.0
// 64-bit indexing: a batch stride beyond 2^31 elements. The tensor lives in a sparse mapping
// (MAP_NORESERVE), so only the pages of the view's own elements are ever touched.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "longattn/longattn.hpp"

namespace {

using namespace longattn;

TEST(LargeTensors, BatchStrideBeyond2To31Elements) {
  const std::int64_t B = 2, S = 70, H = 2, D = 32;
  const std::int64_t batch_stride = (std::int64_t{1} << 31) + 4096;  // elements
  const std::size_t bytes = static_cast<std::size_t>(B * batch_stride) * sizeof(float);
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) GTEST_SKIP() << "cannot map " << bytes << " bytes of address space";
  auto* base = static_cast<float*>(mem);
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> dist(-1.0F, 1.0F);
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t e = 0; e < S * H * D; ++e) base[b * batch_stride + e] = dist(rng);
  }
  // q = k = v = this strided view; outputs are small and dense.
  const auto view =
      TensorView::strided(base, DType::kF32, {B, S, H, D}, {batch_stride, H * D, D, 1});
  std::vector<float> out(static_cast<std::size_t>(B * S * H * D)), ref(out.size());
  std::vector<float> lse(static_cast<std::size_t>(B * H * S)), ref_lse(lse.size());
  AttentionOptions o;
  o.causal = true;
  attention_forward(view, view, view, TensorView::contiguous(out.data(), DType::kF32, {B, S, H, D}),
                    TensorView::contiguous(lse.data(), DType::kF32, {B, H, S}), o);
  o.backend = Backend::kReference;
  attention_forward(view, view, view, TensorView::contiguous(ref.data(), DType::kF32, {B, S, H, D}),
                    TensorView::contiguous(ref_lse.data(), DType::kF32, {B, H, S}), o);
  double err = 0.0;
  for (std::size_t i = 0; i < out.size(); ++i)
    err = std::max(err, static_cast<double>(std::abs(out[i] - ref[i])));
  EXPECT_LT(err, 1e-5);
  // The second batch entry really was read from beyond 2^31 elements: its output differs.
  EXPECT_NE(out[0], out[static_cast<std::size_t>(S * H * D)]);
  munmap(mem, bytes);
}

}  // namespace
