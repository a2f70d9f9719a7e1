// SPDX-License-Identifier: Apache-2.0
// The CUDA emulator: the fiber scheduler behind emu_device.hpp and the subset of the CUDA runtime
// API that longattn calls, on host memory. Only in LONGATTN_CUDA_EMULATOR builds, where it
// replaces libcudart: "device" pointers are host pointers, copies are memcpy, and a launch runs
// the kernel's blocks one after another on this thread.
#include <cuda_runtime_api.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "cuda/emu/emu_device.hpp"
#include "cuda/emu/ptx_emu.hpp"

namespace longattn::emu {
namespace {

constexpr std::size_t kStackBytes = 256 * 1024;
constexpr std::size_t kMaxDynamicSmem = 227 * 1024;
constexpr std::size_t kDefaultDynamicSmem = 48 * 1024;

struct Copy {
  std::uintptr_t dst;
  const void* src;
  std::size_t bytes;  // 4, 8 or 16
  bool valid;
};
/// A cp.async copy landed in shared memory but not yet fenced for the async proxy.
struct LandedCopy {
  std::size_t offset;  // from the start of the block's shared memory
  std::size_t bytes;
};

/// A cp.reduce.async.bulk .add.f32 in flight: its source as it was at the issue.
struct BulkReduce {
  float* dst;
  std::size_t offset;  // of the source, from the start of the block's shared memory
  std::vector<unsigned char> source;
};

enum class State : std::uint8_t { kReady, kWaitWarp, kWaitBlock, kWaitNamed, kDone };

/// One named barrier of a block (bar.sync / bar.arrive id, count).
struct NamedBarrier {
  int arrived = 0;
  int threads = 0;  // the count of the phase under way (0: none)
  std::uint64_t generation = 0;
};
constexpr int kNamedBarriers = 16;

// ---- Execution contexts: a saved stack pointer on x86-64 (callee-saved registers, MXCSR and
// the x87 control word pushed on the fiber's stack; ~20x cheaper than swapcontext, which makes
// a system call per switch), ucontext elsewhere.
#if defined(__x86_64__)
extern "C" void longattn_emu_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .p2align 4
    .globl longattn_emu_switch
    .type longattn_emu_switch, @function
longattn_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size longattn_emu_switch, .-longattn_emu_switch
)");

struct Context {
  void* sp = nullptr;
  const void* stack_bottom = nullptr;  // for AddressSanitizer's fiber annotations
  std::size_t stack_size = 0;
};
/// Prepares `c` to start `entry` (which never returns) on [stack, stack + bytes).
void make_context(Context& c, char* stack, std::size_t bytes, void (*entry)()) {
#if defined(__SANITIZE_ADDRESS__)
  __asan_unpoison_memory_region(stack, bytes);  // redzones of frames a failed launch abandoned
#endif
  auto top = reinterpret_cast<std::uintptr_t>(stack + bytes) & ~std::uintptr_t{15};
  auto* slot = reinterpret_cast<std::uint64_t*>(top);  // NOLINT(performance-no-int-to-ptr)
  *--slot = 0;                                         // entry's (absent) return address
  *--slot = reinterpret_cast<std::uint64_t>(entry);    // popped by the first switch's ret
  for (int i = 0; i < 6; ++i) *--slot = 0;             // rbp rbx r12 r13 r14 r15
  std::uint32_t control[2] = {0x1f80U, 0x037fU};       // default MXCSR and x87 control word
  asm volatile("stmxcsr %0" : "=m"(control[0]));
  asm volatile("fnstcw %0" : "=m"(control[1]));
  *--slot = static_cast<std::uint64_t>(control[0]) | (static_cast<std::uint64_t>(control[1]) << 32);
  c.sp = slot;
  c.stack_bottom = stack;
  c.stack_size = bytes;
}
/// Switches to `to`; `leaving_for_good` when `from` is a finished fiber.
void switch_context(Context& from, Context& to, bool leaving_for_good = false) {
#if defined(__SANITIZE_ADDRESS__)
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(leaving_for_good ? nullptr : &fake_stack, to.stack_bottom,
                                 to.stack_size);
#else
  (void)leaving_for_good;
#endif
  longattn_emu_switch(&from.sp, to.sp);
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#endif
}
/// First statement of a fiber: completes the switch that started it and records the
/// scheduler's stack (AddressSanitizer only).
void entered_fiber(Context& scheduler) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(nullptr, &scheduler.stack_bottom, &scheduler.stack_size);
#else
  (void)scheduler;
#endif
}
#else
struct Context {
  ucontext_t uc{};
};
void make_context(Context& c, char* stack, std::size_t bytes, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
void switch_context(Context& from, Context& to, bool /*leaving_for_good*/ = false) {
  swapcontext(&from.uc, &to.uc);
}
void entered_fiber(Context& /*scheduler*/) {}
#endif

/// Registers an mma_async in flight owns, with the bytes they must still hold when it runs.
struct GuardedRegisters {
  const unsigned char* address = nullptr;
  std::vector<unsigned char> expected;
  // (No registers, e.g. the A operand of a shared-memory wgmma: address is null, never read.)
  void capture() {
    if (!expected.empty()) std::memcpy(expected.data(), address, expected.size());
  }
  [[nodiscard]] bool unchanged() const {
    return expected.empty() || std::memcmp(expected.data(), address, expected.size()) == 0;
  }
  [[nodiscard]] bool overlaps(const GuardedRegisters& other) const {
    return address < other.address + other.expected.size() &&
           other.address < address + expected.size();
  }
};

struct WgmmaOp {
  std::function<void()> run;
  GuardedRegisters accumulators;
  GuardedRegisters a_fragment;  // empty for shared-memory A
};

struct Fiber {
  Context context;
  char* stack = nullptr;  // kStackBytes from the launch's stack pool
  uint3 index{};
  int linear = 0;
  State state = State::kReady;
  std::uint64_t wait_generation = 0;
  int named_id = 0;               // the named barrier of a kWaitNamed wait
  std::uint64_t collectives = 0;  // warp collectives this lane has entered (buffer parity)
  const char* waiting_at = "";
  std::vector<Copy> open_group;
  std::deque<std::vector<Copy>> groups;
  std::vector<WgmmaOp> wgmma_open;
  std::deque<std::vector<WgmmaOp>> wgmma_groups;
  std::vector<BulkReduce> bulk_open;
  std::deque<std::vector<BulkReduce>> bulk_groups;
  /// Shared-memory offsets of the 16-byte cp.async copies this thread landed since its last
  /// fence.proxy.async: the async proxy does not see them yet.
  std::vector<LandedCopy> unfenced_copies;
};

struct Warp {
  int arrived = 0;
  std::uint64_t generation = 0;
  unsigned char slots[2][32][kWarpSlotBytes] = {};
  const char* tags[2][32] = {};
};

/// The order in which the scheduler resumes runnable threads (LONGATTN_EMU_SCHEDULE).
enum class ScheduleOrder { kForward, kReverse, kRandom };

/// LONGATTN_EMU_SCHEDULE=random[:SEED]: a seeded random interleaving. At each decision the
/// scheduler stays on the warp it ran last with a per-block probability (from fine interleaving,
/// a switch every other step, to long runs like the greedy orders but with warps in random order),
/// else it moves to a random warp with a runnable thread; within a warp it resumes a random
/// runnable lane. Each block of each launch draws its own stream from the seed, the launch's
/// number in the process and the block's index: a repeated call interleaves differently, and
/// the same command with the same seed fails the same way again.
struct RandomScheduler {
  std::uint64_t state = 0;
  int stay_permille = 0;
  int warp = -1;  // the warp resumed last
  /// splitmix64: small, and good enough to pick threads.
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  int below(int n) { return static_cast<int>(next() % static_cast<std::uint64_t>(n)); }
  void start_block(std::uint64_t seed, std::uint64_t launch_number, std::uint64_t block_linear) {
    state = seed * 0x2545f4914f6cdd1dULL;
    state = next() ^ launch_number;
    state = next() ^ block_linear;
    (void)next();
    static constexpr int kStayPermille[] = {500, 900, 990, 999};
    stay_permille = kStayPermille[below(4)];
    warp = -1;
  }
};

struct Launch {
  Kernel kernel = nullptr;
  const detail::cuda::AttnParams* params = nullptr;
  dim3 grid;
  dim3 block;
  uint3 block_index{};
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  int live = 0;
  int scan_from = 0;  // no thread before this position (in schedule order) can run
  int block_arrived = 0;
  std::uint64_t block_generation = 0;
  int block_or = 0;
  int block_or_result = 0;
  NamedBarrier named[kNamedBarriers];
  std::vector<unsigned char> smem;
  /// Shared memory as the async proxy sees it (published at barriers, see fence_proxy_async).
  std::vector<unsigned char> async_view;
  bool proxy_fenced = false;  // a fence.proxy.async ran in this barrier phase
  // A fence.proxy.async ran in this block: from then on landed cp.async copies are tracked (a
  // kernel without wgmma never fences, and its lists would only grow).
  bool proxy_used = false;
  std::size_t smem_bytes = 0;
  Context scheduler;
  Fiber* current = nullptr;
  bool failed = false;
  ScheduleOrder order = ScheduleOrder::kForward;
  std::uint64_t seed = 0;           // of ScheduleOrder::kRandom
  std::uint64_t launch_number = 0;  // launches before this one in the process
  RandomScheduler random;
  std::string failure;
};

Launch* g_launch = nullptr;

Fiber& current() { return *g_launch->current; }

void yield_to_scheduler() { switch_context(current().context, g_launch->scheduler); }

[[noreturn]] void run_fiber() {
  entered_fiber(g_launch->scheduler);
  g_launch->kernel(*g_launch->params);
  if (!current().wgmma_open.empty() || !current().wgmma_groups.empty()) {
    fault("wgmma", "the thread returned with wgmma.mma_async not waited for");
  }
  if (!current().bulk_open.empty() || !current().bulk_groups.empty()) {
    fault("cp.reduce.async.bulk",
          "the thread returned with bulk async-groups not committed or not waited for (the "
          "block's shared memory must outlive their reads)");
  }
  current().state = State::kDone;
  switch_context(current().context, g_launch->scheduler, true);  // never resumed
  std::abort();
}

std::string where() {
  const Fiber& f = current();
  const uint3& b = g_launch->block_index;
  char text[128];
  std::snprintf(text, sizeof text, "block (%u,%u,%u) thread %d", b.x, b.y, b.z, f.linear);
  return text;
}

/// Per-launch operation counts (LONGATTN_EMU_STATS=1 prints them): warp-level instructions of
/// each kind, block barriers, cp.async and global atomic bytes, an instruction mix for reasoning
/// about a kernel's balance without a GPU.
struct Stats {
  std::uint64_t mma = 0, wgmma = 0, ldmatrix = 0, shuffles = 0, barriers = 0, cp_async_bytes = 0,
                atomic_bytes = 0;
};
Stats g_stats;

/// Publishes shared memory to the async proxy at a barrier after a fence.proxy.async: every byte
/// but the cp.async copies landed after their thread's last fence.
void publish_to_async_proxy(Launch& l) {
  std::vector<std::pair<LandedCopy, std::array<unsigned char, 16>>> held;
  for (const Fiber& f : l.fibers) {
    for (const LandedCopy& c : f.unfenced_copies) {
      std::array<unsigned char, 16> old{};
      std::memcpy(old.data(), l.async_view.data() + c.offset, c.bytes);
      held.emplace_back(c, old);
    }
  }
  std::memcpy(l.async_view.data(), l.smem.data(), l.smem.size());
  for (const auto& [c, old] : held) {
    std::memcpy(l.async_view.data() + c.offset, old.data(), c.bytes);
  }
  l.proxy_fenced = false;
}

void release_block() {
  ++g_stats.barriers;
  if (g_launch->proxy_fenced) publish_to_async_proxy(*g_launch);
  g_launch->scan_from = 0;
  g_launch->block_or_result = g_launch->block_or;
  g_launch->block_or = 0;
  g_launch->block_arrived = 0;
  ++g_launch->block_generation;
}

std::string describe_states() {
  std::string out;
  int shown = 0;
  for (const Fiber& f : g_launch->fibers) {
    if (f.state == State::kDone || shown >= 8) continue;
    ++shown;
    out += "  thread " + std::to_string(f.linear) + " waits at " + f.waiting_at + "\n";
  }
  return out;
}

/// Runs the fibers of one block until all return; false when the launch failed.
bool run_block(Launch& launch) {
  const int threads = static_cast<int>(launch.block.x * launch.block.y * launch.block.z);
  launch.live = threads;
  launch.scan_from = 0;
  launch.block_arrived = 0;
  launch.block_or = 0;
  for (NamedBarrier& n : launch.named) n = NamedBarrier{};
  for (Warp& w : launch.warps) w.arrived = 0;
  std::memset(launch.smem.data(), 0xff, launch.smem.size());
  std::memset(launch.async_view.data(), 0xff, launch.async_view.size());
  launch.proxy_fenced = false;
  launch.proxy_used = false;
  for (int i = 0; i < threads; ++i) {
    Fiber& f = launch.fibers[static_cast<std::size_t>(i)];
    f.linear = i;
    f.index = uint3{static_cast<unsigned>(i) % launch.block.x,
                    static_cast<unsigned>(i) / launch.block.x % launch.block.y,
                    static_cast<unsigned>(i) / (launch.block.x * launch.block.y)};
    f.state = State::kReady;
    f.collectives = 0;
    f.waiting_at = "";
    f.open_group.clear();
    f.groups.clear();
    f.wgmma_open.clear();
    f.wgmma_groups.clear();
    f.bulk_open.clear();
    f.bulk_groups.clear();
    f.unfenced_copies.clear();
    make_context(f.context, f.stack, kStackBytes, run_fiber);
  }
  // Greedy order: always the lowest-numbered thread that can run (the highest with
  // LONGATTN_EMU_SCHEDULE=reverse). One warp thus runs ahead to the next __syncthreads before
  // the next warp starts, the most skewed interleaving a block can have, so a missing barrier
  // (a buffer refilled while another warp still reads it) shows in one order or the other.
  // LONGATTN_EMU_SCHEDULE=random:SEED interleaves warps (and lanes) at random instead
  // (RandomScheduler), for races that neither greedy order exposes.
  auto runnable = [&launch](const Fiber& f) {
    switch (f.state) {
      case State::kDone:
        return false;
      case State::kWaitWarp:
        return launch.warps[static_cast<std::size_t>(f.linear / 32)].generation !=
               f.wait_generation;
      case State::kWaitBlock:
        return launch.block_generation != f.wait_generation;
      case State::kWaitNamed:
        return launch.named[f.named_id].generation != f.wait_generation;
      default:
        return true;
    }
  };
  // A random runnable lane of warp w, or null.
  auto random_lane = [&launch, &runnable](int w) -> Fiber* {
    Fiber* lanes[32];
    int count = 0;
    for (int n = 32 * w; n < 32 * (w + 1); ++n) {
      Fiber& f = launch.fibers[static_cast<std::size_t>(n)];
      if (runnable(f)) lanes[count++] = &f;
    }
    return count == 0 ? nullptr : lanes[launch.random.below(count)];
  };
  auto pick_random = [&launch, &runnable, &random_lane]() -> Fiber* {
    RandomScheduler& r = launch.random;
    if (r.warp >= 0 && r.below(1000) < r.stay_permille) {
      if (Fiber* f = random_lane(r.warp)) return f;
    }
    int warps[32];  // at most 1024 threads
    int count = 0;
    for (std::size_t w = 0; w < launch.warps.size(); ++w) {
      for (std::size_t n = 32 * w; n < 32 * (w + 1); ++n) {
        if (runnable(launch.fibers[n])) {
          warps[count++] = static_cast<int>(w);
          break;
        }
      }
    }
    if (count == 0) return nullptr;
    r.warp = warps[r.below(count)];
    return random_lane(r.warp);
  };
  if (launch.order == ScheduleOrder::kRandom) {
    const uint3& b = launch.block_index;
    launch.random.start_block(launch.seed, launch.launch_number,
                              b.x + static_cast<std::uint64_t>(launch.grid.x) *
                                        (b.y + static_cast<std::uint64_t>(launch.grid.y) * b.z));
  }
  while (launch.live > 0) {
    Fiber* next = nullptr;
    if (launch.order == ScheduleOrder::kRandom) {
      next = pick_random();
    } else {
      for (int n = launch.scan_from; n < threads && next == nullptr; ++n) {
        Fiber& f = launch.fibers[static_cast<std::size_t>(
            launch.order == ScheduleOrder::kReverse ? threads - 1 - n : n)];
        if (runnable(f)) {
          next = &f;
          launch.scan_from = n;
        }
      }
    }
    if (next == nullptr) {
      const uint3& b = launch.block_index;
      launch.failure = "deadlock in block (" + std::to_string(b.x) + "," + std::to_string(b.y) +
                       "," + std::to_string(b.z) + "): no thread can proceed\n" + describe_states();
      launch.failed = true;
      return false;
    }
    next->state = State::kReady;
    launch.current = next;
    switch_context(launch.scheduler, next->context);
    if (launch.failed) return false;
    if (next->state == State::kDone) {
      --launch.live;
      // Threads that returned no longer take part in __syncthreads (as on the GPU).
      if (launch.block_arrived > 0 && launch.block_arrived == launch.live) release_block();
    }
  }
  return true;
}

std::mutex g_launch_mutex;
std::uint64_t g_launch_number = 0;  // under g_launch_mutex
cudaError_t g_last_error = cudaSuccess;
std::map<const void*, int> g_max_dynamic_smem;
std::mutex g_event_mutex;
std::set<const void*> g_live_events;  // created and not yet destroyed

cudaError_t record(cudaError_t e) {
  if (e != cudaSuccess) g_last_error = e;
  return e;
}

}  // namespace

