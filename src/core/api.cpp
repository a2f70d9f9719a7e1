// SPDX-License-Identifier: Apache-2.0
// Public entry points: validate, choose a backend, run. LONGATTN_LOG=1 prints the choice.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/problem.hpp"
#include "cpu/cpu_backend.hpp"
#include "cuda/cuda_backend.hpp"
#include "longattn/attention.hpp"
#include "longattn/error.hpp"
#include "longattn/runtime.hpp"
#include "reference/reference.hpp"

#ifndef LONGATTN_VERSION
#define LONGATTN_VERSION "0.0.0"
#endif

namespace longattn {
namespace {

bool log_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("LONGATTN_LOG");
    return v != nullptr && std::strcmp(v, "0") != 0 && *v != '\0';
  }();
  return enabled;
}

/// The one place that answers "which implementation runs this call?".
Backend choose_backend(const detail::Problem& p, Backend requested, Device device) {
  if (requested == Backend::kCUDA || (requested == Backend::kAuto && device == Device::kCUDA)) {
    if (!detail::cuda::built()) {
      throw Error(ErrorKind::kUnsupported, "options.backend",
                  "the CUDA backend is not part of this build (configure with LONGATTN_CUDA=ON)");
    }
    if (device != Device::kCUDA) {
      throw Error(
          ErrorKind::kInvalidArgument, "options.backend",
          std::string("the CUDA backend needs GPU tensors, q is on ") + device_name(device));
    }
    detail::cuda::check_supported(p);
    return Backend::kCUDA;
  }
  if (device != Device::kCPU) {
    throw Error(ErrorKind::kInvalidArgument, "q",
                std::string("backend ") + backend_name(requested) + " needs CPU tensors, got " +
                    device_name(device));
  }
  if (requested == Backend::kReference) return Backend::kReference;
  // D = 0 is valid (empty outputs, lse of zero scores); the oracle handles it directly.
  if (p.dim == 0) return Backend::kReference;
  detail::cpu::check_supported(p);
  return Backend::kCPU;
}

void log_choice(const char* op, const detail::Problem& p, Backend b) {
  if (!log_enabled()) return;
  const std::string cuda_kernel = b == Backend::kCUDA ? detail::cuda::describe_kernels(p) : "";
  std::fprintf(stderr, "longattn: %s B=%lld Hq=%lld Hkv=%lld D=%lld %s%s -> %s (%s)\n", op,
               static_cast<long long>(p.batch), static_cast<long long>(p.hq),
               static_cast<long long>(p.hkv), static_cast<long long>(p.dim), dtype_name(p.dtype),
               p.varlen ? " varlen" : "", backend_name(b),
               b == Backend::kCUDA       ? cuda_kernel.c_str()
               : b != Backend::kCPU      ? "float64"
               : p.dtype == DType::kBF16 ? detail::cpu::bf16_forward_path(p.dim)
                                         : detail::cpu::simd_level());
}

}  // namespace

const char* backend_name(Backend backend) noexcept {
  switch (backend) {
    case Backend::kAuto:
      return "auto";
    case Backend::kCPU:
      return "cpu";
    case Backend::kReference:
      return "reference";
    case Backend::kCUDA:
      return "cuda";
  }
  return "?";
}

const char* version() noexcept { return LONGATTN_VERSION; }

void attention_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                       const TensorView& out, const TensorView& lse,
                       const AttentionOptions& options) {
  const detail::Problem p = detail::make_forward_problem(q, k, v, out, lse, options);
  const Backend b = choose_backend(p, options.backend, q.device);
  log_choice("forward", p, b);
  if (b == Backend::kReference) {
    detail::reference::forward(p);
  } else if (b == Backend::kCUDA) {
    detail::cuda::forward(p);
  } else {
    detail::cpu::forward(p);
  }
}

void attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out, const TensorView& lse, const TensorView& dout,
                        const TensorView& dq, const TensorView& dk, const TensorView& dv,
                        const TensorView& dsink_logits, const AttentionOptions& options) {
  const detail::Problem p =
      detail::make_backward_problem(q, k, v, out, lse, dout, dq, dk, dv, dsink_logits, options);
  const Backend b = choose_backend(p, options.backend, q.device);
  log_choice("backward", p, b);
  if (b == Backend::kReference) {
    detail::reference::backward(p);
  } else if (b == Backend::kCUDA) {
    detail::cuda::backward(p);
  } else {
    detail::cpu::backward(p);
  }
}

RuntimeInfo runtime_info() {
  RuntimeInfo info;
  info.version = LONGATTN_VERSION;
  info.backends = {"reference", "cpu"};
  if (detail::cuda::built()) {
    info.backends.emplace_back("cuda");
    info.gpus.push_back(detail::cuda::device_summary());
  }
  info.simd = detail::cpu::simd_level();
  info.bf16_path = detail::cpu::bf16_forward_path(128);
  info.threads = detail::cpu::default_threads();
  return info;
}

}  // namespace longattn
