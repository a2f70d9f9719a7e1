// SPDX-License-Identifier: Apache-2.0
// The generic case driver: inputs with guard regions and poisoned gaps, backend vs oracle,
// NaN/Inf agreement, determinism. Tolerances are stated once, in tolerance_for().
#include "check/cases.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <sstream>
#include <utility>
#include <vector>

#include "check/device_mirror.hpp"
#include "core/problem.hpp"
#include "longattn/error.hpp"
#include "reference/reference.hpp"

namespace longattn::check {
namespace {

constexpr unsigned char kSentinel = 0xA5;
constexpr std::int64_t kGuardBytes = 256;

/// Host memory for one tensor view, with guard bytes before and after the span.
struct Buf {
  std::vector<unsigned char> mem;
  TensorView view;
  std::vector<std::int64_t> offsets;  // element offsets of the view, canonical order

  static Buf make(DType dtype, std::vector<std::int64_t> shape, std::vector<std::int64_t> strides) {
    Buf b;
    b.view.dtype = dtype;
    b.view.rank = static_cast<int>(shape.size());
    std::int64_t span = 1;
    bool empty = false;
    for (std::size_t i = 0; i < shape.size(); ++i) {
      b.view.shape[i] = shape[i];
      b.view.strides[i] = strides[i];
      span += (shape[i] - 1) * strides[i];
      empty |= shape[i] == 0;
    }
    if (empty) span = 0;
    const auto esize = static_cast<std::int64_t>(dtype_size(dtype));
    b.mem.assign(static_cast<std::size_t>(2 * kGuardBytes + span * esize), kSentinel);
    b.view.data = b.mem.data() + kGuardBytes;
    // Enumerate view offsets (rank <= 4).
    std::vector<std::int64_t> idx(shape.size(), 0);
    if (!empty) {
      while (true) {
        std::int64_t off = 0;
        for (std::size_t i = 0; i < shape.size(); ++i) off += idx[i] * strides[i];
        b.offsets.push_back(off);
        int d = static_cast<int>(shape.size()) - 1;
        while (d >= 0 && ++idx[static_cast<std::size_t>(d)] == shape[static_cast<std::size_t>(d)]) {
          idx[static_cast<std::size_t>(d)] = 0;
          --d;
        }
        if (d < 0) break;
      }
    }
    return b;
  }

  static Buf contiguous(DType dtype, std::vector<std::int64_t> shape) {
    std::vector<std::int64_t> strides(shape.size(), 1);
    for (int i = static_cast<int>(shape.size()) - 2; i >= 0; --i) {
      strides[static_cast<std::size_t>(i)] =
          strides[static_cast<std::size_t>(i) + 1] *
          std::max<std::int64_t>(shape[static_cast<std::size_t>(i) + 1], 1);
    }
    return make(dtype, std::move(shape), std::move(strides));
  }

  [[nodiscard]] std::int64_t span_elems() const {
    return (static_cast<std::int64_t>(mem.size()) - 2 * kGuardBytes) /
           static_cast<std::int64_t>(dtype_size(view.dtype));
  }

  /// Random values in [-1, 1] in the view; NaN in the gaps (reading them poisons the result).
  void fill_random(std::mt19937_64& rng) {
    std::uniform_real_distribution<float> dist(-1.0F, 1.0F);
    for (std::int64_t e = 0; e < span_elems(); ++e) {
      detail::store_from_float(view.data, view.dtype, e, std::numeric_limits<float>::quiet_NaN());
    }
    for (auto off : offsets) detail::store_from_float(view.data, view.dtype, off, dist(rng));
  }

  void fill_sentinel() { std::fill(mem.begin(), mem.end(), kSentinel); }

  [[nodiscard]] double at(std::size_t i) const {
    return detail::load_as_float(view.data, view.dtype, offsets[i]);
  }
  void set(std::size_t i, float value) {
    detail::store_from_float(view.data, view.dtype, offsets[i], value);
  }