const uint3& thread_index() { return current().index; }
const uint3& block_index() { return g_launch->block_index; }
const dim3& block_dim() { return g_launch->block; }
const dim3& grid_dim() { return g_launch->grid; }
int lane() { return current().linear % 32; }
unsigned char* dynamic_shared_memory() { return g_launch->smem.data(); }

void fault(const char* what, const char* detail) {
  g_launch->failure = std::string(what) + ": " + detail + " (" + where() + ")";
  g_launch->failed = true;
  switch_context(current().context, g_launch->scheduler, true);  // a failed launch never resumes
  std::abort();
}

void check_shared_range(std::uintptr_t address, std::size_t bytes, std::size_t alignment,
                        const char* what) {
  const auto base = reinterpret_cast<std::uintptr_t>(g_launch->smem.data());
  if (address % alignment != 0) fault(what, "shared address is misaligned");
  if (address < base || address + bytes > base + g_launch->smem_bytes) {
    fault(what, "shared address outside the block's dynamic shared memory");
  }
}

void sync_block() { (void)sync_block_or(0); }

int sync_block_or(int predicate) {
  Launch& l = *g_launch;
  Fiber& f = current();
  l.block_or |= predicate != 0 ? 1 : 0;
  ++l.block_arrived;
  if (l.block_arrived == l.live) {
    release_block();
    return l.block_or_result;
  }
  f.state = State::kWaitBlock;
  f.wait_generation = l.block_generation;
  f.waiting_at = "__syncthreads";
  yield_to_scheduler();
  return l.block_or_result;
}

