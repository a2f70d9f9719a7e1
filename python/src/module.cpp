// SPDX-License-Identifier: Apache-2.0
// The _longattn extension: zero-copy DLPack views into the C++ API. Output allocation and
// framework handling live in Python (python/longattn/__init__.py).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <memory>
#include <string>

#include "longattn/longattn.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using longattn::DType;
using longattn::TensorView;

/// Inputs may be read-only (JAX, NumPy views of immutable buffers); outputs must be writable.
using In = nb::ndarray<nb::ro>;
using Out = nb::ndarray<>;

/// A TensorView over a DLPack array (no copy). `name` labels errors.
template <class Array>
TensorView view_of(const Array& a, const char* name) {
  TensorView t;
  t.data = const_cast<void*>(static_cast<const void*>(a.data()));
  const nb::dlpack::dtype dt = a.dtype();
  if (dt == nb::dtype<float>()) {
    t.dtype = DType::kF32;
  } else if (dt.code == static_cast<std::uint8_t>(nb::dlpack::dtype_code::Bfloat) &&
             dt.bits == 16) {
    t.dtype = DType::kBF16;
  } else if (dt.code == static_cast<std::uint8_t>(nb::dlpack::dtype_code::Float) && dt.bits == 16) {
    t.dtype = DType::kF16;
  } else if (dt == nb::dtype<std::int32_t>()) {
    t.dtype = DType::kI32;
  } else {
    throw longattn::Error(
        longattn::ErrorKind::kInvalidArgument, name,
        "expected dtype float32, bfloat16, float16 (or int32 for cu_seqlens), got "
        "DLPack code " +
            std::to_string(dt.code) + " with " + std::to_string(dt.bits) + " bits");
  }
  if (a.device_type() == nb::device::cpu::value) {
    t.device = longattn::Device::kCPU;
  } else if (a.device_type() == nb::device::cuda::value) {
    t.device = longattn::Device::kCUDA;
    t.device_index = a.device_id();
  } else {
    throw longattn::Error(
        longattn::ErrorKind::kInvalidArgument, name,
        "expected a CPU or CUDA tensor, got DLPack device type " + std::to_string(a.device_type()));
  }
  if (a.ndim() > static_cast<std::size_t>(TensorView::kMaxRank)) {
    throw longattn::Error(longattn::ErrorKind::kInvalidArgument, name,
                          "expected at most 4 dimensions, got " + std::to_string(a.ndim()));
  }
  t.rank = static_cast<int>(a.ndim());
  for (std::size_t i = 0; i < a.ndim(); ++i) {
    t.shape[i] = static_cast<std::int64_t>(a.shape(i));
    t.strides[i] = a.shape(i) == 1 ? 0 : static_cast<std::int64_t>(a.stride(i));
  }
  return t;
}

template <class Array>
TensorView optional_view(const std::optional<Array>& a, const char* name) {
  return a ? view_of(*a, name) : TensorView{};
}

struct CallOptions {
  longattn::AttentionOptions o;
  std::shared_ptr<longattn::MaskSpec> mask;  // keeps the mask alive during the call
};

CallOptions make_options(std::optional<float> scale, bool causal, std::int64_t window_left,
                         std::int64_t window_right, std::int64_t sinks,
                         const std::optional<In>& sink_logits, float softcap,
                         const std::string& score, float sigmoid_bias,
                         std::shared_ptr<longattn::MaskSpec> mask, const std::optional<In>& cu_q,
                         const std::optional<In>& cu_k, const std::string& backend, int threads,
                         std::uintptr_t stream) {
  CallOptions c;
  auto& o = c.o;
  o.scale = scale;
  o.causal = causal;
  o.window_left = window_left;
  o.window_right = window_right;
  o.num_sinks = sinks;
  o.sink_logits = optional_view(sink_logits, "sink_logits");
  o.softcap = softcap;
  if (score == "softmax") {
    o.score = longattn::ScoreFn::kSoftmax;
  } else if (score == "sigmoid") {
    o.score = longattn::ScoreFn::kSigmoid;
  } else {
    throw longattn::Error(longattn::ErrorKind::kInvalidArgument, "score",
                          "expected 'softmax' or 'sigmoid', got '" + score + "'");
  }
  o.sigmoid_bias = sigmoid_bias;
  // A private deep copy: the GIL is released during the call and Python may change the
  // original (its vectors, its layout) from another thread meanwhile.
  if (mask) {
    c.mask = std::make_shared<longattn::MaskSpec>(*mask);
    if (mask->layout) {
      c.mask->layout = std::make_shared<longattn::BlockSparseLayout>(*mask->layout);
    }
  }
  o.mask = c.mask.get();
  o.cu_seqlens_q = optional_view(cu_q, "cu_seqlens_q");
  o.cu_seqlens_k = optional_view(cu_k, "cu_seqlens_k");
  if (backend == "auto") {
    o.backend = longattn::Backend::kAuto;
  } else if (backend == "cpu") {
    o.backend = longattn::Backend::kCPU;
  } else if (backend == "reference") {
    o.backend = longattn::Backend::kReference;
  } else if (backend == "cuda") {
    o.backend = longattn::Backend::kCUDA;
  } else {
    throw longattn::Error(longattn::ErrorKind::kInvalidArgument, "backend",
                          "expected auto, cpu, reference or cuda, got '" + backend + "'");
  }
  o.num_threads = threads;
  o.cuda_stream = reinterpret_cast<void*>(stream);  // NOLINT(performance-no-int-to-ptr)
  return c;
}

