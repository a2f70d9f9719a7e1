// SPDX-License-Identifier: Apache-2.0
// Self-test of the CUDA emulator (src/cuda/emu), built only with LONGATTN_CUDA_EMULATOR: the
// fragment layouts of ldmatrix + mma against a scalar product, shuffles, __syncthreads_or,
// cp.async poisoning, and that a divergent warp, a deadlock, and too much dynamic shared
// memory fail the launch. Exit status 0 when every check holds.
#include <cstdio>
#include <cstring>
#include <vector>

#include "cuda/common/device.cuh"
#include "cuda/common/ptx.cuh"

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

void test_faults() {
  const AttnParams p{};
  std::fprintf(stderr, "(the three emulator diagnostics below are expected)\n");
  launch_kernel(divergent_kernel, dim3(1), dim3(32), 0, nullptr, p);
  expect(cudaGetLastError() == cudaErrorLaunchFailure, "divergent warp collective fails");
  launch_kernel(lanes_exit_kernel, dim3(2), dim3(64), 0, nullptr, p);
  expect(cudaGetLastError() == cudaErrorLaunchFailure, "deadlocked warp fails");
  launch_kernel(shuffle_kernel, dim3(1), dim3(128), 64 * 1024, nullptr, p);
  expect(cudaGetLastError() == cudaErrorInvalidValue,
         "64 KB of dynamic shared memory without the attribute fails");
}

}  // namespace
}  // namespace longattn::detail::cuda

int main() {
  using namespace longattn::detail::cuda;
  test_mma();
  test_shuffles();
  test_cp_async();
  test_faults();
  std::printf("%s\n", failures == 0 ? "emulator self-test: all ok" : "emulator self-test: FAILED");
  return failures == 0 ? 0 : 1;
}
