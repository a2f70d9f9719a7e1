// SPDX-License-Identifier: Apache-2.0
// Kernel launchers: the only functions of the .cu files the host orchestration calls. Each takes
// a filled AttnParams, launches on `stream` and returns the launch status.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "cuda/params.hpp"

namespace longattn::detail::cuda {

/// Geometry of the generic (SIMT) kernels: the schedule tile shape they are compiled for.
inline constexpr int kSimtTileQ = 16;
inline constexpr int kSimtTileK = 32;
inline constexpr int kSimtThreads = 128;
inline constexpr int kSimtMaxDim = 256;

/// Geometry of the tensor-core forward (sm80/forward_mma.cuh): 64-row query tiles (4 warps),
/// or 128 (8 warps, the "wide" instances for long prefill), against 64-key tiles (32 at
/// D = 256, to fit sm_80's shared memory). The backward uses 64 x 64, and in its fast mode also
/// 64 x 128 (8 warps, the "wide" backward instances).
inline constexpr int kMmaTileQ = 64;
inline constexpr int kMmaWideTileQ = 128;
inline constexpr int kMmaTileK = 64;
inline constexpr int kMmaWideTileK = 128;
constexpr int mma_tile_k(int dim) { return dim <= 128 ? kMmaTileK : kMmaTileK / 2; }

/// Static shared memory every persistent kernel adds to its dynamic buffer (the work slot).
inline constexpr std::size_t kStaticSmemBytes = 16;

/// Bytes of dynamic shared memory the generic kernels need at head dim `dim`.
std::size_t simt_forward_smem(int dim);
std::size_t simt_backward_smem(int dim);

/// Resident blocks per SM of the generic forward / backward kernels (0 when they cannot run).
int simt_forward_occupancy(const AttnParams& p);
int simt_backward_occupancy(const AttnParams& p);

/// Forward over p.row_work (persistent grid of `grid` blocks), then the split-KV merge when
/// p.num_merge_work > 0. p.work_counter must point at two zeroed ints.
cudaError_t launch_simt_forward(const AttnParams& p, int grid, cudaStream_t stream);

/// Merges split-KV parts (p.merge_work; part rows of p.sched.tile_q) into out and lse.
cudaError_t launch_merge(const AttnParams& p, cudaStream_t stream);

/// Tensor-core forward for ELEM = int(ElemType::kBF16 or kF16), head dim D, WARPS and SLABS (m16
/// row slabs per warp): 4 x 1 = 64-row tiles, 8 x 1 or 4 x 2 = 128-row tiles; instantiated by the
/// files generated from src/cuda/kernels.list.
template <int ELEM, int D, int WARPS, int SLABS>
int forward_mma_occupancy();
template <int ELEM, int D, int WARPS, int SLABS>
cudaError_t launch_forward_mma(const AttnParams& p, int grid, cudaStream_t stream);

/// Hopper forward (sm90/forward_wgmma.cuh: wgmma on two warpgroups, 128 x KEYS tiles) for ELEM,
/// D = 64 or 128 and KEYS = 64 (kernels.list kind fwdh) or 128 (fwdhk); compiled for sm_90a only.
template <int ELEM, int D, int KEYS>
int forward_wgmma_occupancy();
template <int ELEM, int D, int KEYS>
cudaError_t launch_forward_wgmma(const AttnParams& p, int grid, cudaStream_t stream);

/// Hopper backward (sm90/backward_wgmma.cuh: the fast mode with wgmma on two warpgroups, 64 x
/// 128 tiles) for ELEM and D = 64 or 128; compiled for sm_90a only (kernels.list kind bwdh).
/// Needs p.dq_accum (no deterministic mode) and the prologue, as launch_backward_mma.
template <int ELEM, int D>
int backward_wgmma_occupancy();
template <int ELEM, int D>
cudaError_t launch_backward_wgmma(const AttnParams& p, int grid, cudaStream_t stream);

/// Tensor-core backward for ELEM and D <= 128 over a 64 x KEYS schedule; instantiated like the
/// forward. KEYS = 64: the fast mode (dK/dV with atomic dQ, when p.dq_accum is set) or the
/// deterministic one (dK/dV pass, then dQ pass). KEYS = 128: the fast mode only. The row
/// constants and dsink must have run first (launch_backward_prologue).
template <int ELEM, int D, int KEYS>
int backward_mma_occupancy();
template <int ELEM, int D, int KEYS>
cudaError_t launch_backward_mma(const AttnParams& p, int grid, cudaStream_t stream);

/// Which pass a compiled tensor-core kernel implements (kForwardWide: 128-row query tiles on 8
/// warps; kForwardTall: 128-row query tiles on 4 warps of 32 rows; kForwardHopper: 128 x 64
/// tiles on 2 warpgroups with wgmma, sm_90 only; kForwardHopperWide: the same on 128 x 128
/// tiles; kBackwardWide: the fast backward on 128-key tiles; kBackwardHopper: the same with
/// wgmma on 2 warpgroups, sm_90 only).
enum class MmaKind : std::uint8_t {
  kForward,
  kForwardWide,
  kForwardTall,
  kForwardHopper,
  kForwardHopperWide,
  kBackward,
  kBackwardWide,
  kBackwardHopper
};

/// Whether `kind` is a wgmma kernel (sm_90a code, compute capability 9.0 alone).
constexpr bool is_wgmma(MmaKind kind) {
  return kind == MmaKind::kForwardHopper || kind == MmaKind::kForwardHopperWide ||
         kind == MmaKind::kBackwardHopper;
}

/// One compiled tensor-core kernel.
struct MmaKernel {
  MmaKind kind;
  ElemType elem;
  int dim;
  int (*occupancy)();
  cudaError_t (*launch)(const AttnParams&, int, cudaStream_t);
};
/// The compiled instance, or null (generated: the build's subset of src/cuda/kernels.list).
const MmaKernel* find_mma(MmaKind kind, ElemType elem, int dim);

/// The backward's prologue: D_i = dO_i . O_i and the lse rows (log2 units), then dsink; with
/// p.nonfinite set, also the scan of Q, K, V and dO for Inf/NaN.
cudaError_t launch_backward_prologue(const AttnParams& p, cudaStream_t stream);

/// Backward: row constants (D_i, lse) and the sink-logit gradient (unless p.nonfinite is set:
/// then the tensor-core path has run the prologue), then one kernel for dK/dV over p.col_work and
/// dQ over p.row_work, on p.sched's tiles (any multiple of 16 x 32). With p.nonfinite set it
/// returns at once unless the prologue found an Inf/NaN. p.work_counter must point at two
/// zeroed ints.
cudaError_t launch_simt_backward(const AttnParams& p, int grid, cudaStream_t stream);

}  // namespace longattn::detail::cuda
