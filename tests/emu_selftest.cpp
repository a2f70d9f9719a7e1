// SPDX-License-Identifier: Apache-2.0
// Self-test of the CUDA emulator (src/cuda/emu), built only with LONGATTN_CUDA_EMULATOR: the
// fragment layouts of ldmatrix + mma and of wgmma (SW128 descriptors, both majors, A from
// registers) against a scalar product, shuffles, __syncthreads_or, cp.async poisoning, bulk
// reductions (cp.reduce.async.bulk), the thread orders of LONGATTN_EMU_SCHEDULE, and that a
// divergent warp, a deadlock, and too much dynamic shared memory fail the launch. Exit status 0
// when every check holds.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/common/device.cuh"
#include "cuda/common/ptx.cuh"
#include "cuda/common/wgmma.cuh"

namespace longattn::detail::cuda {
namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  std::printf("%s  %s\n", ok ? "ok  " : "FAIL", what);
  if (!ok) ++failures;
}

// ---- one m16n8k16 product through ldmatrix, as the kernels use it ----
// p.q: A [16][16] bf16 row-major; p.k: B^T [8][16] bf16 (row n holds column n of B);
// p.out: D [16][8] float.
void mma_kernel(const AttnParams p) {
  LONGATTN_DYNAMIC_SHARED(unsigned char, smem);
  auto* as = reinterpret_cast<__nv_bfloat16*>(smem);  // [16][16]
  auto* bs = as + 16 * 16;                            // [16][16]: rows 0..7 = B^T, 8..15 zero
  const int lane = static_cast<int>(threadIdx.x);
  const auto* a = static_cast<const __nv_bfloat16*>(p.q);
  const auto* b = static_cast<const __nv_bfloat16*>(p.k);
  for (int i = lane; i < 256; i += 32) {
    as[i] = a[i];
    bs[i] = i < 128 ? b[i] : __float2bfloat16_rn(0.0F);
  }
  __syncthreads();
  std::uint32_t af[4];
  ldmatrix_x4(af, smem_addr(as + (lane % 16) * 16 + (lane / 16) * 8));
  std::uint32_t bf[4];  // matrices: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, ...)
  ldmatrix_x4(bf, smem_addr(bs + ((lane % 8) + (lane / 16) * 8) * 16 + ((lane / 8) & 1) * 8));
  float d[4] = {0.0F, 0.0F, 0.0F, 0.0F};
  mma_16816<__nv_bfloat16>(d, af, bf[0], bf[1]);
  auto* out = static_cast<float*>(p.out);
  const int g = lane / 4;
  const int t = lane % 4;
  out[g * 8 + 2 * t] = d[0];
  out[g * 8 + 2 * t + 1] = d[1];
  out[(g + 8) * 8 + 2 * t] = d[2];
  out[(g + 8) * 8 + 2 * t + 1] = d[3];
}

void test_mma() {
  std::vector<__nv_bfloat16> a(256);
  std::vector<__nv_bfloat16> bt(128);
  std::vector<float> out(128, -1.0F);
  for (int i = 0; i < 256; ++i) a[i] = __float2bfloat16_rn(static_cast<float>((i * 7) % 13) - 6);
  for (int i = 0; i < 128; ++i) bt[i] = __float2bfloat16_rn(static_cast<float>((i * 5) % 11) - 5);
  AttnParams p{};
  p.q = a.data();
  p.k = bt.data();
  p.out = out.data();
  launch_kernel(mma_kernel, dim3(1), dim3(32), 1024, nullptr, p);
  expect(cudaGetLastError() == cudaSuccess, "mma launch");
  bool same = true;
  for (int m = 0; m < 16; ++m) {
    for (int n = 0; n < 8; ++n) {
      float ref = 0.0F;
      for (int k = 0; k < 16; ++k) {
        ref += __bfloat162float(a[m * 16 + k]) * __bfloat162float(bt[n * 16 + k]);
      }
      same &= out[m * 8 + n] == ref;  // small integers: exact
    }
  }
  expect(same, "ldmatrix + mma.m16n8k16 equal the scalar product");
}

