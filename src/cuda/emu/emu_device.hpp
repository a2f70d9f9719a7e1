// SPDX-License-Identifier: Apache-2.0
// The CUDA emulator's device side: what the kernels of src/cuda need from nvcc, provided for a
// host C++ compiler, so that the very same kernel sources run on the CPU (LONGATTN_CUDA_EMULATOR,
// a test build; see docs/ARCHITECTURE.md § Testing the CUDA kernels without a GPU).
//
// Every CUDA thread of a block is a fiber; the blocks of a grid run one after another, so a
// `static` local is exactly a __shared__ variable. Fibers switch only at __syncthreads() and at
// warp collectives (shuffles, ldmatrix, mma), which the emulator implements from the PTX ISA's
// fragment layouts. It reports, and fails the launch on, a warp whose lanes reach different
// collectives, a barrier that can never complete, (by its deferred cp.async) a read of
// shared memory before the cp.async group that fills it was waited for, and a wgmma operand
// that the async proxy may not see (no fence.proxy.async between its write and the barrier).
#pragma once

#ifndef LONGATTN_CUDA_EMULATOR
#error "emu_device.hpp is the CUDA emulator; it is only compiled with LONGATTN_CUDA_EMULATOR"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>

#include "cuda/params.hpp"

namespace longattn::emu {

/// The running fiber's CUDA indices.
const uint3& thread_index();
const uint3& block_index();
const dim3& block_dim();
const dim3& grid_dim();

/// Block barrier (__syncthreads) and its OR-reduction (__syncthreads_or).
void sync_block();
int sync_block_or(int predicate);

/// Named barrier `id` (bar.arrive / bar.sync id, threads): a phase completes when `threads`
/// threads have arrived; `wait` blocks the caller until then. Ids outside 1..15, a count that is
/// not a multiple of 32 or above the block, or threads disagreeing on it fail the launch.
void named_barrier(int id, int threads, bool wait);

/// Bytes of one lane's contribution to a warp collective (at most).
inline constexpr std::size_t kWarpSlotBytes = 64;

/// Warp collective: lane i contributes `bytes` at `mine`; when all 32 lanes of the warp have
/// arrived at the same collective `what`, returns the 32 contributions, lane l's at
/// result + l * kWarpSlotBytes, readable until this lane's next collective. A warp whose lanes
/// arrive at different collectives fails the launch.
const unsigned char* warp_exchange(const void* mine, std::size_t bytes, const char* what);

/// Typed view of a warp_exchange result.
template <class T>
struct LaneValues {
  const unsigned char* slots;
  T operator[](int lane) const {
    T value;
    std::memcpy(&value, slots + static_cast<std::size_t>(lane & 31) * kWarpSlotBytes, sizeof value);
    return value;
  }
};
template <class T>
LaneValues<T> warp_exchange(const T& mine, const char* what) {
  static_assert(sizeof(T) <= kWarpSlotBytes);
  return {warp_exchange(&mine, sizeof(T), what)};
}

/// The running thread's lane (threadIdx.x % 32 for the 1-D blocks of longattn).
int lane();

/// The dynamic shared memory of the running block (poisoned with 0xff bytes at each launch).
unsigned char* dynamic_shared_memory();

/// cp.async emulation: the destination is poisoned at the issue, and the copy lands only at
/// the wait that covers it, so reading too early and refilling too early both show as NaN.
void cp_async_queue(std::uintptr_t dst, const void* src, std::size_t bytes, bool valid);
void cp_async_commit_group();
void cp_async_wait_groups(int keep_pending);

/// wgmma emulation (cuda/emu/wgmma_emu.hpp): an mma_async is queued as `op` in the thread's
/// open group; the commit closes the group; the wait runs the ops of every group but the
/// newest `keep_pending`, in order. A thread that returns with wgmma ops not waited for fails
/// the launch. `registers` are the bytes the instruction owns until it retires (its
/// accumulators, its A fragment): the PTX ISA leaves a write to them before the wait undefined,
/// so the emulator compares them with their value at the issue (or at the retirement of the
/// previous op of the chain on the same accumulators) and fails the launch when they changed.
struct WgmmaRegisters {
  const void* address = nullptr;
  std::size_t bytes = 0;
};
void wgmma_queue(std::function<void()> op, WgmmaRegisters accumulators,
                 WgmmaRegisters a_fragment = {});
void wgmma_commit_group();
void wgmma_wait_groups(int keep_pending);

/// The async proxy (wgmma's operand reads) sees shared memory as it was published: at a
/// __syncthreads that a fence.proxy.async preceded in the same phase, every byte then in shared
/// memory is published, except the cp.async copies a thread landed after its last fence (its
/// fence came before the wait; tracked once the block has run its first fence). fence_proxy_async
/// is that fence. An async read of a byte whose
/// contents differ from the published ones (written without a fence before the barrier, or
/// refilled before the wgmma that reads it retired) fails the launch.
void fence_proxy_async();
std::uint16_t async_proxy_load_b16(std::uintptr_t address, const char* what);

/// Bulk reduction emulation (cp.reduce.async.bulk .add.f32, cuda/emu/wgmma_emu.hpp): at the
/// issue the source must be published to the async proxy (as for wgmma) and is captured; the
/// adds into global memory run at the bulk_wait_groups that covers the op's group, which fails
/// the launch if the source changed in between (written again before the wait). A thread that
/// returns with bulk ops not waited for (or not committed) fails the launch.
void bulk_reduce_queue(float* dst, std::uintptr_t src, std::size_t bytes);
void bulk_commit_group();
void bulk_wait_groups(int keep_pending);

/// Counts the bytes of a global atomic (the instruction mix of LONGATTN_EMU_STATS).
void count_atomic(std::size_t bytes);

/// Runs a kernel of signature void(AttnParams) over the grid (blocks in order, the threads of
/// a block as fibers). Returns cudaErrorLaunchFailure (after a diagnostic on stderr) when the
/// emulator detects a fault.
using Kernel = void (*)(longattn::detail::cuda::AttnParams);
cudaError_t launch(Kernel kernel, dim3 grid, dim3 block, std::size_t dynamic_smem,
                   const longattn::detail::cuda::AttnParams& params);

/// LONGATTN_EMU_SCHEDULE=random:SEED draws each launch's interleaving from the seed and the
/// launch's number in the process (so a call repeated by the check driver runs another
/// interleaving, and its determinism checks test order independence); this restarts the
/// numbering (the self-test's repeatability check).
void restart_launch_numbering();

}  // namespace longattn::emu

