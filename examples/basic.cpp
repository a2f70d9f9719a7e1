#include <cstdio>
#include <vector>

#include "longattn/longattn.hpp"

#ifdef LONGATTN_EXAMPLE_AS_FUNCTION
int example_main() {
#else
int main() {
#endif
  const int64_t B = 1, S = 256, Hq = 8, Hkv = 2, D = 64;
  std::vector<float> q(B * S * Hq * D, 0.5f), k(B * S * Hkv * D, 0.25f), v(B * S * Hkv * D, 1.0f);
  std::vector<float> out(q.size()), lse(B * Hq * S);
  using longattn::DType, longattn::TensorView;
  longattn::AttentionOptions opt;
  opt.causal = true;  // GQA (8 query heads on 2 KV heads), causal, with the log-sum-exp
  longattn::attention_forward(TensorView::contiguous(q.data(), DType::kF32, {B, S, Hq, D}),
                              TensorView::contiguous(k.data(), DType::kF32, {B, S, Hkv, D}),
                              TensorView::contiguous(v.data(), DType::kF32, {B, S, Hkv, D}),
                              TensorView::contiguous(out.data(), DType::kF32, {B, S, Hq, D}),
                              TensorView::contiguous(lse.data(), DType::kF32, {B, Hq, S}), opt);
  std::printf("out[0] = %.3f, lse[last] = %.3f\n", out[0],
              lse.back());  // 1.000, 1 + ln 256 = 6.545
  return 0;
}