// ---- wgmma on SW128 panels, as the Hopper forward uses them ----
// p.q: A [64][64] bf16 row-major; p.k: B^T [64][64] (row n = column n of B); p.v: V [64][128];
// p.out: S = A B [64][64] then O = bf16(S) V [64][128], floats. One warpgroup.
void wgmma_kernel(const AttnParams p) {
  LONGATTN_DYNAMIC_SHARED(unsigned char, smem_raw);
  unsigned char* as = smem_raw + (1024U - smem_addr(smem_raw) % 1024U) % 1024U;
  unsigned char* bs = as + 64 * 128;  // one 64-row panel each
  unsigned char* vs = bs + 64 * 128;  // two panels of 64 rows (columns 0-63, 64-127)
  const int t = static_cast<int>(threadIdx.x);
  const auto* a = static_cast<const __nv_bfloat16*>(p.q);
  const auto* b = static_cast<const __nv_bfloat16*>(p.k);
  const auto* v = static_cast<const __nv_bfloat16*>(p.v);
  for (int i = t; i < 64 * 64; i += 128) {
    std::memcpy(as + sw128_offset(64, i / 64, i % 64), a + i, 2);
    std::memcpy(bs + sw128_offset(64, i / 64, i % 64), b + i, 2);
  }
  for (int i = t; i < 64 * 128; i += 128) {
    std::memcpy(vs + sw128_offset(64, i / 128, i % 128), v + i, 2);
  }
  fence_proxy_async();
  __syncthreads();
  float s[8][4];
  const WgmmaDesc ad = wgmma_desc(smem_addr(as), 16, 1024);
  const WgmmaDesc bd = wgmma_desc(smem_addr(bs), 16, 1024);
  wgmma_fence();
  for (int kk = 0; kk < 4; ++kk) wgmma_ss<__nv_bfloat16, 64>(s, ad + 2 * kk, bd + 2 * kk, kk > 0);
  wgmma_commit();
  wgmma_wait<0>();
  float o[16][4] = {};
  std::uint32_t pf[4][4];
  for (int kk = 0; kk < 4; ++kk) {
    pf[kk][0] = pack_pair<__nv_bfloat16>(s[2 * kk][0], s[2 * kk][1]);
    pf[kk][1] = pack_pair<__nv_bfloat16>(s[2 * kk][2], s[2 * kk][3]);
    pf[kk][2] = pack_pair<__nv_bfloat16>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    pf[kk][3] = pack_pair<__nv_bfloat16>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
  }
  const WgmmaDesc vd = wgmma_desc(smem_addr(vs), 64 * 128, 1024);
  wgmma_fence();
  for (int kk = 0; kk < 4; ++kk) wgmma_rs_tb<__nv_bfloat16, 128>(o, pf[kk], vd + kk * 128, true);
  wgmma_commit();
  const float before = o[0][0];  // still the old accumulator until the wait
  wgmma_wait<0>();
  auto* out = static_cast<float*>(p.out);
  const int row = 16 * (t / 32) + (t % 32) / 4;
  const int col = 2 * (t % 4);
  for (int nb = 0; nb < 8; ++nb) {
    for (int e = 0; e < 4; ++e) out[(row + (e >> 1) * 8) * 64 + nb * 8 + col + (e & 1)] = s[nb][e];
  }
  for (int nb = 0; nb < 16; ++nb) {
    for (int e = 0; e < 4; ++e) {
      out[64 * 64 + (row + (e >> 1) * 8) * 128 + nb * 8 + col + (e & 1)] = o[nb][e];
    }
  }
  if (t == 0) out[64 * 64 + 64 * 128] = before;
}

