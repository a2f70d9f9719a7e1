// SPDX-License-Identifier: Apache-2.0
// The float64 oracle. Every formula here is the documented definition, evaluated per element.
#include "reference/reference.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/mask_rows.hpp"  // bigbird_random_blocks: the random draw is part of the definition

namespace longattn::detail::reference {
namespace {

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

bool option_rule(const Problem& p, std::int64_t qp, std::int64_t j) {
  const bool in_window = (p.window_left < 0 || j >= qp - p.window_left) &&
                         (p.window_right < 0 || j <= qp + p.window_right);
  const bool causal_ok = !p.causal || j <= qp;
  return causal_ok && (in_window || j < p.num_sinks);
}

bool pattern_rule(const Problem& p, const PatternSpec& pat, std::int64_t head, std::int64_t qp,
                  std::int64_t j, std::int64_t skv) {
  const std::int64_t w = pat.window;
  const DocTable& docs = p.docs;
  std::int64_t dq = -1;
  std::int64_t dk = -1;
  if (pattern_uses_documents(pat.kind)) {
    if (qp < 0 || qp >= skv) return false;
    dq = docs.doc_of[static_cast<std::size_t>(qp)];
    dk = docs.doc_of[static_cast<std::size_t>(j)];
  }
  const bool causal_doc = dq == dk && j <= qp;
  switch (pat.kind) {
    case Pattern::kFull:
      return true;
    case Pattern::kCausal:
      return j <= qp;
    case Pattern::kFullDocument:
      return dq == dk;
    case Pattern::kCausalDocument:
      return causal_doc;
    case Pattern::kSlidingWindow:
      return std::abs(qp - j) <= w;
    case Pattern::kSlidingWindowCausal:
      return j <= qp && qp - j <= w;
    case Pattern::kGlobalSlidingWindow:
      return std::abs(qp - j) <= w || qp < 2 * w || j < 2 * w;
    case Pattern::kShareQuestion:
      return causal_doc || (dk == 0 && dq != 0);
    case Pattern::kCausalBlockwise:
      return causal_doc || (dq == docs.last() && dk != docs.last());
    case Pattern::kPrefixLmCausal:
      return j <= qp || j <= pat.prefix;
    case Pattern::kPrefixLmDocument:
      return causal_doc || (dq == dk && j - docs.start[static_cast<std::size_t>(dk)] <= pat.prefix);
    case Pattern::kBlockCausalDocument:
      return dq == dk && j < (qp / pat.block + 1) * pat.block;
    case Pattern::kStrided:
      return j <= qp && ((qp - j) < pat.stride || (qp - j) % pat.stride == 0);
    case Pattern::kFixed:
      return j <= qp &&
             (j / pat.block == qp / pat.block || j % pat.block >= pat.block - pat.summary);
    case Pattern::kBigBird: {
      const std::int64_t qb = floor_div(qp, pat.block);
      const std::int64_t kb = j / pat.block;
      if (qb < pat.global_blocks || kb < pat.global_blocks) return true;
      if (std::abs(qb - kb) <= pat.window_blocks) return true;
      const std::int64_t nkb = (skv + pat.block - 1) / pat.block;
      const auto r = bigbird_random_blocks(pat.seed, head, qb, pat.random_blocks, nkb);
      return std::find(r.begin(), r.end(), kb) != r.end();
    }
    case Pattern::kDilatedSlidingWindow:
      return std::abs(qp - j) % pat.dilation == 0 && std::abs(qp - j) <= w * pat.dilation;
    case Pattern::kShard:
      return j <= qp && (qp - j <= w || j % pat.stride == pat.offset);
    case Pattern::kBlockSparse:
      return false;  // handled by the caller
  }
  return false;
}

double load(const Operand& op, std::int64_t b, std::int64_t t, std::int64_t h, std::int64_t d) {
  return load_as_float(op.data, op.dtype, op.offset(b, t, h) + d);
}

double round_to(double x, Rounding r) {
  if (!r.enabled || !std::isfinite(x)) return x;
  switch (r.dtype) {
    case DType::kBF16:
      return bf16_to_float(float_to_bf16(static_cast<float>(x)));
    case DType::kF16:
      return f16_to_float(float_to_f16(static_cast<float>(x)));
    default:
      return static_cast<float>(x);
  }
}

/// The post-scale logit x = scale*q.k (softcapped) of one visible pair.
double logit(const Problem& p, std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j,
             Rounding r) {
  const std::int64_t kvh = h / p.group();
  double dot = 0.0;
  for (std::int64_t d = 0; d < p.dim; ++d) dot += load(p.q, b, i, h, d) * load(p.k, b, j, kvh, d);
  double x = round_to(dot * p.scale, r);
  if (p.softcap > 0.0F) x = p.softcap * std::tanh(x / p.softcap);
  return x;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

/// Probabilities of row i: weights[j] for every key (0 where masked); sink probability and lse.
struct RowWeights {
  std::vector<double> logits;
  std::vector<double> weights;
  double sink_weight = 0.0;
  double lse = -std::numeric_limits<double>::infinity();
};

void row_weights(const Problem& p, std::int64_t b, std::int64_t h, std::int64_t i, Rounding r,
                 RowWeights& out) {
  const std::int64_t skv = p.seqs[static_cast<std::size_t>(b)].skv;
  out.logits.assign(static_cast<std::size_t>(skv), 0.0);
  out.weights.assign(static_cast<std::size_t>(skv), 0.0);
  out.sink_weight = 0.0;
  out.lse = -std::numeric_limits<double>::infinity();
  std::vector<std::int64_t> seen;
  for (std::int64_t j = 0; j < skv; ++j) {
    if (!visible(p, b, h, i, j)) continue;
    seen.push_back(j);
    out.logits[static_cast<std::size_t>(j)] = logit(p, b, h, i, j, r);
  }
  if (p.score == ScoreFn::kSigmoid) {
    for (auto j : seen) {
      const auto uj = static_cast<std::size_t>(j);
      out.weights[uj] = round_to(sigmoid(out.logits[uj] + p.sigmoid_bias), r);
    }
    return;
  }
  const bool has_sink = p.has_sink_logits();
  const double sink = has_sink ? p.sink_logits[static_cast<std::size_t>(h)] : 0.0;
  if (seen.empty() && !has_sink) return;
  double m = has_sink ? sink : -std::numeric_limits<double>::infinity();
  for (auto j : seen) m = std::max(m, out.logits[static_cast<std::size_t>(j)]);
  // A logit of -inf counts as masked: a row whose every visible logit is -inf sees nothing.
  if (!has_sink && std::all_of(seen.begin(), seen.end(), [&](std::int64_t j) {
        return out.logits[static_cast<std::size_t>(j)] == -std::numeric_limits<double>::infinity();
      })) {
    return;
  }
  double den = has_sink ? std::exp(sink - m) : 0.0;
  for (auto j : seen) den += std::exp(out.logits[static_cast<std::size_t>(j)] - m);
  for (auto j : seen) {
    const auto uj = static_cast<std::size_t>(j);
    out.weights[uj] = round_to(std::exp(out.logits[uj] - m) / den, r);
  }
  out.sink_weight = has_sink ? std::exp(sink - m) / den : 0.0;
  out.lse = m + std::log(den);
}

}  // namespace

bool visible(const Problem& p, std::int64_t batch, std::int64_t head, std::int64_t i,
             std::int64_t j) {
  const auto& seq = p.seqs[static_cast<std::size_t>(batch)];
  const std::int64_t qp = i + (seq.skv - seq.sq);
  const PatternSpec* pat = p.pattern_for_head(head);
  if (pat != nullptr && pat->kind == Pattern::kBlockSparse) {
    const BlockSparseLayout& l = *p.mask->layout;
    const std::int64_t lb = l.batches == 1 ? 0 : batch;
    const std::int64_t lh = l.heads == 1 ? 0 : head;
    const std::int64_t r = (lb * l.heads + lh) * l.q_blocks + i / l.block_q;
    for (std::int64_t e = l.row_offsets[static_cast<std::size_t>(r)];
         e < l.row_offsets[static_cast<std::size_t>(r + 1)]; ++e) {
      if (l.key_blocks[static_cast<std::size_t>(e)] != j / l.block_k) continue;
      const bool partial = !l.partial.empty() && l.partial[static_cast<std::size_t>(e)] != 0;
      return !partial || option_rule(p, qp, j);
    }
    return false;
  }
  if (!option_rule(p, qp, j)) return false;
  return pat == nullptr || pattern_rule(p, *pat, head, qp, j, seq.skv);
}

void forward(const Problem& p, Rounding rounding) {
  RowWeights w;
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const auto& seq = p.seqs[static_cast<std::size_t>(b)];
    for (std::int64_t h = 0; h < p.hq; ++h) {
      const std::int64_t kvh = h / p.group();
      for (std::int64_t i = 0; i < seq.sq; ++i) {
        row_weights(p, b, h, i, rounding, w);
        for (std::int64_t d = 0; d < p.dim; ++d) {
          double acc = 0.0;
          for (std::int64_t j = 0; j < seq.skv; ++j) {
            const double wj = w.weights[static_cast<std::size_t>(j)];
            if (wj != 0.0) acc += wj * load(p.v, b, j, kvh, d);
          }
          store_from_float(p.out.data, p.out.dtype, p.out.offset(b, i, h) + d,
                           static_cast<float>(round_to(acc, rounding)));
        }
        if (p.lse.present()) p.lse.at(b, h, i) = static_cast<float>(w.lse);
      }
    }
  }
}

void backward(const Problem& p, Rounding rounding) {
  RowWeights w;
  std::vector<double> dsink(static_cast<std::size_t>(p.hq), 0.0);
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const auto& seq = p.seqs[static_cast<std::size_t>(b)];
    const auto kv_elems = static_cast<std::size_t>(seq.skv * p.dim);
    for (std::int64_t kvh = 0; kvh < p.hkv; ++kvh) {
      std::vector<double> dk(kv_elems, 0.0);
      std::vector<double> dv(kv_elems, 0.0);
      for (std::int64_t h = kvh * p.group(); h < (kvh + 1) * p.group(); ++h) {
        for (std::int64_t i = 0; i < seq.sq; ++i) {
          row_weights(p, b, h, i, rounding, w);
          std::vector<double> dq(static_cast<std::size_t>(p.dim), 0.0);
          std::vector<double> dp(static_cast<std::size_t>(seq.skv), 0.0);
          double rowdot = 0.0;  // D_i = sum_j P_ij dP_ij
          for (std::int64_t j = 0; j < seq.skv; ++j) {
            // A pair of weight 0 (masked, or a logit of -inf) contributes nothing, even where
            // dO, K or V hold Inf/NaN: the forward's rule (its P.V skips zero weights) carried
            // through the chain rule, where dS = P * (...) is 0 for P = 0.
            const double pj = w.weights[static_cast<std::size_t>(j)];
            if (pj == 0.0) continue;
            double s = 0.0;
            for (std::int64_t d = 0; d < p.dim; ++d) {
              s += load(p.dout, b, i, h, d) * load(p.v, b, j, kvh, d);
            }
            dp[static_cast<std::size_t>(j)] = round_to(s, rounding);
            rowdot += pj * dp[static_cast<std::size_t>(j)];
          }
          if (p.score == ScoreFn::kSoftmax && p.has_sink_logits()) {
            dsink[static_cast<std::size_t>(h)] -= w.sink_weight * rowdot;
          }
          for (std::int64_t j = 0; j < seq.skv; ++j) {
            const auto uj = static_cast<std::size_t>(j);
            const double pj = w.weights[uj];
            if (pj == 0.0) continue;
            double dx =
                p.score == ScoreFn::kSoftmax ? pj * (dp[uj] - rowdot) : dp[uj] * pj * (1.0 - pj);
            if (p.softcap > 0.0F) {
              const double t = w.logits[uj] / p.softcap;
              dx *= 1.0 - t * t;
            }
            const double dr = round_to(dx * p.scale, rounding);
            for (std::int64_t d = 0; d < p.dim; ++d) {
              const auto ud = static_cast<std::size_t>(d);
              dq[ud] += dr * load(p.k, b, j, kvh, d);
              dk[uj * static_cast<std::size_t>(p.dim) + ud] += dr * load(p.q, b, i, h, d);
              dv[uj * static_cast<std::size_t>(p.dim) + ud] += pj * load(p.dout, b, i, h, d);
            }
          }
          for (std::int64_t d = 0; d < p.dim; ++d) {
            store_from_float(p.dq.data, p.dq.dtype, p.dq.offset(b, i, h) + d,
                             static_cast<float>(dq[static_cast<std::size_t>(d)]));
          }
        }
      }
      for (std::int64_t j = 0; j < seq.skv; ++j) {
        for (std::int64_t d = 0; d < p.dim; ++d) {
          const auto e = static_cast<std::size_t>(j * p.dim + d);
          store_from_float(p.dk.data, p.dk.dtype, p.dk.offset(b, j, kvh) + d,
                           static_cast<float>(dk[e]));
          store_from_float(p.dv.data, p.dv.dtype, p.dv.offset(b, j, kvh) + d,
                           static_cast<float>(dv[e]));
        }
      }
    }
  }
  if (p.dsink != nullptr) {
    for (std::int64_t h = 0; h < p.hq; ++h) {
      p.dsink[h * p.dsink_stride] = static_cast<float>(dsink[static_cast<std::size_t>(h)]);
    }
  }
}

}  // namespace longattn::detail::reference