void named_barrier(int id, int threads, bool wait) {
  Launch& l = *g_launch;
  Fiber& f = current();
  const int block_threads = static_cast<int>(l.block.x * l.block.y * l.block.z);
  if (id < 1 || id >= kNamedBarriers) fault("bar.sync / bar.arrive", "barrier id outside 1..15");
  if (threads <= 0 || threads % 32 != 0 || threads > block_threads) {
    fault("bar.sync / bar.arrive", "thread count not a multiple of 32 within the block");
  }
  NamedBarrier& b = l.named[id];
  if (b.threads != 0 && b.threads != threads) {
    fault("bar.sync / bar.arrive", "threads of one phase give different counts");
  }
  b.threads = threads;
  if (++b.arrived == threads) {
    ++g_stats.barriers;
    // As at a block barrier (lenient: any thread's fence in the phase publishes).
    if (l.proxy_fenced) publish_to_async_proxy(l);
    b.arrived = 0;
    b.threads = 0;
    ++b.generation;
    l.scan_from = 0;  // the waiters may sit before this thread in the scan order
    return;
  }
  if (!wait) return;
  f.state = State::kWaitNamed;
  f.named_id = id;
  f.wait_generation = b.generation;
  f.waiting_at = "bar.sync";
  yield_to_scheduler();
}