void test_wgmma() {
  std::vector<__nv_bfloat16> a(64 * 64);
  std::vector<__nv_bfloat16> bt(64 * 64);
  std::vector<__nv_bfloat16> v(64 * 128);
  std::vector<float> out(64 * 64 + 64 * 128 + 1, -1.0F);
  for (int i = 0; i < 64 * 64; ++i) {
    a[i] = __float2bfloat16_rn(static_cast<float>((i * 7) % 5) - 2);
    bt[i] = __float2bfloat16_rn(static_cast<float>((i * 5) % 3) - 1);
  }
  for (int i = 0; i < 64 * 128; ++i)
    v[i] = __float2bfloat16_rn(static_cast<float>((i * 3) % 7) - 3);
  AttnParams p{};
  p.q = a.data();
  p.k = bt.data();
  p.v = v.data();
  p.out = out.data();
  const int smem = 4 * 64 * 128 + 1024;
  cudaFuncSetAttribute(wgmma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  launch_kernel(wgmma_kernel, dim3(1), dim3(128), smem, nullptr, p);
  expect(cudaGetLastError() == cudaSuccess, "wgmma launch");
  bool s_same = true;
  bool o_same = true;
  std::vector<float> sref(64 * 64);
  for (int m = 0; m < 64; ++m) {
    for (int n = 0; n < 64; ++n) {
      float ref = 0.0F;
      for (int k = 0; k < 64; ++k) {
        ref += __bfloat162float(a[m * 64 + k]) * __bfloat162float(bt[n * 64 + k]);
      }
      sref[m * 64 + n] = ref;
      s_same &= out[m * 64 + n] == ref;  // small integers: exact
    }
  }
  for (int m = 0; m < 64; ++m) {
    for (int n = 0; n < 128; ++n) {
      float ref = 0.0F;
      for (int k = 0; k < 64; ++k) ref += sref[m * 64 + k] * __bfloat162float(v[k * 128 + n]);
      o_same &= out[64 * 64 + m * 128 + n] == ref;
    }
  }
  expect(s_same, "wgmma m64n64k16 (K-major A and B in SW128 panels) equals the scalar product");
  expect(o_same, "wgmma m64n128k16 (A from registers, N-major B) equals the scalar product");
  expect(out[64 * 64 + 64 * 128] == 0.0F, "wgmma accumulators change only at the wait");
}

// ---- shuffles and the block vote ----
void shuffle_kernel(const AttnParams p) {
  auto* out = static_cast<int*>(p.out);
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid % 32;
  const int x = __shfl_xor_sync(0xffffffffU, lane * 10, 5);
  const int y = __shfl_sync(0xffffffffU, lane * 10, 31 - lane);
  const int vote = __syncthreads_or(tid == 77 ? 1 : 0);
  const int none = __syncthreads_or(0);
  out[tid] = (x == (lane ^ 5) * 10 && y == (31 - lane) * 10 && vote == 1 && none == 0) ? 1 : 0;
}

void test_shuffles() {
  std::vector<int> out(128, 0);
  AttnParams p{};
  p.out = out.data();
  launch_kernel(shuffle_kernel, dim3(1), dim3(128), 0, nullptr, p);
  bool all = cudaGetLastError() == cudaSuccess;
  for (int v : out) all &= v == 1;
  expect(all, "__shfl_xor_sync, __shfl_sync and __syncthreads_or");
}

// ---- cp.async: poisoned from the issue until the covering wait ----
void cp_async_kernel(const AttnParams p) {
  LONGATTN_DYNAMIC_SHARED(unsigned char, smem);
  auto* out = static_cast<unsigned char*>(p.out);
  if (threadIdx.x == 0) {
    std::memset(smem, 0x11, 16);
    cp_async_16(smem_addr(smem), p.q, true);
    cp_async_commit();
    out[0] = smem[0];  // in flight
    cp_async_wait<0>();
    out[1] = smem[0];  // landed
  }
}

void test_cp_async() {
  alignas(16) unsigned char src[16];
  std::memset(src, 0x42, sizeof src);
  unsigned char out[2] = {0, 0};
  AttnParams p{};
  p.q = src;
  p.out = out;
  launch_kernel(cp_async_kernel, dim3(1), dim3(32), 64, nullptr, p);
  expect(cudaGetLastError() == cudaSuccess && out[0] == 0xff && out[1] == 0x42,
         "cp.async destination poisoned until the wait, then the data");
}

// ---- named barriers: warpgroup 0 reads what warpgroup 1 wrote before its bar.arrive ----
void named_barrier_kernel(const AttnParams p) {
  LONGATTN_DYNAMIC_SHARED(unsigned char, smem_raw);
  int* slots = reinterpret_cast<int*>(smem_raw);
  const int t = static_cast<int>(threadIdx.x);
  int seen = 0;
  for (int round = 1; round <= 3; ++round) {
    // Warpgroup 1 writes: the emulator runs warpgroup 0 first, so a bar.sync that did not
    // wait would read the unwritten (0xff) slots.
    if (t >= 128) {
      slots[t - 128] = round * 1000 + t;
      named_barrier_arrive(1, 256);
    } else {
      named_barrier_sync(1, 256);
      seen += slots[t] == round * 1000 + t + 128 ? 1 : 0;
    }
    __syncthreads();  // the slots are rewritten next round
  }
  static_cast<int*>(p.out)[t] = seen;
}

void test_named_barriers() {
  std::vector<int> out(256, -1);
  AttnParams p{};
  p.out = out.data();
  launch_kernel(named_barrier_kernel, dim3(1), dim3(256), 128 * sizeof(int), nullptr, p);
  expect(cudaGetLastError() == cudaSuccess, "named barrier launch");
  bool ok = true;
  for (int t = 0; t < 128; ++t) ok &= out[static_cast<std::size_t>(t)] == 3;
  expect(ok, "bar.sync returns after the bar.arrive of the other warpgroup, its writes visible");
}

// ---- faults the emulator must report ----
void divergent_kernel(const AttnParams /*p*/) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  if (lane < 16) {
    (void)__shfl_sync(0xffffffffU, lane, 0);
  } else {
    (void)__shfl_xor_sync(0xffffffffU, lane, 1);
  }
}