// ---- CUDA built-ins for host C++ (CUDA's own reserved names, on purpose) ----
// NOLINTBEGIN(bugprone-reserved-identifier)
#undef __shared__
#define __shared__ static
#define __launch_bounds__(...)
#define threadIdx (::longattn::emu::thread_index())
#define blockIdx (::longattn::emu::block_index())
#define blockDim (::longattn::emu::block_dim())
#define gridDim (::longattn::emu::grid_dim())
#define __syncthreads() ::longattn::emu::sync_block()
#define __syncthreads_or(predicate) ::longattn::emu::sync_block_or(predicate)

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }

inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }

/// Single-threaded between switch points, so a plain read-modify-write is atomic.
inline int atomicAdd(int* address, int value) {
  ::longattn::emu::count_atomic(sizeof(int));
  const int old = *address;
  *address = old + value;
  return old;
}
inline float atomicAdd(float* address, float value) {
  ::longattn::emu::count_atomic(sizeof(float));
  const float old = *address;
  *address = old + value;
  return old;
}

template <class T>
T emu_shfl(T value, int source_lane, const char* what) {
  return ::longattn::emu::warp_exchange(value, what)[source_lane];
}
template <class T>
T __shfl_sync(unsigned /*mask*/, T value, int source_lane) {
  return emu_shfl(value, source_lane, "__shfl_sync");
}
template <class T>
T __shfl_xor_sync(unsigned /*mask*/, T value, int lane_mask) {
  return emu_shfl(value, ::longattn::emu::lane() ^ lane_mask, "__shfl_xor_sync");
}

inline int __any_sync(unsigned /*mask*/, int predicate) {
  const auto votes = ::longattn::emu::warp_exchange(predicate != 0 ? 1 : 0, "__any_sync");
  int any = 0;
  for (int i = 0; i < 32; ++i) any |= votes[i];
  return any;
}

/// The typed overloads that cuda_runtime.h declares only for nvcc.
template <class F>
cudaError_t cudaFuncSetAttribute(F* entry, cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(entry), attr, value);
}
template <class F>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, F* entry, int block_size,
                                                          std::size_t dynamic_smem) {
  return ::cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      blocks, reinterpret_cast<const void*>(entry), block_size, dynamic_smem);
}

// NOLINTEND(bugprone-reserved-identifier)