const unsigned char* warp_exchange(const void* mine, std::size_t bytes, const char* what) {
  Launch& l = *g_launch;
  Fiber& f = current();
  if (bytes > kWarpSlotBytes) fault(what, "warp collective payload too large for the emulator");
  Warp& w = l.warps[static_cast<std::size_t>(f.linear / 32)];
  const int parity = static_cast<int>(f.collectives & 1U);
  ++f.collectives;
  const int lane_id = f.linear % 32;
  std::memcpy(w.slots[parity][lane_id], mine, bytes);
  w.tags[parity][lane_id] = what;
  ++w.arrived;
  if (w.arrived == 32) {
    for (int i = 0; i < 32; ++i) {
      if (w.tags[parity][i] != what && std::strcmp(w.tags[parity][i], what) != 0) {
        // A plain buffer: fault() never returns, so a temporary string would never be freed.
        char detail[160];
        std::snprintf(detail, sizeof detail, "divergent warp: lane %d is at %s instead", i,
                      w.tags[parity][i]);
        fault(what, detail);
      }
    }
    w.arrived = 0;
    ++w.generation;
    if (std::strncmp(what, "mma", 3) == 0) {
      ++g_stats.mma;
    } else if (std::strncmp(what, "ldmatrix", 8) == 0) {
      ++g_stats.ldmatrix;
    } else {
      ++g_stats.shuffles;
    }
    const int first = l.order == ScheduleOrder::kReverse
                          ? static_cast<int>(l.fibers.size()) - 32 * (f.linear / 32 + 1)
                          : 32 * (f.linear / 32);
    l.scan_from = std::min(l.scan_from, first);
  } else {
    f.state = State::kWaitWarp;
    f.wait_generation = w.generation;
    f.waiting_at = what;
    yield_to_scheduler();
  }
  return &w.slots[parity][0][0];
}