void lanes_exit_kernel(const AttnParams /*p*/) {
  if (threadIdx.x % 32 < 8) return;  // the other lanes wait for them forever
  (void)__shfl_xor_sync(0xffffffffU, 1, 1);
}

// Writes the accumulators of an S = Q K^T still in flight (the pipelined Hopper forward must
// wait for its P.V before the softmax touches O).
void wgmma_write_in_flight_kernel(const AttnParams /*p*/) {
  LONGATTN_DYNAMIC_SHARED(unsigned char, smem_raw);
  unsigned char* panels = smem_raw + (1024U - smem_addr(smem_raw) % 1024U) % 1024U;
  const WgmmaDesc d = wgmma_desc(smem_addr(panels), 16, 1024);
  float s[8][4] = {};
  wgmma_fence();
  wgmma_ss<__nv_bfloat16, 64>(s, d, d, true);
  wgmma_commit();
  s[3][1] += 1.0F;
  wgmma_wait<0>();
}

// One 64 x 64 bf16 SW128 panel read by one wgmma (S = panel panel^T) after a barrier.
void read_panel_by_wgmma(const unsigned char* panel) {
  __syncthreads();
  const WgmmaDesc d = wgmma_desc(smem_addr(panel), 16, 1024);
  float s[8][4] = {};
  wgmma_fence();
  wgmma_ss<__nv_bfloat16, 64>(s, d, d, false);
  wgmma_commit();
  wgmma_wait<0>();
}

// Fills the panel with plain stores and no fence.proxy.async: the async proxy may not see them.
void wgmma_unfenced_kernel(const AttnParams /*p*/) {
  LONGATTN_DYNAMIC_SHARED(unsigned char, smem_raw);
  unsigned char* panel = smem_raw + (1024U - smem_addr(smem_raw) % 1024U) % 1024U;
  for (unsigned b = 16U * threadIdx.x; b < 64U * 128U; b += 16U * 128U) {
    std::memset(panel + b, 0, 16);
  }
  read_panel_by_wgmma(panel);
}