  /// True when every byte outside the view's elements still holds the sentinel.
  [[nodiscard]] bool untouched_outside_view() const {
    std::vector<unsigned char> inside(mem.size(), 0);
    const auto esize = static_cast<std::int64_t>(dtype_size(view.dtype));
    for (auto off : offsets) {
      for (std::int64_t k = 0; k < esize; ++k)
        inside[static_cast<std::size_t>(kGuardBytes + off * esize + k)] = 1;
    }
    for (std::size_t i = 0; i < mem.size(); ++i) {
      if (inside[i] == 0 && mem[i] != kSentinel) return false;
    }
    return true;
  }
};

struct Tolerance {
  double rel_l2;
  double abs_scale;  // max_abs bound = abs_scale * max|ref| (+ naive-dtype term)
};

Tolerance tolerance_for(DType dtype) {
  if (dtype == DType::kF32) return {1e-5, 2e-5};
  return {1e-2, 0.0};
}

/// Operand views of one case.
DeviceMirror mirror(const Buf& b) { return {b.mem.data(), b.mem.size(), b.view}; }

struct Tensors {
  Buf q, k, v, out, lse, dout, dq, dk, dv, dsink, sink_logits;
  std::vector<std::int32_t> cu_q, cu_k;
  TensorView cu_q_view, cu_k_view;
};

/// Shape and strides of a q-like (is_kv false) or kv-like operand under the case's layout.
Buf make_operand_buf(const Case& c, DType dtype, bool is_kv) {
  const std::int64_t h = is_kv ? c.hkv : c.hq;
  const std::int64_t s = is_kv ? c.skv : c.sq;
  const std::int64_t d = c.dim;
  switch (c.layout) {
    case Layout::kContiguous:
      return Buf::contiguous(dtype, {c.batch, s, h, d});
    case Layout::kHeadMajor:
      return Buf::make(dtype, {c.batch, s, h, d}, {h * s * d, d, s * d, 1});
    case Layout::kKvCache: {
      if (!is_kv) return Buf::contiguous(dtype, {c.batch, s, h, d});
      const std::int64_t cache = s + 37;
      return Buf::make(dtype, {c.batch, s, h, d}, {cache * h * d, h * d, d, 1});
    }
    case Layout::kVarlen: {
      std::int64_t total = 0;
      for (auto n : (is_kv ? c.seqlens_k : c.seqlens_q)) total += n;
      // Padded token stride: rows are not dense.
      return Buf::make(dtype, {total, h, d}, {h * d + 16, d, 1});
    }
  }
  return Buf::contiguous(dtype, {0});
}

AttentionOptions options_for(const Case& c, Tensors& t, Backend backend) {
  AttentionOptions o;
  o.scale = c.scale;
  o.causal = c.causal;
  o.window_left = c.window_left;
  o.window_right = c.window_right;
  o.num_sinks = c.num_sinks;
  o.softcap = c.softcap;
  o.score = c.score;
  o.sigmoid_bias = c.sigmoid_bias;
  o.mask = c.mask ? &*c.mask : nullptr;
  o.backend = backend;
  if (c.sink_logits) o.sink_logits = t.sink_logits.view;
  if (c.layout == Layout::kVarlen) {
    o.cu_seqlens_q = t.cu_q_view;
    o.cu_seqlens_k = t.cu_k_view;
  }
  return o;
}

/// `any_nonfinite`: where the oracle is Inf or NaN, any Inf or NaN matches (gradients: the
/// backward's D_i = dO_i . O_i and the oracle's sum_j P_ij dP_ij agree for finite values only,
/// so an Inf in dO can come out as Inf on one side and NaN on the other).
Metric compare(const std::string& name, const Buf& got, const Buf& ref, double bound,
               double rel_l2_limit, bool any_nonfinite = false) {
  Metric m;
  m.name = name;
  m.bound = bound;
  double num = 0.0;
  double den = 0.0;
  for (std::size_t i = 0; i < got.offsets.size(); ++i) {
    const double x = got.at(i);
    const double r = ref.at(i);
    if (!std::isfinite(r) || !std::isfinite(x)) {
      const bool same = any_nonfinite
                            ? !std::isfinite(r) && !std::isfinite(x)
                            : (std::isnan(r) && std::isnan(x)) || (std::isinf(r) && x == r);
      m.nonfinite_ok &= same;
      continue;
    }
    const double e = std::abs(x - r);
    m.max_abs = std::max(m.max_abs, e);
    num += e * e;
    den += r * r;
  }
  m.rel_l2 = den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
  m.passed = m.nonfinite_ok && m.rel_l2 <= rel_l2_limit && (bound <= 0.0 || m.max_abs <= bound);
  return m;
}

double max_abs_of(const Buf& b) {
  double m = 0.0;
  for (std::size_t i = 0; i < b.offsets.size(); ++i) {
    const double x = b.at(i);
    if (std::isfinite(x)) m = std::max(m, std::abs(x));
  }
  return m;
}

/// Half an ulp of dtype at max |ref|: the most that merely storing a result of that size in
/// dtype can cost. (Not the rounding the reference values happen to have: with few values that
/// can be far below half an ulp by chance, and a result one fp32 hair off then rounds to the
/// other neighbour and fails a bound it meets in every other draw.)
double storage_error(const Buf& ref, DType dtype) {
  const double largest = max_abs_of(ref);
  if (largest == 0.0) return 0.0;
  int exponent = 0;
  std::frexp(largest, &exponent);  // largest = f * 2^exponent, f in [0.5, 1)
  const int mantissa_bits = dtype == DType::kBF16 ? 7 : 10;
  const double ulp =
      std::ldexp(1.0, std::max(exponent - 1, dtype == DType::kBF16 ? -126 : -14) - mantissa_bits);
  return ulp / 2.0;
}

bool same_bytes(const Buf& a, const Buf& b) { return a.mem == b.mem; }

}  // namespace

double CaseResult::worst_rel_l2() const {
  double w = 0.0;
  for (const auto& m : metrics) w = std::max(w, m.rel_l2);
  return w;
}

double CaseResult::worst_max_abs() const {
  double w = 0.0;
  for (const auto& m : metrics) w = std::max(w, m.max_abs);
  return w;
}

std::string shape_string(const Case& c) {
  std::ostringstream os;
  os << "B=" << c.batch << " Hq=" << c.hq << " Hkv=" << c.hkv;
  if (c.layout == Layout::kVarlen) {
    os << " varlen(" << c.seqlens_q.size() << ")";
  } else {
    os << " Sq=" << c.sq << " Skv=" << c.skv;
  }
  os << " D=" << c.dim;
  return os.str();
}

std::string mask_string(const Case& c) {
  std::string s;
  if (c.mask) {
    s = pattern_name(c.mask->heads[0].kind);
    if (c.mask->heads.size() > 1) s += "/per-head";
  }
  if (c.causal) s += s.empty() ? "causal" : "+causal";
  if (c.window_left >= 0 || c.window_right >= 0) {
    if (!s.empty()) s += "+";
    s += "window(" + std::to_string(c.window_left) + "," + std::to_string(c.window_right) + ")";
  }
  return s.empty() ? "-" : s;
}

CaseResult run_case(const Case& c, Backend backend, std::uint64_t seed) {
  CaseResult res;
  if (seed == 0) {
    if (const char* env = std::getenv("LONGATTN_SEED"); env != nullptr) {
      seed = std::strtoull(env, nullptr, 10);
    } else {
      seed = std::random_device{}() | (static_cast<std::uint64_t>(std::random_device{}()) << 32);
    }
  }
  res.seed = seed;
  std::mt19937_64 rng(seed);
  const bool varlen = c.layout == Layout::kVarlen;
  std::int64_t total_q = 0;
  Tensors t;
  t.q = make_operand_buf(c, c.dtype, false);
  t.k = make_operand_buf(c, c.dtype, true);
  t.v = make_operand_buf(c, c.dtype, true);
  t.out = make_operand_buf(c, c.dtype, false);
  if (varlen) {
    t.cu_q.push_back(0);
    t.cu_k.push_back(0);
    for (std::size_t b = 0; b < c.seqlens_q.size(); ++b) {
      t.cu_q.push_back(t.cu_q.back() + static_cast<std::int32_t>(c.seqlens_q[b]));
      t.cu_k.push_back(t.cu_k.back() + static_cast<std::int32_t>(c.seqlens_k[b]));
    }
    total_q = t.cu_q.back();
    t.cu_q_view = TensorView::contiguous(t.cu_q.data(), DType::kI32,
                                         {static_cast<std::int64_t>(t.cu_q.size())});
    t.cu_k_view = TensorView::contiguous(t.cu_k.data(), DType::kI32,
                                         {static_cast<std::int64_t>(t.cu_k.size())});
  }
  const bool softmax = c.score == ScoreFn::kSoftmax;
  auto make_lse = [&]() {
    return varlen ? Buf::contiguous(DType::kF32, {c.hq, total_q})
                  : Buf::contiguous(DType::kF32, {c.batch, c.hq, c.sq});
  };
  t.lse = make_lse();
  t.q.fill_random(rng);
  t.k.fill_random(rng);
  t.v.fill_random(rng);
  if (c.sink_logits) {
    t.sink_logits = Buf::contiguous(DType::kF32, {c.hq});
    t.sink_logits.fill_random(rng);
  }
  if (c.nonfinite && !t.q.offsets.empty() && !t.k.offsets.empty()) {
    std::uniform_int_distribution<std::size_t> pick_q(0, t.q.offsets.size() - 1);
    std::uniform_int_distribution<std::size_t> pick_k(0, t.k.offsets.size() - 1);
    t.q.set(pick_q(rng), std::numeric_limits<float>::quiet_NaN());
    // V's NaN at the element of K's +Inf: the rows whose query is negative in that column score
    // -Inf there, a zero weight against a NaN even in a tile no mask touches.
    const std::size_t k_inf = pick_k(rng);
    t.k.set(k_inf, std::numeric_limits<float>::infinity());
    t.v.set(k_inf, std::numeric_limits<float>::quiet_NaN());
    t.v.set(pick_k(rng), -std::numeric_limits<float>::infinity());
  }
  const TensorView no_view{};
  AttentionOptions opts = options_for(c, t, backend);
  // A GPU run sees device copies of whole buffers (guards and NaN-poisoned gaps included) and
  // its outputs are copied back over the host buffers, so every check below applies unchanged.
  const bool on_gpu = backend == Backend::kCUDA;
  auto gpu_options = [&](std::vector<DeviceMirror>& keep) {
    AttentionOptions g = opts;
    if (c.sink_logits) g.sink_logits = keep.emplace_back(mirror(t.sink_logits)).view();
    if (varlen) {
      g.cu_seqlens_q = keep.emplace_back(t.cu_q.data(), t.cu_q.size() * 4, t.cu_q_view).view();
      g.cu_seqlens_k = keep.emplace_back(t.cu_k.data(), t.cu_k.size() * 4, t.cu_k_view).view();
    }
    return g;
  };
  auto forward_into = [&](Buf& out, Buf& lse) {
    if (!on_gpu) {
      attention_forward(t.q.view, t.k.view, t.v.view, out.view, softmax ? lse.view : no_view, opts);
      return;
    }
    std::vector<DeviceMirror> keep;
    keep.reserve(4);
    const AttentionOptions g = gpu_options(keep);
    const DeviceMirror q = mirror(t.q), k = mirror(t.k), v = mirror(t.v), o = mirror(out),
                       l = mirror(lse);
    attention_forward(q.view(), k.view(), v.view(), o.view(), softmax ? l.view() : no_view, g);
    o.copy_back(out.mem.data());
    if (softmax) l.copy_back(lse.mem.data());
  };
  // `deterministic`: options.deterministic of the run (the CUDA backward's two dQ modes).
  auto backward_into = [&](Tensors& o, bool deterministic) {
    const TensorView& dsink_view = c.sink_logits ? o.dsink.view : no_view;
    if (!on_gpu) {
      AttentionOptions h = opts;
      h.deterministic = deterministic;
      attention_backward(t.q.view, t.k.view, t.v.view, t.out.view, softmax ? t.lse.view : no_view,
                         t.dout.view, o.dq.view, o.dk.view, o.dv.view, dsink_view, h);
      return;
    }
    std::vector<DeviceMirror> keep;
    keep.reserve(4);
    AttentionOptions g = gpu_options(keep);
    g.deterministic = deterministic;
    const DeviceMirror q = mirror(t.q), k = mirror(t.k), v = mirror(t.v), out = mirror(t.out),
                       lse = mirror(t.lse), dout = mirror(t.dout);
    const DeviceMirror dq = mirror(o.dq), dk = mirror(o.dk), dv = mirror(o.dv),
                       dsink = mirror(o.dsink);
    attention_backward(q.view(), k.view(), v.view(), out.view(), softmax ? lse.view() : no_view,
                       dout.view(), dq.view(), dk.view(), dv.view(),
                       c.sink_logits ? dsink.view() : no_view, g);
    dq.copy_back(o.dq.mem.data());
    dk.copy_back(o.dk.mem.data());
    dv.copy_back(o.dv.mem.data());
    if (c.sink_logits) dsink.copy_back(o.dsink.mem.data());
  };
  try {
    // ---- forward on the backend (twice: determinism) ----
    t.out.fill_sentinel();
    t.lse.fill_sentinel();
    const auto t0 = std::chrono::steady_clock::now();
    forward_into(t.out, t.lse);
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    res.guards_ok &= t.out.untouched_outside_view() && t.lse.untouched_outside_view();
    {
      Buf out2 = make_operand_buf(c, c.dtype, false);
      Buf lse2 = make_lse();
      forward_into(out2, lse2);
      res.deterministic &= same_bytes(out2, t.out) && (!softmax || same_bytes(lse2, t.lse));
    }

    // ---- forward on the oracle, in fp32 buffers of the same geometry ----
    Buf ref_out = make_operand_buf(c, DType::kF32, false);
    Buf ref_lse = make_lse();
    Buf naive_out = make_operand_buf(c, DType::kF32, false);
    {
      AttentionOptions ro = opts;
      ro.backend = Backend::kReference;
      detail::Problem p = detail::make_forward_problem(t.q.view, t.k.view, t.v.view, t.out.view,
                                                       softmax ? ref_lse.view : no_view, ro);
      std::vector<std::int64_t> cu(t.cu_q.begin(), t.cu_q.end());
      p.out = detail::make_operand(ref_out.view, varlen, cu, p.batch);
      detail::reference::forward(p);
      if (c.dtype != DType::kF32 && !c.backward) {
        p.out = detail::make_operand(naive_out.view, varlen, cu, p.batch);
        p.lse = {};
        detail::reference::forward(p, {true, c.dtype});
      }
    }
    const Tolerance tol = tolerance_for(c.dtype);
    if (!c.backward) {
      double bound = tol.abs_scale * std::max(1.0, max_abs_of(ref_out));
      if (c.dtype != DType::kF32) {
        Metric naive = compare("naive", naive_out, ref_out, 0.0, 1e300);
        bound = 2.0 * std::max(naive.max_abs, storage_error(ref_out, c.dtype)) + 1e-6;
      }
      res.metrics.push_back(compare("out", t.out, ref_out, bound, tol.rel_l2));
      if (softmax)
        res.metrics.push_back(
            compare("lse", t.lse, ref_lse, 1e-4 * std::max(1.0, max_abs_of(ref_lse)), 1e-5));
    } else {
      // ---- backward: the default mode, then deterministic mode (twice) vs oracle ----
      // On the CPU both modes are the same deterministic engine: its two runs must agree.
      t.dout = make_operand_buf(c, c.dtype, false);
      t.dout.fill_random(rng);
      if (c.nonfinite && !t.dout.offsets.empty()) {
        std::uniform_int_distribution<std::size_t> pick(0, t.dout.offsets.size() - 1);
        t.dout.set(pick(rng), std::numeric_limits<float>::quiet_NaN());
        t.dout.set(pick(rng), std::numeric_limits<float>::infinity());
      }
      auto make_grads = [&](Tensors& o) {
        o.dq = make_operand_buf(c, c.dtype, false);
        o.dk = make_operand_buf(c, c.dtype, true);
        o.dv = make_operand_buf(c, c.dtype, true);
        if (c.sink_logits) o.dsink = Buf::contiguous(DType::kF32, {c.hq});
      };
      auto run_bwd = [&](Tensors& o, bool deterministic) {
        o.dq.fill_sentinel();
        o.dk.fill_sentinel();
        o.dv.fill_sentinel();
        o.dsink.fill_sentinel();
        backward_into(o, deterministic);
        res.guards_ok &= o.dq.untouched_outside_view() && o.dk.untouched_outside_view() &&
                         o.dv.untouched_outside_view();
      };
      auto same_grads = [](const Tensors& a, const Tensors& b) {
        return same_bytes(a.dq, b.dq) && same_bytes(a.dk, b.dk) && same_bytes(a.dv, b.dv) &&
               same_bytes(a.dsink, b.dsink);
      };
      make_grads(t);
      run_bwd(t, false);
      Tensors det;
      make_grads(det);
      run_bwd(det, true);
      if (on_gpu) {
        Tensors again;
        make_grads(again);
        run_bwd(again, true);
        res.deterministic &= same_grads(again, det);
      } else {
        res.deterministic &= same_grads(det, t);
      }
      Buf rdq = make_operand_buf(c, DType::kF32, false);
      Buf rdk = make_operand_buf(c, DType::kF32, true);
      Buf rdv = make_operand_buf(c, DType::kF32, true);
      Buf rdsink = Buf::contiguous(DType::kF32, {c.hq});
      // The same backward done naively in the input dtype (bf16/fp16 only): the error bound.
      Buf ndq = make_operand_buf(c, DType::kF32, false);
      Buf ndk = make_operand_buf(c, DType::kF32, true);
      Buf ndv = make_operand_buf(c, DType::kF32, true);
      {
        AttentionOptions ro = opts;
        ro.backend = Backend::kReference;
        detail::Problem p = detail::make_backward_problem(
            t.q.view, t.k.view, t.v.view, t.out.view, softmax ? t.lse.view : no_view, t.dout.view,
            t.dq.view, t.dk.view, t.dv.view, c.sink_logits ? t.dsink.view : no_view, ro);
        std::vector<std::int64_t> cq(t.cu_q.begin(), t.cu_q.end());
        std::vector<std::int64_t> ck(t.cu_k.begin(), t.cu_k.end());
        p.dq = detail::make_operand(rdq.view, varlen, cq, p.batch);
        p.dk = detail::make_operand(rdk.view, varlen, ck, p.batch);
        p.dv = detail::make_operand(rdv.view, varlen, ck, p.batch);
        p.dsink = c.sink_logits ? static_cast<float*>(rdsink.view.data) : nullptr;
        detail::reference::backward(p);
        if (c.dtype != DType::kF32) {
          p.dq = detail::make_operand(ndq.view, varlen, cq, p.batch);
          p.dk = detail::make_operand(ndk.view, varlen, ck, p.batch);
          p.dv = detail::make_operand(ndv.view, varlen, ck, p.batch);
          p.dsink = nullptr;
          detail::reference::backward(p, {true, c.dtype});
        }
      }
      // `headroom` x the naive same-dtype backward's error. dQ gets 3x (FA2's tests allow 2-3x):
      // it sums dS K over a whole row of keys in another order than the naive loop, and 2x
      // failed once (fp16 varlen causal, 2.23x); planted dQ bugs err by more than 100x.
      auto grad_metric = [&](const char* name, const Buf& got, const Buf& ref, const Buf& naive,
                             double headroom) {
        double bound = tol.abs_scale * std::max(1.0, max_abs_of(ref));
        if (c.dtype != DType::kF32) {
          const double naive_err = compare("naive", naive, ref, 0.0, 1e300).max_abs;
          bound = headroom * std::max(naive_err, storage_error(ref, c.dtype)) + 1e-6;
        }
        res.metrics.push_back(compare(name, got, ref, bound, tol.rel_l2, true));
      };
      auto check_grads = [&](const Tensors& got, const std::string& suffix) {
        grad_metric(("dq" + suffix).c_str(), got.dq, rdq, ndq, 3.0);
        grad_metric(("dk" + suffix).c_str(), got.dk, rdk, ndk, 2.0);
        grad_metric(("dv" + suffix).c_str(), got.dv, rdv, ndv, 2.0);
        if (c.sink_logits) {
          res.metrics.push_back(compare("dsink" + suffix, got.dsink, rdsink, 0.0,
                                        // Sums P_sink * (dO . O) over rows: terms of both signs,
                                        // each carrying the rounding of O to bf16/fp16.
                                        c.dtype == DType::kF32 ? 1e-4 : 5e-2));
        }
      };
      check_grads(t, "");
      if (on_gpu) check_grads(det, "(det)");
    }
  } catch (const std::exception& e) {
    res.error = e.what();
    res.passed = false;
    return res;
  }
  res.passed = res.guards_ok && res.deterministic;
  for (const auto& m : res.metrics) res.passed &= m.passed;
  return res;
}

double case_flops(const Case& c) {
  // Area over all (batch, head) pairs, from the oracle's element rule on a validated problem.
  std::vector<std::int32_t> cq{0};
  std::vector<std::int32_t> ck{0};
  AttentionOptions o;
  o.causal = c.causal;
  o.window_left = c.window_left;
  o.window_right = c.window_right;
  o.num_sinks = c.num_sinks;
  o.mask = c.mask ? &*c.mask : nullptr;
  double area = 0.0;
  const std::int64_t batches =
      c.layout == Layout::kVarlen ? static_cast<std::int64_t>(c.seqlens_q.size()) : c.batch;
  for (std::int64_t b = 0; b < batches; ++b) {
    const std::int64_t sq =
        c.layout == Layout::kVarlen ? c.seqlens_q[static_cast<std::size_t>(b)] : c.sq;
    const std::int64_t skv =
        c.layout == Layout::kVarlen ? c.seqlens_k[static_cast<std::size_t>(b)] : c.skv;
    TensorView q = TensorView::contiguous(nullptr, DType::kF32, {1, sq, c.hq, 0});
    TensorView k = TensorView::contiguous(nullptr, DType::kF32, {1, skv, c.hkv, 0});
    const detail::Problem p = detail::make_forward_problem(q, k, k, q, {}, o);
    for (std::int64_t h = 0; h < c.hq; ++h) {
      for (std::int64_t i = 0; i < sq; ++i) {
        for (std::int64_t j = 0; j < skv; ++j)
          area += detail::reference::visible(p, 0, h, i, j) ? 1.0 : 0.0;
      }
    }
  }
  const double fwd = 4.0 * area * static_cast<double>(c.dim);
  return c.backward ? 2.5 * fwd : fwd;
}

PatternSpec scaled_pattern(Pattern kind, std::int64_t s, std::int64_t window) {
  PatternSpec p;
  p.kind = kind;
  p.window = window >= 0 ? window : std::max<std::int64_t>(1, s / 16);
  p.block = std::max<std::int64_t>(1, s / 8);
  p.prefix = s / 8;
  p.stride =
      std::max<std::int64_t>(2, static_cast<std::int64_t>(std::sqrt(static_cast<double>(s))));
  p.summary = std::max<std::int64_t>(1, p.block / 8);
  p.dilation = 2;
  p.offset = 1 % p.stride;
  if (kind == Pattern::kBigBird) {
    p.block = std::max<std::int64_t>(1, s / 16);
    p.global_blocks = 1;
    p.window_blocks = 1;
    p.random_blocks = 2;
    p.seed = 7;
  }
  if (kind == Pattern::kDilatedSlidingWindow) p.window = std::max<std::int64_t>(1, s / 32);
  return p;
}

std::vector<std::int64_t> scaled_documents(std::int64_t s, std::uint64_t seed) {
  if (s <= 0) return {};
  return random_documents(s, std::max<std::int64_t>(1, s / 64), std::max<std::int64_t>(1, s / 4),
                          seed);
}

std::vector<Case> default_cases(bool quick) {
  std::vector<Case> cases;
  auto add = [&](Case c) { cases.push_back(std::move(c)); };
  auto both = [&](Case c) {
    add(c);
    c.backward = true;
    add(c);
  };

  // 1. Every pattern, self-attention and cross-attention, forward and backward.
  for (Pattern pat : all_patterns()) {
    for (const auto& [sq, skv] : {std::pair<std::int64_t, std::int64_t>{200, 200}, {130, 257}}) {
      if (quick && sq != skv) continue;
      Case c;
      c.variant = "pattern";
      c.batch = 1;
      c.hq = 4;
      c.hkv = 2;
      c.sq = sq;
      c.skv = skv;
      c.dim = 64;
      c.mask = MaskSpec::of(scaled_pattern(pat, skv, skv / 10));
      if (pattern_uses_documents(pat)) c.mask->doc_lens = scaled_documents(skv);
      both(c);
    }
  }
  // 2. Options on their own and combined, with awkward lengths.
  struct Opt {
    const char* name;
    void (*apply)(Case&);
  };
  const Opt opts[] = {
      {"plain", [](Case&) {}},
      {"causal", [](Case& c) { c.causal = true; }},
      {"window",
       [](Case& c) {
         c.window_left = 17;
         c.window_right = 5;
       }},
      {"sinks+window",
       [](Case& c) {
         c.causal = true;
         c.window_left = 23;
         c.window_right = 0;
         c.num_sinks = 4;
       }},
      {"sink_logits",
       [](Case& c) {
         c.sink_logits = true;
         c.causal = true;
       }},
      {"softcap",
       [](Case& c) {
         c.softcap = 5.0F;
         c.scale = 0.5F;
       }},
      {"sigmoid",
       [](Case& c) {
         c.score = ScoreFn::kSigmoid;
         c.sigmoid_bias = -2.0F;
         c.causal = true;
       }},
      {"sigmoid+softcap",
       [](Case& c) {
         c.score = ScoreFn::kSigmoid;
         c.softcap = 3.0F;
       }},
  };
  const std::int64_t shapes[][6] = {
      // B, Hq, Hkv, Sq, Skv, D
      {2, 4, 4, 113, 113, 64}, {1, 8, 2, 1, 77, 128}, {1, 8, 1, 70, 300, 32},
      {2, 2, 1, 130, 65, 80},  {1, 2, 2, 64, 64, 96}, {1, 2, 1, 33, 100, 256},
  };
  for (const auto& o : opts) {
    int n = 0;
    for (const auto& s : shapes) {
      if (quick && n++ > 1) break;
      Case c;
      c.variant = o.name;
      c.batch = s[0];
      c.hq = s[1];
      c.hkv = s[2];
      c.sq = s[3];
      c.skv = s[4];
      c.dim = s[5];
      o.apply(c);
      both(c);
    }
  }
  // 3. Head dims.
  for (std::int64_t d : {16, 32, 64, 80, 96, 128, 192, 256}) {
    if (quick && d != 32 && d != 128) continue;
    Case c;
    c.variant = "head_dim";
    c.hq = 2;
    c.hkv = 1;
    c.sq = 97;
    c.skv = 150;
    c.dim = d;
    c.causal = true;
    both(c);
  }
  // 4. Layouts: head-major strided views, KV cache views, varlen.
  for (Layout layout : {Layout::kHeadMajor, Layout::kKvCache, Layout::kVarlen}) {
    for (bool causal : {false, true}) {
      Case c;
      c.variant = layout == Layout::kHeadMajor ? "strided"
                  : layout == Layout::kKvCache ? "kv_cache"
                                               : "varlen";
      c.layout = layout;
      c.batch = 3;
      c.hq = 4;
      c.hkv = 1;
      c.sq = 70;
      c.skv = 129;
      c.dim = 64;
      c.causal = causal;
      if (layout == Layout::kVarlen) {
        c.seqlens_q = {70, 0, 1, 129, 64};
        c.seqlens_k = {70, 5, 0, 200, 64};
        c.batch = 5;
      }
      both(c);
    }
  }
  // 5. dtypes on a few configurations.
  for (DType dt : {DType::kBF16, DType::kF16}) {
    for (int variant = 0; variant < (quick ? 2 : 12); ++variant) {
      Case c;
      c.dtype = dt;
      c.batch = 1;
      c.hq = 4;
      c.hkv = 2;
      c.sq = 150;
      c.skv = 150;
      c.dim = 128;
      if (variant == 0) {  // more keys than one item's first tiles: 4 tiles of 128, 7 of 64
        c.variant = "dtype";
        c.skv = 400;
      }
      if (variant == 1) {
        c.variant = "dtype+causal";
        c.causal = true;
      }
      if (variant == 2) {
        c.variant = "dtype+softcap+sinks";
        c.softcap = 10.0F;
        c.sink_logits = true;
      }
      if (variant == 3) {
        c.variant = "dtype+doc";
        c.mask = MaskSpec::with_documents(scaled_pattern(Pattern::kCausalDocument, 150),
                                          scaled_documents(150));
      }
      if (variant == 4) {
        c.variant = "dtype+varlen";
        c.layout = Layout::kVarlen;
        c.seqlens_q = {50, 100};
        c.seqlens_k = {80, 100};
        c.batch = 2;
        c.causal = true;
      }
      if (variant == 5) {  // head dim not a multiple of 32: the non-AMX paths
        c.variant = "dtype+d80";
        c.dim = 80;
        c.window_left = 40;
      }
      if (variant == 6) {
        c.variant = "dtype+d256+window";
        c.dim = 256;
        c.sq = 70;
        c.window_left = 30;
        c.window_right = 10;
      }
      if (variant == 7) {
        c.variant = "dtype+decode";
        c.dim = 64;
        c.sq = 1;
        c.skv = 333;
      }
      if (variant == 9) {  // GQA 4, cross lengths, PARTIAL tiles of a causal window
        c.variant = "dtype+gqa4+window";
        c.dim = 64;
        c.hq = 8;
        c.sq = 200;
        c.skv = 333;
        c.causal = true;
        c.window_left = 70;
      }
      if (variant == 10) {
        c.variant = "dtype+sigmoid";
        c.score = ScoreFn::kSigmoid;
        c.sigmoid_bias = -2.0F;
        c.sq = 190;
        c.skv = 190;
      }
      if (variant == 11) {  // sparse PARTIAL tiles everywhere
        c.variant = "dtype+bigbird";
        c.dim = 64;
        c.sq = 260;
        c.skv = 260;
        c.mask = MaskSpec::of(scaled_pattern(Pattern::kBigBird, 260, 26));
      }
      if (variant == 8) {
        c.variant = "dtype+nan/inf";
        c.nonfinite = true;
        c.causal = true;
        c.skv = 130;
      }
      both(c);
    }
  }
  // 6. Caller block-sparse layout (full and partial blocks) and per-head shards.
  {
    auto layout = std::make_shared<BlockSparseLayout>();
    layout->block_q = 32;
    layout->block_k = 48;
    layout->heads = 4;
    layout->q_blocks = (150 + 31) / 32;
    layout->row_offsets.push_back(0);
    std::mt19937 g(5);
    for (std::int64_t h = 0; h < 4; ++h) {
      for (std::int64_t qb = 0; qb < layout->q_blocks; ++qb) {
        for (std::int32_t kb = 0; kb < (150 + 47) / 48; ++kb) {
          if (g() % 3 == 0) continue;
          layout->key_blocks.push_back(kb);
          layout->partial.push_back(static_cast<std::uint8_t>(g() % 2));
        }
        layout->row_offsets.push_back(static_cast<std::int64_t>(layout->key_blocks.size()));
      }
    }
    Case c;
    c.variant = "block_sparse+causal";
    c.hq = 4;
    c.hkv = 2;
    c.sq = 150;
    c.skv = 150;
    c.causal = true;
    c.mask = MaskSpec::block_sparse(layout);
    both(c);
    Case s;
    s.variant = "shards";
    s.hq = 4;
    s.hkv = 4;
    s.sq = 180;
    s.skv = 180;
    s.mask = MaskSpec::strided_shards(4, 3, 20);
    both(s);
  }
  // 7. Empty and degenerate sizes.
  for (const auto& z : {std::array<std::int64_t, 5>{0, 2, 2, 10, 10},
                        {1, 2, 2, 0, 10},
                        {1, 2, 2, 10, 0},
                        {1, 0, 0, 10, 10},
                        {1, 2, 1, 1, 1}}) {
    Case c;
    c.variant = "size0/1";
    c.batch = z[0];
    c.hq = z[1];
    c.hkv = z[2];
    c.sq = z[3];
    c.skv = z[4];
    c.dim = 32;
    both(c);
  }
  // Causal with Sq > Skv (bottom-right aligned): the first 200 queries see no key, so the first
  // 128-row query tile has no key tiles. Then no key at all: every item's O comes from the
  // Hopper forward's zero V panel alone, which must reach the async proxy without any tile's
  // fence (the emulator fails a wgmma that reads it unpublished).
  {
    Case c;
    c.variant = "rows see no key";
    c.hq = 1;
    c.hkv = 1;
    c.sq = 300;
    c.skv = 100;
    c.dim = 128;
    c.dtype = DType::kBF16;
    c.causal = true;
    both(c);
    c.skv = 0;
    both(c);
  }
  // 8. Decode shapes (few queries per KV head: the split-KV path), with masks, GQA, varlen and
  // every dtype.
  {
    struct Decode {
      const char* name;
      std::int64_t hq, hkv, sq, skv;
      DType dtype;
    };
    const Decode decodes[] = {
        {"decode", 8, 2, 1, 1000, DType::kF32}, {"decode", 32, 4, 1, 300, DType::kF32},
        {"decode", 8, 1, 3, 517, DType::kBF16}, {"decode", 4, 4, 16, 200, DType::kF16},
        {"decode", 4, 2, 7, 129, DType::kF32},  {"decode", 32, 8, 1, 2000, DType::kBF16},
    };
    int n = 0;
    for (const auto& d : decodes) {
      if (quick && n++ > 1) break;
      Case c;
      c.variant = d.name;
      c.hq = d.hq;
      c.hkv = d.hkv;
      c.sq = d.sq;
      c.skv = d.skv;
      c.dtype = d.dtype;
      c.causal = true;
      both(c);
      c.causal = false;
      c.variant = "decode+mask";
      c.mask = MaskSpec::of(scaled_pattern(Pattern::kSlidingWindowCausal, d.skv, d.skv / 5));
      c.num_sinks = 2;
      c.sink_logits = true;
      add(c);
      c.mask = MaskSpec::with_documents(scaled_pattern(Pattern::kCausalDocument, d.skv),
                                        scaled_documents(d.skv));
      c.variant = "decode+doc+softcap";
      c.softcap = 3.0F;
      add(c);
    }
    Case v;
    v.variant = "decode+varlen";
    v.layout = Layout::kVarlen;
    v.hq = 8;
    v.hkv = 2;
    v.dim = 64;
    v.batch = 4;
    v.seqlens_q = {1, 1, 0, 1};
    v.seqlens_k = {300, 1, 50, 0};
    v.causal = true;
    both(v);
    v.variant = "decode+varlen+bf16";  // GQA-packed tiles on the GPU, split-KV parts
    v.dtype = DType::kBF16;
    v.seqlens_k = {1300, 1, 50, 0};
    add(v);
    v.variant = "decode+varlen+bf16+sq";  // packed rows of entries with sq 3, 0, 1, 2
    v.seqlens_q = {3, 0, 1, 2};
    v.seqlens_k = {900, 40, 1500, 7};
    v.sink_logits = true;
    add(v);
    v.sink_logits = false;
    v.dtype = DType::kF32;
    Case nf = v;
    nf.variant = "decode+nan/inf";
    nf.layout = Layout::kContiguous;
    nf.batch = 1;
    nf.sq = 2;
    nf.skv = 200;
    nf.nonfinite = true;
    add(nf);
  }
  // 9. Non-finite inputs propagate exactly where the oracle says, forward and backward: a
  // masked pair never carries an Inf/NaN of Q, K, V or dO into another row's output or
  // gradient (under a document mask, the other documents stay finite).
  for (bool causal : {false, true}) {
    Case c;
    c.variant = "nan/inf";
    c.hq = 2;
    c.hkv = 1;
    c.sq = 100;
    c.skv = 140;
    c.causal = causal;
    c.nonfinite = true;
    both(c);
  }
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    Case c;
    c.variant = "nan/inf+documents";
    c.dtype = dtype;
    c.hq = 4;
    c.hkv = 2;
    c.sq = 300;
    c.skv = 300;
    c.dim = 64;
    c.nonfinite = true;
    c.mask = MaskSpec::of(scaled_pattern(Pattern::kCausalDocument, 300, 30));
    c.mask->doc_lens = {70, 90, 40, 100};
    both(c);
  }
  return cases;
}

}  // namespace longattn::check