void count_atomic(std::size_t bytes) { g_stats.atomic_bytes += bytes; }

void cp_async_queue(std::uintptr_t dst, const void* src, std::size_t bytes, bool valid) {
  g_stats.cp_async_bytes += bytes;
  // In flight, the destination holds neither its old nor its new bytes: poison now (a read of
  // the old contents after the issue, a missing barrier before refilling a buffer, sees NaN),
  // the data lands at the wait that covers it (a read before that wait sees NaN too).
  std::memset(reinterpret_cast<void*>(dst), 0xff, bytes);  // NOLINT(performance-no-int-to-ptr)
  current().open_group.push_back({dst, src, bytes, valid});
}

namespace {
GuardedRegisters guard(WgmmaRegisters r) {
  GuardedRegisters g{static_cast<const unsigned char*>(r.address),
                     std::vector<unsigned char>(r.bytes)};
  g.capture();
  return g;
}
}  // namespace

void wgmma_queue(std::function<void()> op, WgmmaRegisters accumulators, WgmmaRegisters a_fragment) {
  ++g_stats.wgmma;
  current().wgmma_open.push_back({std::move(op), guard(accumulators), guard(a_fragment)});
}
void wgmma_commit_group() {
  Fiber& f = current();
  f.wgmma_groups.push_back(std::move(f.wgmma_open));
  f.wgmma_open.clear();
}
void wgmma_wait_groups(int keep_pending) {
  Fiber& f = current();
  while (static_cast<int>(f.wgmma_groups.size()) > keep_pending) {
    // Run in place (not moved to a local): a fault never returns to this frame, and the
    // fiber's queues are cleared with the block.
    const std::vector<WgmmaOp>& group = f.wgmma_groups.front();
    for (const WgmmaOp& op : group) {
      if (!op.accumulators.unchanged() || !op.a_fragment.unchanged()) {
        fault("wgmma",
              "the accumulators or A registers of an mma_async in flight were "
              "written before the wgmma.wait_group that retires it");
      }
      op.run();
      // The ops chained on these accumulators expect what this one left there (refreshing
      // the ops already run is harmless).
      for (auto& pending : f.wgmma_groups) {
        for (auto& later : pending) {
          if (later.accumulators.overlaps(op.accumulators)) later.accumulators.capture();
        }
      }
      for (auto& later : f.wgmma_open) {
        if (later.accumulators.overlaps(op.accumulators)) later.accumulators.capture();
      }
    }
    f.wgmma_groups.pop_front();
  }
}