// Issues and commits this thread's cp.async copies of the 64 x 128-byte panel from src.
void copy_panel_async(unsigned char* panel, const void* src) {
  const auto* from = static_cast<const unsigned char*>(src);
  for (unsigned b = 16U * threadIdx.x; b < 64U * 128U; b += 16U * 128U) {
    cp_async_16(smem_addr(panel + b), from + b, true);
  }
  cp_async_commit();
}

// Fills the panel by cp.async; p.softmax: the fence comes before the wait that lands the
// copies, so it does not cover them (the right place is after the wait).
void wgmma_fence_before_wait_kernel(const AttnParams p) {
  LONGATTN_DYNAMIC_SHARED(unsigned char, smem_raw);
  unsigned char* panel = smem_raw + (1024U - smem_addr(smem_raw) % 1024U) % 1024U;
  copy_panel_async(panel, p.q);
  if (p.softmax) fence_proxy_async();
  cp_async_wait<0>();
  if (!p.softmax) fence_proxy_async();
  read_panel_by_wgmma(panel);
}

// Fills the panel by cp.async, fenced after the wait. p.softmax: the wgmma is issued before
// the barrier that publishes the panel (and waited for after it: too late, the async proxy may
// read at the issue); else issued after a named barrier (bar.sync 1, 128), which publishes.
void wgmma_issue_before_barrier_kernel(const AttnParams p) {
  LONGATTN_DYNAMIC_SHARED(unsigned char, smem_raw);
  unsigned char* panel = smem_raw + (1024U - smem_addr(smem_raw) % 1024U) % 1024U;
  copy_panel_async(panel, p.q);
  cp_async_wait<0>();
  fence_proxy_async();
  const WgmmaDesc d = wgmma_desc(smem_addr(panel), 16, 1024);
  float s[8][4] = {};
  if (!p.softmax) named_barrier_sync(1, 128);
  wgmma_fence();
  wgmma_ss<__nv_bfloat16, 64>(s, d, d, false);
  wgmma_commit();
  if (p.softmax) __syncthreads();
  wgmma_wait<0>();
}

void test_async_proxy() {
  const int panel_smem = 64 * 128 + 1024;
  std::vector<unsigned char> zeros(64 * 128, 0);
  AttnParams p{};
  p.q = zeros.data();
  for (auto* kernel :
       {wgmma_unfenced_kernel, wgmma_fence_before_wait_kernel, wgmma_issue_before_barrier_kernel}) {
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, panel_smem);
  }
  p.softmax = false;  // fence after the wait: correct
  launch_kernel(wgmma_fence_before_wait_kernel, dim3(1), dim3(128), panel_smem, nullptr, p);
  expect(cudaGetLastError() == cudaSuccess, "cp.async, wait, fence.proxy.async, barrier, wgmma");
  launch_kernel(wgmma_issue_before_barrier_kernel, dim3(1), dim3(128), panel_smem, nullptr, p);
  expect(cudaGetLastError() == cudaSuccess,
         "cp.async, wait, fence.proxy.async, named barrier, wgmma");
  std::fprintf(stderr, "(the three emulator diagnostics below are expected)\n");
  launch_kernel(wgmma_unfenced_kernel, dim3(1), dim3(128), panel_smem, nullptr, p);
  expect(cudaGetLastError() == cudaErrorLaunchFailure,
         "wgmma reading stores that no fence.proxy.async published fails");
  p.softmax = true;  // fence before the wait
  launch_kernel(wgmma_fence_before_wait_kernel, dim3(1), dim3(128), panel_smem, nullptr, p);
  expect(cudaGetLastError() == cudaErrorLaunchFailure,
         "wgmma reading cp.async data that landed after the thread's fence fails");
  launch_kernel(wgmma_issue_before_barrier_kernel, dim3(1), dim3(128), panel_smem, nullptr, p);
  expect(cudaGetLastError() == cudaErrorLaunchFailure,
         "wgmma issued before the barrier that publishes its operands fails");
}

