// SPDX-License-Identifier: Apache-2.0
// The float64 oracle: scalar loops, written to be obviously right, never optimized.
#pragma once

#include <cstdint>

#include "core/problem.hpp"

namespace longattn::detail::reference {

/// The element rule written straight from the documented formulas (no intervals, no tiles).
bool visible(const Problem& p, std::int64_t batch, std::int64_t head, std::int64_t i,
             std::int64_t j);

/// How intermediate values are rounded: none (exact float64) or to an input dtype, to measure
/// the error of a naive computation in that dtype (the tolerance rule of DESIGN.md §3).
struct Rounding {
  bool enabled = false;
  DType dtype = DType::kF32;
};

/// Forward into p.out / p.lse.
void forward(const Problem& p, Rounding rounding = {});
/// Backward into p.dq / p.dk / p.dv / p.dsink; recomputes the forward itself (p.out and p.lse
/// are not read). A (query, key) pair whose weight is exactly 0 (masked, or a logit of -inf)
/// contributes nothing to any gradient, whatever Inf/NaN its rows of Q, K, V or dO hold. With
/// rounding, P, dP and dS are rounded to the dtype as a naive computation in that dtype would.
void backward(const Problem& p, Rounding rounding = {});

}  // namespace longattn::detail::reference