#define LONGATTN_OPTION_ARGS                                                               \
  "scale"_a = nb::none(), "causal"_a = false, "window_left"_a = -1, "window_right"_a = -1, \
  "sinks"_a = 0, "sink_logits"_a = nb::none(), "softcap"_a = 0.0F, "score"_a = "softmax",  \
  "sigmoid_bias"_a = 0.0F, "mask"_a.none() = nb::none(), "cu_seqlens_q"_a = nb::none(),    \
  "cu_seqlens_k"_a = nb::none(), "backend"_a = "auto", "threads"_a = 0, "stream"_a = 0

}  // namespace

NB_MODULE(_longattn, m) {
  m.doc() = "longattn C++ core (use the `longattn` package, not this module directly)";
  // Masks referenced from Python globals (the torch op's registry) may outlive the module at
  // interpreter exit; that is not a leak worth a report.
  nb::set_leak_warnings(false);

  // Errors: the C++ message, as the Python exception that fits.
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const longattn::Error& e) {
      const std::string msg = e.what();
      if (e.kind() == longattn::ErrorKind::kInvalidArgument) {
        if (msg.find("dtype") != std::string::npos) {
          PyErr_SetString(PyExc_TypeError, msg.c_str());
        } else {
          PyErr_SetString(PyExc_ValueError, msg.c_str());
        }
      } else if (e.kind() == longattn::ErrorKind::kUnsupported) {
        PyErr_SetString(PyExc_NotImplementedError, msg.c_str());
      } else {
        PyErr_SetString(PyExc_RuntimeError, msg.c_str());
      }
    }
  });

  nb::enum_<longattn::Pattern>(m, "Pattern")
      .value("full", longattn::Pattern::kFull)
      .value("causal", longattn::Pattern::kCausal)
      .value("full_document", longattn::Pattern::kFullDocument)
      .value("causal_document", longattn::Pattern::kCausalDocument)
      .value("sliding_window", longattn::Pattern::kSlidingWindow)
      .value("sliding_window_causal", longattn::Pattern::kSlidingWindowCausal)
      .value("global_sliding_window", longattn::Pattern::kGlobalSlidingWindow)
      .value("share_question", longattn::Pattern::kShareQuestion)
      .value("causal_blockwise", longattn::Pattern::kCausalBlockwise)
      .value("prefix_lm_causal", longattn::Pattern::kPrefixLmCausal)
      .value("prefix_lm_document", longattn::Pattern::kPrefixLmDocument)
      .value("block_causal_document", longattn::Pattern::kBlockCausalDocument)
      .value("strided", longattn::Pattern::kStrided)
      .value("fixed", longattn::Pattern::kFixed)
      .value("bigbird", longattn::Pattern::kBigBird)
      .value("dilated_sliding_window", longattn::Pattern::kDilatedSlidingWindow)
      .value("shard", longattn::Pattern::kShard)
      .value("block_sparse", longattn::Pattern::kBlockSparse);

  nb::class_<longattn::PatternSpec>(m, "PatternSpec")
      .def(nb::init<>())
      .def_rw("kind", &longattn::PatternSpec::kind)
      .def_rw("window", &longattn::PatternSpec::window)
      .def_rw("block", &longattn::PatternSpec::block)
      .def_rw("prefix", &longattn::PatternSpec::prefix)
      .def_rw("stride", &longattn::PatternSpec::stride)
      .def_rw("offset", &longattn::PatternSpec::offset)
      .def_rw("summary", &longattn::PatternSpec::summary)
      .def_rw("dilation", &longattn::PatternSpec::dilation)
      .def_rw("global_blocks", &longattn::PatternSpec::global_blocks)
      .def_rw("window_blocks", &longattn::PatternSpec::window_blocks)
      .def_rw("random_blocks", &longattn::PatternSpec::random_blocks)
      .def_rw("seed", &longattn::PatternSpec::seed)
      .def("__repr__", [](const longattn::PatternSpec& p) {
        return std::string("PatternSpec(") + longattn::pattern_name(p.kind) + ")";
      });

  nb::class_<longattn::BlockSparseLayout>(m, "BlockSparseLayout")
      .def(nb::init<>())
      .def_rw("block_q", &longattn::BlockSparseLayout::block_q)
      .def_rw("block_k", &longattn::BlockSparseLayout::block_k)
      .def_rw("batches", &longattn::BlockSparseLayout::batches)
      .def_rw("heads", &longattn::BlockSparseLayout::heads)
      .def_rw("q_blocks", &longattn::BlockSparseLayout::q_blocks)
      .def_rw("row_offsets", &longattn::BlockSparseLayout::row_offsets)
      .def_rw("key_blocks", &longattn::BlockSparseLayout::key_blocks)
      .def_rw("partial", &longattn::BlockSparseLayout::partial);

  nb::class_<longattn::MaskSpec>(m, "MaskSpec", nb::is_weak_referenceable())
      .def(nb::init<>())
      .def_rw("heads", &longattn::MaskSpec::heads)
      .def_rw("doc_lens", &longattn::MaskSpec::doc_lens)
      .def_prop_rw(
          "layout", [](const longattn::MaskSpec& m) { return m.layout; },
          [](longattn::MaskSpec& m, std::shared_ptr<longattn::BlockSparseLayout> l) {
            m.layout = std::move(l);
          })
      .def("__repr__", [](const longattn::MaskSpec& m) {
        std::string s = "MaskSpec(";
        s += m.heads.size() == 1 ? longattn::pattern_name(m.heads[0].kind) : "per-head";
        if (!m.doc_lens.empty()) s += ", " + std::to_string(m.doc_lens.size()) + " documents";
        return s + ")";
      });

  m.def("pattern_names", [] {
    std::vector<std::string> names;
    for (auto p : longattn::all_patterns()) names.emplace_back(longattn::pattern_name(p));
    return names;
  });
  m.def("benchmark_pattern_names", [] {
    std::vector<std::string> names;
    for (auto p : longattn::benchmark_patterns()) names.emplace_back(longattn::pattern_name(p));
    return names;
  });
  m.def("parse_pattern", [](const std::string& n) { return longattn::parse_pattern(n, "name"); });
  m.def("random_documents", &longattn::random_documents, "total"_a, "min_len"_a, "max_len"_a,
        "seed"_a = 42);

  m.def(
      "forward",
      [](const In& q, const In& k, const In& v, const Out& out, const std::optional<Out>& lse,
         std::optional<float> scale, bool causal, std::int64_t wl, std::int64_t wr,
         std::int64_t sinks, const std::optional<In>& sink_logits, float softcap,
         const std::string& score, float bias, std::shared_ptr<longattn::MaskSpec> mask,
         const std::optional<In>& cu_q, const std::optional<In>& cu_k, const std::string& backend,
         int threads, std::uintptr_t stream) {
        const CallOptions c =
            make_options(scale, causal, wl, wr, sinks, sink_logits, softcap, score, bias,
                         std::move(mask), cu_q, cu_k, backend, threads, stream);
        const TensorView qv = view_of(q, "q"), kv = view_of(k, "k"), vv = view_of(v, "v");
        const TensorView ov = view_of(out, "out"), lv = optional_view(lse, "lse");
        nb::gil_scoped_release release;
        longattn::attention_forward(qv, kv, vv, ov, lv, c.o);
      },
      "q"_a, "k"_a, "v"_a, "out"_a, "lse"_a = nb::none(), LONGATTN_OPTION_ARGS);

  m.def(
      "backward",
      [](const In& q, const In& k, const In& v, const In& out, const std::optional<In>& lse,
         const In& dout, const Out& dq, const Out& dk, const Out& dv,
         const std::optional<Out>& dsink, std::optional<float> scale, bool causal, std::int64_t wl,
         std::int64_t wr, std::int64_t sinks, const std::optional<In>& sink_logits, float softcap,
         const std::string& score, float bias, std::shared_ptr<longattn::MaskSpec> mask,
         const std::optional<In>& cu_q, const std::optional<In>& cu_k, const std::string& backend,
         int threads, std::uintptr_t stream, bool deterministic) {
        CallOptions c = make_options(scale, causal, wl, wr, sinks, sink_logits, softcap, score,
                                     bias, std::move(mask), cu_q, cu_k, backend, threads, stream);
        c.o.deterministic = deterministic;
        const TensorView qv = view_of(q, "q"), kv = view_of(k, "k"), vv = view_of(v, "v");
        const TensorView ov = view_of(out, "out"), lv = optional_view(lse, "lse");
        const TensorView dov = view_of(dout, "dout"), dqv = view_of(dq, "dq");
        const TensorView dkv = view_of(dk, "dk"), dvv = view_of(dv, "dv");
        const TensorView dsv = optional_view(dsink, "dsink_logits");
        nb::gil_scoped_release release;
        longattn::attention_backward(qv, kv, vv, ov, lv, dov, dqv, dkv, dvv, dsv, c.o);
      },
      "q"_a, "k"_a, "v"_a, "out"_a, "lse"_a, "dout"_a, "dq"_a, "dk"_a, "dv"_a,
      "dsink_logits"_a = nb::none(), LONGATTN_OPTION_ARGS, "deterministic"_a = false);

  m.def("runtime_info", [] {
    const auto info = longattn::runtime_info();
    nb::dict d;
    d["version"] = info.version;
    d["backends"] = info.backends;
    d["simd"] = info.simd;
    d["bf16_path"] = info.bf16_path;
    d["threads"] = info.threads;
    d["gpus"] = info.gpus;
    return d;
  });
  m.attr("__version__") = longattn::version();
}