// ---- cp.reduce.async.bulk: 128 threads stage 4 floats each, thread 0 adds the 2 KB to p.out ----
// p.group picks a fault: 0 none, 1 no fence.proxy.async before the barrier, 2 the staging written
// again before the wait, 3 no wait before the return, 4 a size not a multiple of 16 bytes.
constexpr int kBulkThreads = 128;
void bulk_reduce_kernel(const AttnParams p) {
  LONGATTN_DYNAMIC_SHARED(unsigned char, smem_raw);
  auto* stage = reinterpret_cast<float*>(smem_raw + (16U - smem_addr(smem_raw) % 16U) % 16U);
  const int t = static_cast<int>(threadIdx.x);
  for (int e = 0; e < 4; ++e) stage[4 * t + e] = static_cast<float>(4 * t + e);
  if (p.group != 1) fence_proxy_async();
  __syncthreads();
  if (t == 0) {
    bulk_reduce_add_f32(static_cast<float*>(p.out), smem_addr(stage),
                        p.group == 4 ? 2040U : 16U * kBulkThreads);
    bulk_commit();
  }
  if (p.group == 2) {
    __syncthreads();
    stage[4 * t] = -1.0F;
    __syncthreads();
  }
  if (t == 0 && p.group != 3) bulk_wait_read<0>();
}

void test_bulk_reduce() {
  const int smem = 16 * kBulkThreads + 16;
  std::vector<float> out(4 * kBulkThreads, 0.5F);
  AttnParams p{};
  p.out = out.data();
  p.group = 0;
  launch_kernel(bulk_reduce_kernel, dim3(2), dim3(kBulkThreads), smem, nullptr, p);
  bool sums = cudaGetLastError() == cudaSuccess;
  for (int i = 0; i < 4 * kBulkThreads; ++i) sums &= out[i] == 0.5F + 2.0F * static_cast<float>(i);
  expect(sums, "cp.reduce.async.bulk adds the staged floats of each block into global memory");
  std::fprintf(stderr, "(the four emulator diagnostics below are expected)\n");
  const char* faults[] = {
      "cp.reduce.async.bulk of stores no fence.proxy.async published fails",
      "cp.reduce.async.bulk whose source is written before the wait fails",
      "a thread returning with a cp.reduce.async.bulk not waited for fails",
      "cp.reduce.async.bulk of a size not a multiple of 16 bytes fails",
  };
  for (int g = 1; g <= 4; ++g) {
    p.group = g;
    launch_kernel(bulk_reduce_kernel, dim3(1), dim3(kBulkThreads), smem, nullptr, p);
    expect(cudaGetLastError() == cudaErrorLaunchFailure, faults[g - 1]);
  }
}

// ---- thread orders: which warp runs when, between warp collectives ----
constexpr int kOrderWarps = 4;
constexpr int kOrderRounds = 6;
// p.out: [0] the log's length, then the warp of each round's lane 0 in the order they ran (the
// emulator runs one thread at a time, so the plain increment is safe).
void order_kernel(const AttnParams p) {
  auto* log = static_cast<int*>(p.out);
  const int tid = static_cast<int>(threadIdx.x);
  for (int round = 0; round < kOrderRounds; ++round) {
    (void)__shfl_sync(0xffffffffU, tid, 0);  // every lane of the warp: a point where it yields
    if (tid % 32 == 0) log[1 + log[0]++] = tid / 32;
  }
}

// One warp: each lane logs its lane after a collective (in the greedy orders the lane that
// completes the collective runs on first, then the others in scan order).
void lane_order_kernel(const AttnParams p) {
  auto* log = static_cast<int*>(p.out);
  const int lane = static_cast<int>(threadIdx.x);
  (void)__shfl_sync(0xffffffffU, lane, 0);
  log[1 + log[0]++] = lane;
}

