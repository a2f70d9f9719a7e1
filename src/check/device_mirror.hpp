// SPDX-License-Identifier: Apache-2.0
// A GPU copy of a host allocation that holds a tensor view: the test driver and the benchmark
// run the CUDA backend on these. The whole allocation goes over (guard bytes included), the
// view is rebased onto the copy, and copy_back() returns every byte.
#pragma once

#include <cstddef>
#include <utility>

#include "cuda/cuda_backend.hpp"
#include "longattn/tensor.hpp"

namespace longattn::check {

class DeviceMirror {
 public:
  /// Copies [base, base + bytes) to GPU 0; `view` must point into that range (or be empty).
  DeviceMirror(const void* base, std::size_t bytes, const TensorView& view)
      : bytes_(bytes), view_(view) {
    if (view.empty_view() || bytes == 0) return;
    memory_ = detail::cuda::device_alloc(bytes, 0);
    detail::cuda::copy_to_device(memory_, base, bytes, 0);
    const auto shift = static_cast<const char*>(view.data) - static_cast<const char*>(base);
    view_.data = static_cast<char*>(memory_) + shift;
    view_.device = Device::kCUDA;
    view_.device_index = 0;
  }
  DeviceMirror(DeviceMirror&& other) noexcept
      : memory_(std::exchange(other.memory_, nullptr)), bytes_(other.bytes_), view_(other.view_) {}
  DeviceMirror(const DeviceMirror&) = delete;
  DeviceMirror& operator=(const DeviceMirror&) = delete;
  DeviceMirror& operator=(DeviceMirror&&) = delete;
  ~DeviceMirror() { detail::cuda::device_free(memory_, 0); }

  /// The view on the GPU (an empty view stays empty).
  [[nodiscard]] const TensorView& view() const { return view_; }
  /// Copies the whole allocation back over [base, base + bytes).
  void copy_back(void* base) const {
    if (memory_ != nullptr) detail::cuda::copy_to_host(base, memory_, bytes_, 0);
  }

 private:
  void* memory_ = nullptr;
  std::size_t bytes_ = 0;
  TensorView view_;
};

}  // namespace longattn::check
