// SPDX-License-Identifier: Apache-2.0
// The CUDA backend entry points of a build without CUDA: every call explains how to get one.
#include "cuda/cuda_backend.hpp"
#include "longattn/error.hpp"

namespace longattn::detail::cuda {
namespace {

[[noreturn]] void not_built(const char* what) {
  throw Error(ErrorKind::kUnsupported, what,
              "the CUDA backend is not part of this build (configure with -DLONGATTN_CUDA=ON "
              "where nvcc is installed)");
}

}  // namespace

bool built() noexcept { return false; }
int usable_devices() noexcept { return 0; }
std::string device_summary() { return "not built (LONGATTN_CUDA=OFF)"; }
std::string describe_kernels(const Problem& /*p*/) { return "not built"; }
void check_supported(const Problem& /*p*/) { not_built("options.backend"); }
void forward(const Problem& /*p*/) { not_built("options.backend"); }
void backward(const Problem& /*p*/) { not_built("options.backend"); }
void copy_to_host(void* /*dst*/, const void* /*src*/, std::size_t /*bytes*/, int /*device*/) {
  not_built("a GPU tensor");
}
void copy_to_device(void* /*dst*/, const void* /*src*/, std::size_t /*bytes*/, int /*device*/) {
  not_built("a GPU tensor");
}
void* device_alloc(std::size_t /*bytes*/, int /*device*/) { not_built("a GPU tensor"); }
void device_free(void* /*ptr*/, int /*device*/) noexcept {}
void synchronize(int /*device*/) { not_built("a GPU tensor"); }

}  // namespace longattn::detail::cuda