/// Runs `kernel` over `blocks` blocks of `threads` under LONGATTN_EMU_SCHEDULE=`order` (empty:
/// unset) and returns its log (see order_kernel), empty when the launch failed or the log is
/// not `entries` long. `first`: as the process's first launch (the random order also draws
/// from the launch's number), else as the next one.
std::vector<int> logged_order(void (*kernel)(AttnParams), int blocks, int threads, int entries,
                              const char* order, bool first = true) {
  if (first) ::longattn::emu::restart_launch_numbering();
  if (*order != '\0') {
    setenv("LONGATTN_EMU_SCHEDULE", order, 1);
  } else {
    unsetenv("LONGATTN_EMU_SCHEDULE");
  }
  std::vector<int> log(static_cast<std::size_t>(1 + entries), 0);
  AttnParams p{};
  p.out = log.data();
  launch_kernel(kernel, dim3(blocks), dim3(threads), 0, nullptr, p);
  unsetenv("LONGATTN_EMU_SCHEDULE");
  if (cudaGetLastError() != cudaSuccess || log[0] != entries) return {};
  return {log.begin() + 1, log.end()};
}

/// The warp order of one block of order_kernel.
std::vector<int> warp_order(const char* order, bool first = true) {
  return logged_order(order_kernel, 1, 32 * kOrderWarps, kOrderWarps * kOrderRounds, order, first);
}

/// Warp w's rounds all in a row, in warp order `first, first + step, ...`.
std::vector<int> warp_by_warp(int first, int step) {
  std::vector<int> out;
  for (int w = first; w >= 0 && w < kOrderWarps; w += step) out.insert(out.end(), kOrderRounds, w);
  return out;
}

void test_schedule_orders() {
  const char* saved = std::getenv("LONGATTN_EMU_SCHEDULE");
  const std::string restore = saved != nullptr ? saved : "";
  expect(warp_order("") == warp_by_warp(0, 1) && warp_order("forward") == warp_by_warp(0, 1),
         "forward order (default): warp 0 runs ahead, then warp 1, ...");
  expect(warp_order("reverse") == warp_by_warp(kOrderWarps - 1, -1),
         "reverse order: the last warp runs ahead, then the one before, ...");
  // random:SEED: the same interleaving for the same seed; warps interleaved between
  // collectives for most seeds (each block draws how long it stays on a warp).
  bool repeatable = true;
  bool complete = true;
  int interleaved = 0;
  int relaunch_differs = 0;
  std::vector<std::vector<int>> seen;
  for (int seed = 1; seed <= 8; ++seed) {
    const std::string order = "random:" + std::to_string(seed);
    const std::vector<int> a = warp_order(order.c_str());
    repeatable &= a == warp_order(order.c_str());
    relaunch_differs += a != warp_order(order.c_str(), false) ? 1 : 0;
    for (int w = 0; w < kOrderWarps; ++w) {
      complete &= static_cast<int>(std::count(a.begin(), a.end(), w)) == kOrderRounds;
    }
    int runs = 1;  // maximal runs of one warp; kOrderWarps when warp by warp
    for (std::size_t i = 1; i < a.size(); ++i) runs += a[i] != a[i - 1] ? 1 : 0;
    interleaved += runs > kOrderWarps ? 1 : 0;
    seen.push_back(a);
  }
  expect(complete && repeatable, "random order: every round runs; a seed repeats its order");
  expect(interleaved >= 4 && seen[0] != seen[1],
         "random order: warps interleave between collectives, differently per seed");
  expect(relaunch_differs >= 4, "random order: the next launch of a seed interleaves differently");
  expect(warp_order("random") == warp_order("random:1"), "random is random:1");
  // Lanes: the greedy order resumes them in scan order; the random one in a random order.
  std::vector<int> greedy_lanes(1, 31);
  for (int l = 0; l < 31; ++l) greedy_lanes.push_back(l);
  int shuffled = 0;      // seeds whose lane order differs from the greedy one
  int permutations = 0;  // seeds whose log holds every lane once
  for (int seed = 1; seed <= 4; ++seed) {
    const std::string order = "random:" + std::to_string(seed);
    const std::vector<int> lanes = logged_order(lane_order_kernel, 1, 32, 32, order.c_str());
    shuffled += lanes != greedy_lanes ? 1 : 0;
    permutations += lanes.size() == greedy_lanes.size() &&
                            std::is_permutation(lanes.begin(), lanes.end(), greedy_lanes.begin())
                        ? 1
                        : 0;
  }
  expect(logged_order(lane_order_kernel, 1, 32, 32, "") == greedy_lanes && shuffled == 4 &&
             permutations == 4,
         "random order: lanes of a warp resume in a random order");
  // Blocks: each draws its own stream (two blocks of one launch interleave differently).
  int blocks_differ = 0;
  const int per_block = kOrderWarps * kOrderRounds;
  for (int seed = 1; seed <= 8; ++seed) {
    const std::string order = "random:" + std::to_string(seed);
    const std::vector<int> two =
        logged_order(order_kernel, 2, 32 * kOrderWarps, 2 * per_block, order.c_str());
    blocks_differ +=
        two.size() == static_cast<std::size_t>(2 * per_block) &&
                !std::equal(two.begin(), two.begin() + per_block, two.begin() + per_block)
            ? 1
            : 0;
  }
  expect(blocks_differ >= 4, "random order: the blocks of a launch interleave differently");
  // The fault checks hold in the random order too.
  setenv("LONGATTN_EMU_SCHEDULE", "random:3", 1);
  std::fprintf(stderr, "(the two emulator diagnostics below are expected)\n");
  launch_kernel(divergent_kernel, dim3(1), dim3(32), 0, nullptr, AttnParams{});
  const bool divergent_fails = cudaGetLastError() == cudaErrorLaunchFailure;
  launch_kernel(lanes_exit_kernel, dim3(2), dim3(64), 0, nullptr, AttnParams{});
  const bool deadlock_fails = cudaGetLastError() == cudaErrorLaunchFailure;
  unsetenv("LONGATTN_EMU_SCHEDULE");
  expect(divergent_fails && deadlock_fails,
         "random order: a divergent warp collective and a deadlocked warp fail");
  std::fprintf(stderr, "(the two emulator diagnostics below are expected)\n");
  expect(warp_order("random:x").empty() && warp_order("sideways").empty(),
         "an unknown LONGATTN_EMU_SCHEDULE fails the launch");
  if (!restore.empty()) setenv("LONGATTN_EMU_SCHEDULE", restore.c_str(), 1);
}