void cp_async_commit_group() {
  Fiber& f = current();
  f.groups.push_back(std::move(f.open_group));
  f.open_group.clear();
}

void cp_async_wait_groups(int keep_pending) {
  Fiber& f = current();
  while (static_cast<int>(f.groups.size()) > keep_pending) {
    for (const Copy& c : f.groups.front()) {
      void* dst = reinterpret_cast<void*>(c.dst);  // NOLINT(performance-no-int-to-ptr)
      if (c.valid) {
        std::memcpy(dst, c.src, c.bytes);
      } else {
        std::memset(dst, 0, c.bytes);
      }
      if (g_launch->proxy_used) {
        f.unfenced_copies.push_back(
            {c.dst - reinterpret_cast<std::uintptr_t>(g_launch->smem.data()), c.bytes});
      }
    }
    f.groups.pop_front();
  }
}

void fence_proxy_async() {
  current().unfenced_copies.clear();
  g_launch->proxy_fenced = true;
  g_launch->proxy_used = true;
}

void bulk_reduce_queue(float* dst, std::uintptr_t src, std::size_t bytes) {
  const std::size_t offset = src - reinterpret_cast<std::uintptr_t>(g_launch->smem.data());
  const unsigned char* now = g_launch->smem.data() + offset;
  if (std::memcmp(now, g_launch->async_view.data() + offset, bytes) != 0) {
    fault("cp.reduce.async.bulk",
          "reads shared memory the async proxy may not see: written without a "
          "fence.proxy.async before the barrier that precedes the issue");
  }
  count_atomic(bytes);
  current().bulk_open.push_back({dst, offset, std::vector<unsigned char>(now, now + bytes)});
}

void bulk_commit_group() {
  Fiber& f = current();
  f.bulk_groups.push_back(std::move(f.bulk_open));
  f.bulk_open.clear();
}

void bulk_wait_groups(int keep_pending) {
  Fiber& f = current();
  while (static_cast<int>(f.bulk_groups.size()) > keep_pending) {
    for (const BulkReduce& op : f.bulk_groups.front()) {
      if (std::memcmp(g_launch->smem.data() + op.offset, op.source.data(), op.source.size()) != 0) {
        fault("cp.reduce.async.bulk",
              "its source was written again before the cp.async.bulk.wait_group.read that "
              "covers it");
      }
      for (std::size_t i = 0; i < op.source.size() / sizeof(float); ++i) {
        float value = 0.0F;
        std::memcpy(&value, op.source.data() + i * sizeof(float), sizeof value);
        op.dst[i] += value;
      }
    }
    f.bulk_groups.pop_front();
  }
}

std::uint16_t async_proxy_load_b16(std::uintptr_t address, const char* what) {
  check_shared_range(address, 2, 2, what);
  const std::size_t offset = address - reinterpret_cast<std::uintptr_t>(g_launch->smem.data());
  std::uint16_t now = 0;
  std::uint16_t seen = 0;
  std::memcpy(&now, g_launch->smem.data() + offset, sizeof now);
  std::memcpy(&seen, g_launch->async_view.data() + offset, sizeof seen);
  if (now != seen) {
    fault(what,
          "reads shared memory the async proxy may not see: written without a "
          "fence.proxy.async before the barrier, or refilled before this wgmma retired");
  }
  return now;
}

namespace {
/// LONGATTN_EMU_SCHEDULE: unset, empty or "forward"; "reverse"; "random" or "random:SEED" (a
/// decimal seed, default 1). False, with a message, for anything else.
bool parse_schedule_order(const char* text, ScheduleOrder& order, std::uint64_t& seed) {
  order = ScheduleOrder::kForward;
  seed = 1;
  if (text == nullptr || *text == '\0' || std::strcmp(text, "forward") == 0) return true;
  if (std::strcmp(text, "reverse") == 0) {
    order = ScheduleOrder::kReverse;
    return true;
  }
  if (std::strncmp(text, "random", 6) == 0) {
    const char* rest = text + 6;
    if (*rest == '\0') {
      order = ScheduleOrder::kRandom;
      return true;
    }
    if (*rest == ':' && rest[1] != '\0' &&
        std::strspn(rest + 1, "0123456789") == std::strlen(rest + 1) &&
        std::strlen(rest + 1) <= 19) {
      order = ScheduleOrder::kRandom;
      seed = std::strtoull(rest + 1, nullptr, 10);
      return true;
    }
  }
  std::fprintf(stderr,
               "longattn CUDA emulator: LONGATTN_EMU_SCHEDULE='%s', expected forward, reverse, "
               "random or random:SEED (a decimal seed)\n",
               text);
  return false;
}
}  // namespace

void restart_launch_numbering() {
  const std::lock_guard<std::mutex> lock(g_launch_mutex);
  g_launch_number = 0;
}

