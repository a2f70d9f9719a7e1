// SPDX-License-Identifier: Apache-2.0
// The CUDA backend as seen by the dispatcher, the validator and the test driver. Without
// LONGATTN_CUDA these functions exist too (cuda_stub.cpp) and throw a clear kUnsupported error.
#pragma once

#include <cstddef>
#include <string>

#include "core/problem.hpp"

namespace longattn::detail::cuda {

/// True when this build has the CUDA backend compiled in.
bool built() noexcept;

/// Number of GPUs this process can use (0 when the driver or the device is missing).
int usable_devices() noexcept;

/// One line about the GPUs ("NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)") or why none is usable.
std::string device_summary();

/// @throws Error(kUnsupported) when no CUDA kernel can run this problem (head dim, arch).
void check_supported(const Problem& p);
/// Which kernels run p (forward, or backward when p has dout), for LONGATTN_LOG=1.
std::string describe_kernels(const Problem& p);
/// Runs the forward / backward of a validated problem whose tensors are on GPU
/// p.device_index, on stream p.stream. @throws Error(kRuntime) naming the failed operation.
void forward(const Problem& p);
void backward(const Problem& p);

/// Memory helpers for the validator (cu_seqlens / sink logits on the GPU) and the test driver.
/// Each throws Error(kRuntime) naming the operation when CUDA fails.
void copy_to_host(void* dst, const void* src, std::size_t bytes, int device_index);
void copy_to_device(void* dst, const void* src, std::size_t bytes, int device_index);
void* device_alloc(std::size_t bytes, int device_index);
void device_free(void* ptr, int device_index) noexcept;
/// Waits for all work on the GPU (the test driver times and compares after this).
void synchronize(int device_index);

}  // namespace longattn::detail::cuda