void test_faults() {
  const AttnParams p{};
  std::fprintf(stderr, "(the four emulator diagnostics below are expected)\n");
  launch_kernel(divergent_kernel, dim3(1), dim3(32), 0, nullptr, p);
  expect(cudaGetLastError() == cudaErrorLaunchFailure, "divergent warp collective fails");
  launch_kernel(lanes_exit_kernel, dim3(2), dim3(64), 0, nullptr, p);
  expect(cudaGetLastError() == cudaErrorLaunchFailure, "deadlocked warp fails");
  const int panel_smem = 64 * 128 + 1024;
  cudaFuncSetAttribute(wgmma_write_in_flight_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                       panel_smem);
  launch_kernel(wgmma_write_in_flight_kernel, dim3(1), dim3(128), panel_smem, nullptr, p);
  expect(cudaGetLastError() == cudaErrorLaunchFailure,
         "writing the accumulators of a wgmma in flight fails");
  launch_kernel(shuffle_kernel, dim3(1), dim3(128), 64 * 1024, nullptr, p);
  expect(cudaGetLastError() == cudaErrorInvalidValue,
         "64 KB of dynamic shared memory without the attribute fails");
}

}  // namespace
}  // namespace longattn::detail::cuda

int main() {
  using namespace longattn::detail::cuda;
  test_mma();
  test_wgmma();
  test_shuffles();
  test_cp_async();
  test_named_barriers();
  test_schedule_orders();
  test_async_proxy();
  test_bulk_reduce();
  test_faults();
  std::printf("%s\n", failures == 0 ? "emulator self-test: all ok" : "emulator self-test: FAILED");
  return failures == 0 ? 0 : 1;
}