cudaError_t launch(Kernel kernel, dim3 grid, dim3 block, std::size_t dynamic_smem,
                   const detail::cuda::AttnParams& params) {
  const std::lock_guard<std::mutex> lock(g_launch_mutex);
  const int threads = static_cast<int>(block.x * block.y * block.z);
  if (threads <= 0 || threads > 1024 || threads % 32 != 0 || grid.x == 0 || grid.y == 0 ||
      grid.z == 0) {
    std::fprintf(stderr, "longattn CUDA emulator: invalid launch configuration\n");
    return record(cudaErrorInvalidConfiguration);
  }
  const auto limit = g_max_dynamic_smem.find(reinterpret_cast<const void*>(kernel));
  const std::size_t allowed = limit != g_max_dynamic_smem.end()
                                  ? static_cast<std::size_t>(limit->second)
                                  : kDefaultDynamicSmem;
  if (dynamic_smem > allowed) {
    std::fprintf(stderr,
                 "longattn CUDA emulator: %zu bytes of dynamic shared memory without "
                 "cudaFuncSetAttribute raising the limit (%zu)\n",
                 dynamic_smem, allowed);
    return record(cudaErrorInvalidValue);
  }
  // LONGATTN_EMU_SKIP_KERNELS=1: launches do nothing, so a benchmark times the host side alone
  // (validation, schedule and work-list lookups, table upload) of each call.
  static const bool skip = std::getenv("LONGATTN_EMU_SKIP_KERNELS") != nullptr;
  if (skip) return cudaSuccess;
  static std::vector<std::unique_ptr<char[]>> stacks;  // reused across launches (under the lock)
  Launch l;
  l.kernel = kernel;
  l.params = &params;
  l.grid = grid;
  l.block = block;
  l.smem_bytes = dynamic_smem;
  if (!parse_schedule_order(std::getenv("LONGATTN_EMU_SCHEDULE"), l.order, l.seed)) {
    return record(cudaErrorInvalidValue);
  }
  l.launch_number = g_launch_number++;
  l.smem.resize(dynamic_smem + 16);  // poisoned per block by run_block
  l.async_view.resize(l.smem.size());
  l.fibers.resize(static_cast<std::size_t>(threads));
  l.warps.resize(static_cast<std::size_t>(threads / 32));
  while (stacks.size() < l.fibers.size()) stacks.emplace_back(new char[kStackBytes]);
  for (std::size_t i = 0; i < l.fibers.size(); ++i) l.fibers[i].stack = stacks[i].get();
  g_launch = &l;
  bool ok = true;
  for (unsigned z = 0; z < grid.z && ok; ++z) {
    for (unsigned y = 0; y < grid.y && ok; ++y) {
      for (unsigned x = 0; x < grid.x && ok; ++x) {
        l.block_index = uint3{x, y, z};
        ok = run_block(l);
      }
    }
  }
  g_launch = nullptr;
  static const bool print_stats = std::getenv("LONGATTN_EMU_STATS") != nullptr;
  if (print_stats) {
    std::fprintf(
        stderr,
        "longattn CUDA emulator: grid (%u,%u,%u) x %d threads, %zu B shared: warp mma "
        "%llu, warpgroup wgmma %llu, ldmatrix %llu, shuffles %llu; barriers %llu; cp.async %.1f "
        "KB; atomics %.1f KB\n",
        grid.x, grid.y, grid.z, threads, dynamic_smem, static_cast<unsigned long long>(g_stats.mma),
        static_cast<unsigned long long>(g_stats.wgmma / 128),
        static_cast<unsigned long long>(g_stats.ldmatrix),
        static_cast<unsigned long long>(g_stats.shuffles),
        static_cast<unsigned long long>(g_stats.barriers),
        static_cast<double>(g_stats.cp_async_bytes) / 1024.0,
        static_cast<double>(g_stats.atomic_bytes) / 1024.0);
  }
  g_stats = Stats{};
  if (!ok) {
    std::fprintf(stderr, "longattn CUDA emulator: kernel fault: %s\n", l.failure.c_str());
    return record(cudaErrorLaunchFailure);
  }
  return cudaSuccess;
}

}  // namespace longattn::emu

// ---- The CUDA runtime API subset, on host memory ----
using longattn::emu::record;

namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && std::atoi(v) > 0 ? std::atoi(v) : fallback;
}
/// Streaming multiprocessors the emulated GPU reports (few, so that small problems take the
/// split-KV paths): LONGATTN_EMU_SMS, default 4.
int emulated_sms() { return env_int("LONGATTN_EMU_SMS", 4); }

struct ErrorText {
  const char* name;
  const char* text;
};
/// The error codes the emulator returns, as the real runtime names and describes them.
ErrorText error_text(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return {"cudaSuccess", "no error"};
    case cudaErrorInvalidValue:
      return {"cudaErrorInvalidValue", "invalid argument"};
    case cudaErrorMemoryAllocation:
      return {"cudaErrorMemoryAllocation", "out of memory"};
    case cudaErrorInvalidDevice:
      return {"cudaErrorInvalidDevice", "invalid device ordinal"};
    case cudaErrorInvalidConfiguration:
      return {"cudaErrorInvalidConfiguration", "invalid configuration argument"};
    case cudaErrorLaunchFailure:
      return {"cudaErrorLaunchFailure",
              "unspecified launch failure (CUDA emulator fault; see stderr)"};
    default:
      return {"cudaErrorUnknown", "unknown error"};
  }
}

