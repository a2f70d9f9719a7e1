// SPDX-License-Identifier: Apache-2.0
// Portable SIMD over GCC/Clang vector extensions. The same kernel source is compiled once per
// instruction set (AVX-512, AVX2+FMA, baseline) with different -m flags; W is the lane count.
#pragma once

#include <cstdint>
#include <cstring>
#include <utility>

namespace longattn::detail::cpu {

#if defined(__AVX512F__)
inline constexpr int W = 16;
#elif defined(__AVX2__)
inline constexpr int W = 8;
#else
inline constexpr int W = 4;
#endif

using vf = float __attribute__((vector_size(W * 4)));
using vi = std::int32_t __attribute__((vector_size(W * 4)));

inline vf load(const float* p) {
  vf r;
  std::memcpy(&r, p, sizeof r);
  return r;
}
inline void store(float* p, vf x) { std::memcpy(p, &x, sizeof x); }
// NOTE: not `vf{} + x`: 0.0f + x is not an identity (x = -0.0f), so that form costs an add.
inline vf splat(float x) {
  return [x]<std::size_t... I>(std::index_sequence<I...>) { return vf{((void)I, x)...}; }
  (std::make_index_sequence<W>{});
}
inline vf vmax(vf a, vf b) { return a > b ? a : b; }  // keeps a when b is NaN
inline float hmax(vf x) {
  float m = x[0];
  for (int i = 1; i < W; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

/// 2^x for x in float; exact 0 below 2^-127, NaN propagates. Relative error ~1e-7 (float rounding).
inline vf exp2v(vf x) {
  const vf lo = splat(-127.0F);
  const vf hi = splat(127.0F);
  x = x < lo ? lo : x;  // NaN compares false and passes through
  x = x > hi ? hi : x;
  const vf magic = splat(12582912.0F);  // 1.5 * 2^23: rounds to the nearest integer
  const vf n = (x + magic) - magic;
  const vf f = x - n;  // in [-0.5, 0.5]
  // Taylor series of 2^f = e^(f ln 2) to degree 7: truncation error < 6e-9 on [-0.5, 0.5].
  vf p = splat(1.525273380405984e-5F);
  p = p * f + splat(1.5403530393381606e-4F);
  p = p * f + splat(1.3333558146428443e-3F);
  p = p * f + splat(9.618129107628477e-3F);
  p = p * f + splat(5.550410866482158e-2F);
  p = p * f + splat(2.402265069591007e-1F);
  p = p * f + splat(6.931471805599453e-1F);
  p = p * f + splat(1.0F);
  const vi ni = __builtin_convertvector(n, vi);
  const vi bits = (ni + 127) << 23;
  vf scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

/// tanh(x) through exp2; absolute error ~1e-7.
inline vf tanhv(vf x) {
  const vf e = exp2v(x * splat(2.0F * 1.4426950408889634F));
  return splat(1.0F) - splat(2.0F) / (e + splat(1.0F));
}

/// The lane mask of bits [offset, offset + W) of a 64-bit word, as an all-ones/zero int vector.
inline vi lane_mask(std::uint64_t word, int offset) {
  vi lane_bit;
  for (int i = 0; i < W; ++i) lane_bit[i] = 1 << i;
  const auto part = static_cast<std::int32_t>((word >> offset) & ((std::uint64_t{1} << W) - 1));
  vi parts;
  for (int i = 0; i < W; ++i) parts[i] = part;
  return (parts & lane_bit) != 0;
}

}  // namespace longattn::detail::cpu