void* aligned_block(std::size_t bytes) {
  return std::aligned_alloc(256, ((bytes == 0 ? 1 : bytes) + 255) & ~std::size_t{255});
}

}  // namespace

extern "C" {

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : record(cudaErrorInvalidDevice);
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return record(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "longattn CUDA emulator");
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = emulated_sms();
  prop->sharedMemPerBlock = 48 * 1024;
  prop->sharedMemPerBlockOptin = longattn::emu::kMaxDynamicSmem;
  prop->sharedMemPerMultiprocessor = 228 * 1024;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsPerMultiProcessor = 2048;
  prop->totalGlobalMem = std::size_t{1} << 34;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return record(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = static_cast<int>(longattn::emu::kMaxDynamicSmem);
      return cudaSuccess;
    case cudaDevAttrMultiProcessorCount:
      *value = emulated_sms();
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor:
      *value = 9;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor:
      *value = 0;
      return cudaSuccess;
    default:
      return record(cudaErrorInvalidValue);
  }
}
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t /*stream*/) { return cudaSuccess; }
cudaError_t cudaGetLastError(void) {
  const cudaError_t e = longattn::emu::g_last_error;
  longattn::emu::g_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return longattn::emu::g_last_error; }
const char* cudaGetErrorName(cudaError_t error) { return error_text(error).name; }
const char* cudaGetErrorString(cudaError_t error) { return error_text(error).text; }
cudaError_t cudaMalloc(void** ptr, std::size_t bytes) {
  *ptr = aligned_block(bytes);
  return *ptr != nullptr ? cudaSuccess : record(cudaErrorMemoryAllocation);
}
/// LONGATTN_EMU_POOL_LIMIT=N: stream-ordered allocations above N bytes fail with
/// cudaErrorMemoryAllocation (to exercise the callers' out-of-memory paths).
cudaError_t cudaMallocAsync(void** ptr, std::size_t bytes, cudaStream_t /*stream*/) {
  static const int limit = env_int("LONGATTN_EMU_POOL_LIMIT", 0);
  if (limit > 0 && bytes > static_cast<std::size_t>(limit)) {
    *ptr = nullptr;
    return record(cudaErrorMemoryAllocation);
  }
  return cudaMalloc(ptr, bytes);
}
cudaError_t cudaFree(void* ptr) {
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t cudaFreeAsync(void* ptr, cudaStream_t /*stream*/) { return cudaFree(ptr); }
cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind /*kind*/) {
  if (bytes > 0) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t /*stream*/) {
  return cudaMemcpy(dst, src, bytes, kind);
}
cudaError_t cudaMemsetAsync(void* dst, int value, std::size_t bytes, cudaStream_t /*stream*/) {
  if (bytes > 0) std::memset(dst, value, bytes);
  return cudaSuccess;
}
// Streams and events: the emulator runs each launch to completion when it is issued, so they
// order nothing; handles are checked (a destroyed or unknown event is an error, as on a GPU).
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int /*flags*/) {
  *stream = reinterpret_cast<cudaStream_t>(new char);  // NOLINT: an opaque handle, never freed
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int /*flags*/) {
  const std::lock_guard<std::mutex> lock(longattn::emu::g_event_mutex);
  *event = reinterpret_cast<cudaEvent_t>(new char);  // NOLINT: freed by cudaEventDestroy
  longattn::emu::g_live_events.insert(*event);
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  const std::lock_guard<std::mutex> lock(longattn::emu::g_event_mutex);
  if (longattn::emu::g_live_events.erase(event) == 0) {
    return record(cudaErrorInvalidResourceHandle);
  }
  delete reinterpret_cast<char*>(event);  // NOLINT: allocated by cudaEventCreateWithFlags
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t /*stream*/) {
  const std::lock_guard<std::mutex> lock(longattn::emu::g_event_mutex);
  return longattn::emu::g_live_events.count(event) != 0 ? cudaSuccess
                                                        : record(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaStreamWaitEvent(cudaStream_t /*stream*/, cudaEvent_t event,
                                unsigned int /*flags*/) {
  const std::lock_guard<std::mutex> lock(longattn::emu::g_event_mutex);
  return longattn::emu::g_live_events.count(event) != 0 ? cudaSuccess
                                                        : record(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  if (value < 0 || static_cast<std::size_t>(value) > longattn::emu::kMaxDynamicSmem) {
    return record(cudaErrorInvalidValue);
  }
  const std::lock_guard<std::mutex> lock(longattn::emu::g_launch_mutex);
  longattn::emu::g_max_dynamic_smem[func] = value;
  return cudaSuccess;
}
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void* /*func*/,
                                                          int block_size, std::size_t smem) {
  if (block_size <= 0) return record(cudaErrorInvalidValue);
  const std::size_t by_smem = (228 * 1024) / (smem + 1024);
  const std::size_t by_threads = 2048 / static_cast<std::size_t>(block_size);
  *blocks = static_cast<int>(std::min<std::size_t>({by_smem, by_threads, 32}));
  return cudaSuccess;
}

}  // extern "C"
