// SPDX-License-Identifier: Apache-2.0
// Host side of the CUDA backend: turns a validated Problem into kernel parameters, keeps device
// copies of compiled schedules (with their work lists) in a small cache, and launches.
//
// Work is listed per query tile (forward, dQ) and per key tile (dK/dV), sorted longest-first;
// the kernels run a persistent grid that takes items from a global counter, so causal,
// document and varlen masks keep every SM busy. When (batch x heads x query tiles) cannot fill
// the GPU, long query tiles are split over their key tiles (split-KV) and merged by LSE.
#include "cuda/cuda_backend.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "core/schedule.hpp"
#include "cuda/kernels.hpp"
#include "cuda/work_lists.hpp"
#include "longattn/error.hpp"

namespace longattn::detail::cuda {
namespace {

void check(cudaError_t status, const std::string& operation) {
  if (status != cudaSuccess) {
    throw Error(ErrorKind::kRuntime, operation,
                std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status));
  }
}

/// Makes `device` current for the scope and restores the caller's device after.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device)
      check(cudaSetDevice(device), "cudaSetDevice(" + std::to_string(device) + ")");
  }
  ~DeviceScope() { cudaSetDevice(previous_); }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
};

struct DeviceProps {
  int sms = 0;
  int major = 0;
  int minor = 0;
  std::size_t smem_per_block = 0;  // the opt-in limit of dynamic + static shared memory
  std::string name;
};

const DeviceProps& props(int device) {
  static std::mutex mutex;
  static std::vector<std::unique_ptr<DeviceProps>> cache;
  const std::lock_guard<std::mutex> lock(mutex);
  if (device < 0) throw Error(ErrorKind::kInvalidArgument, "q", "expected a GPU tensor");
  if (static_cast<std::size_t>(device) >= cache.size())
    cache.resize(static_cast<std::size_t>(device) + 1);
  auto& slot = cache[static_cast<std::size_t>(device)];
  if (!slot) {
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess || device >= count) {
      throw Error(ErrorKind::kRuntime, "q",
                  "the tensors are on GPU " + std::to_string(device) + ", which is not usable (" +
                      (status != cudaSuccess ? std::string(cudaGetErrorString(status))
                                             : std::to_string(count) + " GPUs visible") +
                      ")");
    }
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, device),
          "cudaGetDeviceProperties(" + std::to_string(device) + ")");
    slot = std::make_unique<DeviceProps>();
    slot->sms = prop.multiProcessorCount;
    slot->major = prop.major;
    slot->minor = prop.minor;
    slot->smem_per_block = prop.sharedMemPerBlockOptin;
    slot->name = prop.name;
  }
  return *slot;
}

ElemType elem_of(DType d) {
  switch (d) {
    case DType::kF16:
      return ElemType::kF16;
    case DType::kBF16:
      return ElemType::kBF16;
    default:
      return ElemType::kF32;
  }
}

/// Bytes rounded up to 256 (the offset of the next array inside one allocation).
std::size_t aligned(std::size_t bytes) { return (bytes + 255) & ~static_cast<std::size_t>(255); }

/// Host staging of several arrays that go to the device in one allocation and one copy: the
/// staged prefix (add, reserve: zero bytes) is copied; device-only regions (reserve_device,
/// after every staged one) get no host bytes and no initial values.
class Packer {
 public:
  template <class E>
  std::size_t add(const E* data, std::size_t count) {
    require_staging();
    if (count > (std::size_t{1} << 40) / sizeof(E)) {
      throw Error(ErrorKind::kRuntime, "workspace",
                  "table of " + std::to_string(count) + " entries");
    }
    const std::size_t offset = bytes_.size();
    bytes_.resize(offset + aligned(count * sizeof(E)));
    if (count > 0) std::memcpy(bytes_.data() + offset, data, count * sizeof(E));
    return offset;
  }
  template <class E>
  std::size_t add(const std::vector<E>& v) {
    return add(v.data(), v.size());
  }
  std::size_t reserve(std::size_t bytes) {
    require_staging();
    const std::size_t offset = bytes_.size();
    bytes_.resize(offset + aligned(bytes));
    return offset;
  }
  std::size_t reserve_device(std::size_t bytes) {
    const std::size_t offset = size();
    device_only_ += aligned(bytes);
    return offset;
  }
  [[nodiscard]] std::size_t size() const { return bytes_.size() + device_only_; }
  /// The staged prefix: what one copy moves to the device.
  [[nodiscard]] std::size_t staged_size() const { return bytes_.size(); }
  [[nodiscard]] const unsigned char* data() const { return bytes_.data(); }

 private:
  void require_staging() const {
    if (device_only_ != 0) throw std::logic_error("Packer: staged region after a device-only one");
  }
  std::vector<unsigned char> bytes_;
  std::size_t device_only_ = 0;
};

template <class E>
E* at(void* base, std::size_t offset) {
  return reinterpret_cast<E*>(static_cast<unsigned char*>(base) + offset);
}

// ---- Device schedules (cached) ----------------------------------------------------------------

/// A stream of the backend's own per device (non-blocking, never destroyed): cached device
/// work is freed on it, in stream order after the kernels that read it.
cudaStream_t release_stream(int device) {
  // Never destroyed: the caches' destructors run at exit, possibly after function statics.
  static auto* mutex = new std::mutex;
  static auto* streams = new std::map<int, cudaStream_t>;
  const std::lock_guard<std::mutex> lock(*mutex);
  auto it = streams->find(device);
  if (it != streams->end()) return it->second;
  cudaStream_t stream = nullptr;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
        "cudaStreamCreateWithFlags (release stream of GPU " + std::to_string(device) + ")");
  streams->emplace(device, stream);
  return stream;
}

/// A ScheduleSet on one device with the work lists derived from it. Its memory is stream
/// ordered: allocated and uploaded on the stream of the call that built it (no device-wide
/// synchronization, so a decode step with a new KV length does not stall the host), read by
/// kernels on any stream (WorkUse orders them after the upload and records their end), and freed
/// on the release stream after every recorded use.
struct DeviceWork {
  std::shared_ptr<const ScheduleSet> host;  // kept alive: its address is the cache key
  int device = 0;
  std::int64_t hkv = 0;
  int slots_per_gpu = 0;
  bool packed = false;    // forward items cover a KV head's whole query group (GQA packing)
  bool backward = false;  // holds the transposed schedules and the dQ and dK/dV lists
  void* memory = nullptr;
  // Recorded after the upload, on the building call's stream (created before the allocation:
  // set whenever `memory` is).
  cudaEvent_t uploaded = nullptr;
  DeviceSchedule sched;
  const RowWork* fwd_work = nullptr;  // split-KV items when the GPU would idle
  std::int32_t num_fwd_work = 0;
  const MergeWork* merge_work = nullptr;
  std::int32_t num_merge_work = 0;
  std::int64_t num_parts = 0;
  const RowWork* full_work = nullptr;  // one item per query tile (dQ)
  std::int32_t num_full_work = 0;
  const ColWork* col_work = nullptr;
  std::int32_t num_col_work = 0;

  DeviceWork() = default;
  DeviceWork(const DeviceWork&) = delete;
  DeviceWork& operator=(const DeviceWork&) = delete;
  ~DeviceWork() {
    // No throwing here: at exit the runtime may already be unloading (errors are ignored).
    if (memory == nullptr && uploaded == nullptr) return;
    int previous = 0;
    if (cudaGetDevice(&previous) != cudaSuccess) return;
    cudaSetDevice(device);
    bool freed = memory == nullptr;  // the upload failed: only the event is left
    if (!freed && !unordered_use) {
      try {
        cudaStream_t release = release_stream(device);
        // A wait that fails would let the free overtake a reader: then the fallback below.
        bool ordered = cudaStreamWaitEvent(release, uploaded, 0) == cudaSuccess;
        for (const auto& [stream, event] : last_use) {
          ordered = ordered && cudaStreamWaitEvent(release, event, 0) == cudaSuccess;
        }
        freed = ordered && cudaFreeAsync(memory, release) == cudaSuccess;
      } catch (...) {  // NOLINT(bugprone-empty-catch): no release stream; freed below
      }
    }
    if (!freed) {
      // cudaFree does not wait for the readers of stream-ordered memory: wait for the device.
      cudaDeviceSynchronize();
      cudaFree(memory);
    }
    if (uploaded != nullptr) cudaEventDestroy(uploaded);  // released once it has completed
    for (const auto& [stream, event] : last_use) cudaEventDestroy(event);
    (void)cudaGetLastError();  // what failed here must not be reported by the evicting call
    cudaSetDevice(previous);
  }

  /// Kernels that read this work are about to be enqueued on `stream`: orders them after the
  /// upload (always: a stream handle may name another stream than the upload's, as
  /// cudaStreamPerThread does on each thread). Call end_use(stream) once they are enqueued.
  void begin_use(cudaStream_t stream) const {
    check(cudaStreamWaitEvent(stream, uploaded, 0), "cudaStreamWaitEvent (block schedule)");
  }
  /// Records the end of the kernels just enqueued on `stream`: the memory is freed after them.
  void end_use(cudaStream_t stream) const noexcept {
    try {
      const std::lock_guard<std::mutex> lock(uses_mutex);
      auto it = std::find_if(last_use.begin(), last_use.end(),
                             [&](const auto& u) { return u.first == stream; });
      if (it == last_use.end()) {
        cudaEvent_t event = nullptr;
        if (cudaEventCreateWithFlags(&event, cudaEventDisableTiming) != cudaSuccess) {
          unordered_use = true;
          return;
        }
        last_use.emplace_back(stream, event);
        it = last_use.end() - 1;
      } else {
        // The same handle may name a new stream (the old one destroyed with work pending, or
        // cudaStreamPerThread on another thread): it inherits the old use before the event moves.
        if (cudaStreamWaitEvent(stream, it->second, 0) != cudaSuccess) unordered_use = true;
      }
      if (cudaEventRecord(it->second, stream) != cudaSuccess) unordered_use = true;
    } catch (...) {
      unordered_use = true;
    }
  }

 private:
  mutable std::mutex uses_mutex;
  mutable std::vector<std::pair<cudaStream_t, cudaEvent_t>> last_use;  // one event per stream
  // A use without a recorded event: the destructor waits for the whole device before freeing.
  mutable std::atomic<bool> unordered_use{false};
};

/// Marks the kernels enqueued in its scope as readers of a DeviceWork (see DeviceWork::begin_use).
class WorkUse {
 public:
  WorkUse(const DeviceWork& work, cudaStream_t stream) : work_(work), stream_(stream) {
    work_.begin_use(stream_);
  }
  ~WorkUse() { work_.end_use(stream_); }
  WorkUse(const WorkUse&) = delete;
  WorkUse& operator=(const WorkUse&) = delete;

 private:
  const DeviceWork& work_;
  cudaStream_t stream_;
};

/// LONGATTN_CUDA_ROW_SPANS=0 marks every PARTIAL tile kRowSpanUseBits, so the kernels test the
/// bitmasks alone (the A/B in bench/gpu_job.sh); unset or 1: row spans where they apply.
bool row_spans_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("LONGATTN_CUDA_ROW_SPANS");
    if (v == nullptr || *v == '\0' || std::strcmp(v, "1") == 0) return true;
    if (std::strcmp(v, "0") == 0) return false;
    throw Error(ErrorKind::kInvalidArgument, "LONGATTN_CUDA_ROW_SPANS",
                "unknown value '" + std::string(v) + "', expected 0 or 1");
  }();
  return enabled;
}

std::unique_ptr<DeviceWork> build_device_work(const Problem& p,
                                              const std::shared_ptr<const ScheduleSet>& set,
                                              int slots_per_gpu, int tile_q, int tile_k,
                                              bool packed, bool backward, cudaStream_t stream) {
  auto w = std::make_unique<DeviceWork>();
  w->host = set;
  w->device = p.device_index;
  w->hkv = p.hkv;
  w->slots_per_gpu = slots_per_gpu;
  w->packed = packed;
  w->backward = backward;

  // Concatenate the distinct schedules and their transposes.
  std::vector<SlotEntry> slots;
  std::vector<std::int64_t> entry_base, row_offsets, col_offsets;
  std::vector<std::int32_t> key_tile, row_bits, q_tile, col_bits;
  std::vector<std::uint64_t> bits;
  std::vector<std::uint32_t> row_spans;
  std::vector<ColumnSchedule> columns;
  for (const auto& s : set->slots()) {
    SlotEntry e;
    e.row_offsets = static_cast<std::int64_t>(row_offsets.size());
    e.col_offsets = static_cast<std::int64_t>(col_offsets.size());
    e.bits = static_cast<std::int64_t>(bits.size());
    e.spans = static_cast<std::int64_t>(row_spans.size());
    e.q_tiles = static_cast<std::int32_t>(s->q_tiles);
    e.k_tiles = static_cast<std::int32_t>(s->k_tiles);
    slots.push_back(e);
    entry_base.push_back(static_cast<std::int64_t>(key_tile.size()));
    row_offsets.insert(row_offsets.end(), s->row_offsets.begin(), s->row_offsets.end());
    key_tile.insert(key_tile.end(), s->key_tile.begin(), s->key_tile.end());
    row_bits.insert(row_bits.end(), s->bits_index.begin(), s->bits_index.end());
    bits.insert(bits.end(), s->bits.begin(), s->bits.end());
    const std::vector<std::uint32_t> spans =
        row_spans_enabled()
            ? partial_tile_row_spans(*s)
            : std::vector<std::uint32_t>(static_cast<std::size_t>(s->partial_tiles() * s->tile_q),
                                         kRowSpanUseBits);
    row_spans.insert(row_spans.end(), spans.begin(), spans.end());
    if (!backward) continue;  // the forward walks the row schedules only
    columns.push_back(transpose_schedule(*s));
    const ColumnSchedule& c = columns.back();
    col_offsets.insert(col_offsets.end(), c.col_offsets.begin(), c.col_offsets.end());
    q_tile.insert(q_tile.end(), c.q_tile.begin(), c.q_tile.end());
    col_bits.insert(col_bits.end(), c.bits_index.begin(), c.bits_index.end());
  }
  std::vector<std::int32_t> slot_of(static_cast<std::size_t>(p.batch * p.hq));
  for (std::int64_t b = 0; b < p.batch; ++b) {
    for (std::int64_t h = 0; h < p.hq; ++h) {
      slot_of[static_cast<std::size_t>(b * p.hq + h)] = set->slot_index(b, h);
    }
  }

  const WorkLists lists =
      build_work_lists(p, *set, backward ? &columns : nullptr, slots_per_gpu, tile_k, packed);
  const std::vector<RowWork>& fwd = lists.fwd;
  const std::vector<MergeWork>& merges = lists.merges;
  const std::vector<RowWork>& full = lists.full;
  const std::vector<ColWork>& col_work = lists.cols;
  w->num_parts = lists.num_parts;

  Packer pk;
  const std::size_t o_slot_of = pk.add(slot_of);
  const std::size_t o_slots = pk.add(slots);
  const std::size_t o_entry_base = pk.add(entry_base);
  const std::size_t o_row_offsets = pk.add(row_offsets);
  const std::size_t o_key_tile = pk.add(key_tile);
  const std::size_t o_row_bits = pk.add(row_bits);
  const std::size_t o_col_offsets = pk.add(col_offsets);
  const std::size_t o_q_tile = pk.add(q_tile);
  const std::size_t o_col_bits = pk.add(col_bits);
  const std::size_t o_bits = pk.add(bits);
  const std::size_t o_row_spans = pk.add(row_spans);
  const std::size_t o_fwd = pk.add(fwd);
  const std::size_t o_merge = pk.add(merges);
  const std::size_t o_full = pk.add(full);
  const std::size_t o_col = pk.add(col_work);
  {
    // Stream ordered: from pageable memory the copy stages `pk` before it returns.
    const DeviceScope scope(p.device_index);
    // Each failure clears the runtime's last error (none of these is sticky), so that a later
    // call's launch check does not report it as its own.
    auto fail = [](cudaError_t status, const std::string& operation) {
      (void)cudaGetLastError();
      check(status, operation);
    };
    if (const cudaError_t e = cudaEventCreateWithFlags(&w->uploaded, cudaEventDisableTiming);
        e != cudaSuccess) {
      fail(e, "cudaEventCreateWithFlags (block schedule)");
    }
    void* memory = nullptr;
    if (const cudaError_t e =
            cudaMallocAsync(&memory, std::max<std::size_t>(pk.size(), 256), stream);
        e != cudaSuccess) {
      fail(e, "cudaMallocAsync (block schedule, " + std::to_string(pk.size()) + " bytes)");
    }
    const char* step = "cudaMemcpyAsync (block schedule)";
    cudaError_t status =
        cudaMemcpyAsync(memory, pk.data(), pk.size(), cudaMemcpyHostToDevice, stream);
    if (status == cudaSuccess) {
      step = "cudaEventRecord (block schedule)";
      status = cudaEventRecord(w->uploaded, stream);
    }
    if (status != cudaSuccess) {
      cudaFreeAsync(memory, stream);  // ordered after the copy, on the same stream
      fail(status, step);
    }
    w->memory = memory;
  }
  DeviceSchedule& d = w->sched;
  d.tile_q = tile_q;
  d.tile_k = tile_k;
  d.words_per_row = (tile_q + 63) / 64;
  d.slot_of = at<std::int32_t>(w->memory, o_slot_of);
  d.slots = at<SlotEntry>(w->memory, o_slots);
  d.entry_base = at<std::int64_t>(w->memory, o_entry_base);
  d.row_offsets = at<std::int64_t>(w->memory, o_row_offsets);
  d.key_tile = at<std::int32_t>(w->memory, o_key_tile);
  d.row_bits = at<std::int32_t>(w->memory, o_row_bits);
  d.col_offsets = at<std::int64_t>(w->memory, o_col_offsets);
  d.q_tile = at<std::int32_t>(w->memory, o_q_tile);
  d.col_bits = at<std::int32_t>(w->memory, o_col_bits);
  d.bits = at<std::uint64_t>(w->memory, o_bits);
  d.row_spans = at<std::uint32_t>(w->memory, o_row_spans);
  w->fwd_work = at<RowWork>(w->memory, o_fwd);
  w->num_fwd_work = static_cast<std::int32_t>(fwd.size());
  w->merge_work = at<MergeWork>(w->memory, o_merge);
  w->num_merge_work = static_cast<std::int32_t>(merges.size());
  w->full_work = at<RowWork>(w->memory, o_full);
  w->num_full_work = static_cast<std::int32_t>(full.size());
  w->col_work = at<ColWork>(w->memory, o_col);
  w->num_col_work = static_cast<std::int32_t>(col_work.size());
  return w;
}

/// The device work of `p`, from an LRU cache keyed by (device, schedule set, KV heads, GPU
/// slots, GQA packing, pass); the schedule set itself comes from the host cache, so repeated calls
/// upload nothing. `backward`: with the transposed schedules and the dQ and dK/dV lists (the
/// forward's entries leave them out: a decode step with a new KV length would otherwise build a
/// dK/dV item per key tile).
/// `allow_packing`: the caller's kernel can pack GQA groups; whether they are packed is decided
/// here from the schedule set (use_gqa_packing) and reported in DeviceWork::packed.
std::shared_ptr<const DeviceWork> device_work(const Problem& p, int slots_per_gpu, int tile_q,
                                              int tile_k, bool backward, bool allow_packing,
                                              cudaStream_t stream) {
  constexpr std::size_t kCapacity = 16;
  static std::mutex mutex;
  static std::list<std::shared_ptr<const DeviceWork>> lru;
  auto set = cached_schedules(p, tile_q, tile_k);
  const bool packed = allow_packing && use_gqa_packing(p, *set, tile_q);
  const std::lock_guard<std::mutex> lock(mutex);
  for (auto it = lru.begin(); it != lru.end(); ++it) {
    const DeviceWork& w = **it;
    if (w.host == set && w.device == p.device_index && w.hkv == p.hkv &&
        w.slots_per_gpu == slots_per_gpu && w.packed == packed && w.backward == backward) {
      lru.splice(lru.begin(), lru, it);
      return lru.front();
    }
  }
  lru.push_front(
      build_device_work(p, set, slots_per_gpu, tile_q, tile_k, packed, backward, stream));
  if (lru.size() > kCapacity) lru.pop_back();
  return lru.front();
}

// ---- Per-call parameters ----------------------------------------------------------------------

AttnParams base_params(const Problem& p, std::vector<BatchEntry>& table) {
  AttnParams a;
  a.q = p.q.data;
  a.k = p.k.data;
  a.v = p.v.data;
  a.out = p.out.data;
  a.lse = p.lse.present() ? p.lse.data : nullptr;
  a.q_ts = p.q.token_stride;
  a.q_hs = p.q.head_stride;
  a.k_ts = p.k.token_stride;
  a.k_hs = p.k.head_stride;
  a.v_ts = p.v.token_stride;
  a.v_hs = p.v.head_stride;
  a.o_ts = p.out.token_stride;
  a.o_hs = p.out.head_stride;
  a.lse_hs = p.lse.head_stride;
  a.lse_ts = p.lse.token_stride;
  a.num_batch = static_cast<std::int32_t>(p.batch);
  a.hq = static_cast<std::int32_t>(p.hq);
  a.hkv = static_cast<std::int32_t>(p.hkv);
  a.group = static_cast<std::int32_t>(p.group());
  a.dim = static_cast<std::int32_t>(p.dim);
  a.elem = elem_of(p.dtype);
  a.softmax = p.score == ScoreFn::kSoftmax;
  a.scale = p.scale;
  a.softcap = p.softcap;
  a.softcap_inverse = p.softcap > 0.0F ? 1.0F / p.softcap : 0.0F;
  a.sigmoid_bias = p.sigmoid_bias;
  table.resize(static_cast<std::size_t>(p.batch));
  std::int64_t rows = 0;
  std::int64_t kv_rows = 0;
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const auto ub = static_cast<std::size_t>(b);
    BatchEntry& e = table[ub];
    e.q = p.q.batch_offset[ub];
    e.k = p.k.batch_offset[ub];
    e.v = p.v.batch_offset[ub];
    e.out = p.out.present() ? p.out.batch_offset[ub] : 0;
    e.lse = p.lse.present() && !p.lse.batch_offset.empty() ? p.lse.batch_offset[ub] : 0;
    if (p.dout.present()) {
      e.dout = p.dout.batch_offset[ub];
      e.dq = p.dq.batch_offset[ub];
      e.dk = p.dk.batch_offset[ub];
      e.dv = p.dv.batch_offset[ub];
    }
    e.row = rows;
    e.kv_row = kv_rows;
    e.sq = static_cast<std::int32_t>(p.seqs[ub].sq);
    e.skv = static_cast<std::int32_t>(p.seqs[ub].skv);
    rows += p.seqs[ub].sq;
    kv_rows += p.seqs[ub].skv;
  }
  a.packed_kv_rows = kv_rows * p.hkv;
  return a;
}

/// One stream-ordered allocation for the per-call arrays, freed in stream order after the
/// kernels that read it.
class CallWorkspace {
 public:
  CallWorkspace(std::size_t bytes, cudaStream_t stream) : stream_(stream) {
    check(allocate(bytes), "cudaMallocAsync (workspace, " + std::to_string(bytes) + " bytes)");
  }
  /// Nothing allocated yet: see allocate().
  explicit CallWorkspace(cudaStream_t stream) : stream_(stream) {}
  ~CallWorkspace() {
    if (memory_ != nullptr) cudaFreeAsync(memory_, stream_);
  }
  /// Allocates `bytes` (once); on failure nothing is held and the status is returned.
  cudaError_t allocate(std::size_t bytes) {
    const cudaError_t status =
        cudaMallocAsync(&memory_, std::max<std::size_t>(bytes, 256), stream_);
    if (status != cudaSuccess) memory_ = nullptr;
    return status;
  }
  CallWorkspace(const CallWorkspace&) = delete;
  CallWorkspace& operator=(const CallWorkspace&) = delete;
  [[nodiscard]] void* get() const { return memory_; }

 private:
  void* memory_ = nullptr;
  cudaStream_t stream_;
};

/// Resident blocks per SM of a kernel on `device`, probed once (the probe sets function
/// attributes and runs the occupancy calculator: too slow for every decode step). The probe
/// runs with `device` current; only successful probes (> 0) are kept, so a passing failure is
/// retried rather than pinning the GPU to a fallback.
int cached_occupancy(std::uintptr_t kernel, int device, int variant, int (*probe)(const void*),
                     const void* arg) {
  static std::mutex mutex;
  static std::map<std::tuple<std::uintptr_t, int, int>, int> cache;
  const auto key = std::make_tuple(kernel, device, variant);
  {
    const std::lock_guard<std::mutex> lock(mutex);
    if (auto it = cache.find(key); it != cache.end()) return it->second;
  }
  const DeviceScope scope(device);
  const int blocks = probe(arg);
  if (blocks > 0) {
    const std::lock_guard<std::mutex> lock(mutex);
    cache[key] = blocks;
  }
  return blocks;
}

int mma_occupancy(const MmaKernel* k, int device) {
  return cached_occupancy(
      reinterpret_cast<std::uintptr_t>(k), device, 0,
      [](const void* a) { return static_cast<const MmaKernel*>(a)->occupancy(); }, k);
}

/// The generic kernels' occupancy depends on (pass, dtype, dim) only: kernel key 0 (no registry
/// entry has address 0), variant = pass * 4096 + elem * 1024 + dim.
int simt_occupancy(const AttnParams& a, int device, bool backward) {
  const int variant = (backward ? 4096 : 0) + static_cast<int>(a.elem) * 1024 + a.dim;
  return cached_occupancy(
      0, device, variant,
      backward ? [](const void*
                        x) { return simt_backward_occupancy(*static_cast<const AttnParams*>(x)); }
               : [](const void*
                        x) { return simt_forward_occupancy(*static_cast<const AttnParams*>(x)); },
      &a);
}

bool aligned16(const Operand& op) {
  if (reinterpret_cast<std::uintptr_t>(op.data) % 16 != 0) return false;
  if (op.token_stride % 8 != 0 || op.head_stride % 8 != 0) return false;
  return std::all_of(op.batch_offset.begin(), op.batch_offset.end(),
                     [](std::int64_t o) { return o % 8 == 0; });
}

bool generic_forced() {
  static const bool forced = [] {
    const char* v = std::getenv("LONGATTN_CUDA_GENERIC");
    return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
  }();
  return forced;
}

/// The tensor-core kernel of `kind` for p, or null when the generic kernels must run it (fp32,
/// a head dim not instantiated, rows not 16-byte aligned, or LONGATTN_CUDA_GENERIC=1).
const MmaKernel* tensor_core_kernel(const Problem& p, MmaKind kind) {
  if (p.dtype != DType::kBF16 && p.dtype != DType::kF16) return nullptr;
  if (generic_forced()) return nullptr;
  if (!aligned16(p.q) || !aligned16(p.k) || !aligned16(p.v) || !aligned16(p.out)) return nullptr;
  if ((kind == MmaKind::kBackward || kind == MmaKind::kBackwardWide ||
       kind == MmaKind::kBackwardHopper) &&
      (!aligned16(p.dout) || !aligned16(p.dq) || !aligned16(p.dk) || !aligned16(p.dv))) {
    return nullptr;
  }
  if (is_wgmma(kind) && (props(p.device_index).major != 9 || props(p.device_index).minor != 0)) {
    return nullptr;
  }
  return find_mma(kind, elem_of(p.dtype), static_cast<int>(p.dim));
}

std::int64_t total_rows(const Problem& p) {
  std::int64_t rows = 0;
  for (const auto& s : p.seqs) rows += s.sq;
  return rows;
}

/// LONGATTN_CUDA_FORWARD_TILE forces the tensor-core forward's query tile (where that instance
/// exists): 64; 128 (the 4-warp x 32-row kernel, else the 8-warp x 16-row one); 128t, 128w, 128h
/// or 128hk (only that one; 128h / 128hk: the wgmma kernel on 64- / 128-key tiles, on compute
/// capability 9.0; not taken unless forced until they are measured on a GPU). Unset or empty:
/// the rule in choose_forward (tile 0).
struct ForwardForce {
  int tile = 0;
  MmaKind tall_first = MmaKind::kForwardTall;  // the 128-row kernel tried first
  bool only = false;                           // no other 128-row kernel
};
/// Which of `values` the environment variable `name` holds: its index, or -1 when unset or
/// empty; anything else is an error naming the variable and the values it takes.
int env_choice(const char* name, std::initializer_list<const char*> values) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return -1;
  std::string expected;
  int index = 0;
  for (const char* value : values) {
    if (std::strcmp(v, value) == 0) return index;
    ++index;
    if (!expected.empty()) expected += index == static_cast<int>(values.size()) ? " or " : ", ";
    expected += value;
  }
  throw Error(ErrorKind::kInvalidArgument, name,
              "unknown value '" + std::string(v) + "', expected " + expected);
}

const ForwardForce& forced_forward() {
  static const ForwardForce forced = [] {
    ForwardForce f;
    switch (
        env_choice("LONGATTN_CUDA_FORWARD_TILE", {"64", "128", "128t", "128w", "128h", "128hk"})) {
      case 0:
        f.tile = kMmaTileQ;
        break;
      case 1:
        f.tile = kMmaWideTileQ;
        break;
      case 2:
        f = {kMmaWideTileQ, MmaKind::kForwardTall, true};
        break;
      case 3:
        f = {kMmaWideTileQ, MmaKind::kForwardWide, true};
        break;
      case 4:
        f = {kMmaWideTileQ, MmaKind::kForwardHopper, true};
        break;
      case 5:
        f = {kMmaWideTileQ, MmaKind::kForwardHopperWide, true};
        break;
      default:
        break;
    }
    return f;
  }();
  return forced;
}

/// The forward kernel for p: a tensor-core instance (64- or 128-row tiles) or the generic one.
struct ForwardChoice {
  const MmaKernel* mma = nullptr;  // null: generic kernel
  int occupancy = 0;               // resident blocks per SM (0: cannot run)
  int tile_q = kSimtTileQ;
  int tile_k = kSimtTileK;
};

ForwardChoice choose_forward(const Problem& p, const AttnParams& a) {
  ForwardChoice c;
  const int sms = props(p.device_index).sms;
  if (const MmaKernel* narrow = tensor_core_kernel(p, MmaKind::kForward); narrow != nullptr) {
    c = {narrow, mma_occupancy(narrow, p.device_index), kMmaTileQ,
         mma_tile_k(static_cast<int>(p.dim))};
  }
  // 128-row tiles halve the K/V traffic per query row; they pay off when the tiles are mostly
  // full (>= 96 rows on average) and their waves of work finish no later than the 64-row
  // tiles' (wide_tiles_finish_sooner: a 64-row item costs ~0.75 of a 128-row one). Of the two
  // 128-row kernels the 4-warp one (FA2's shape: each K/V fragment feeds two m16 slabs, half the
  // shared-memory reads per mma) is taken unless the 8-warp one keeps more warps per SM (an A100
  // holds one 104 KB block at D = 128: 4 warps against 8).
  const ForwardForce& force = forced_forward();
  if (c.mma != nullptr && force.tile != kMmaTileQ) {
    const MmaKind first = force.tall_first;
    const MmaKind second =
        first == MmaKind::kForwardTall ? MmaKind::kForwardWide : MmaKind::kForwardTall;
    ForwardChoice best;
    int best_warps = 0;
    for (const MmaKind kind : {first, second}) {
      if (force.only && kind != first) break;
      const MmaKernel* k = tensor_core_kernel(p, kind);
      const int occupancy = k != nullptr ? mma_occupancy(k, p.device_index) : 0;
      const int warps = occupancy * (kind == MmaKind::kForwardTall ? 4 : 8);
      if (warps > best_warps) {
        const int tile_k = kind == MmaKind::kForwardHopperWide
                               ? kMmaWideTileK
                               : mma_tile_k(static_cast<int>(p.dim));
        best = {k, occupancy, kMmaWideTileQ, tile_k};
        best_warps = warps;
      }
    }
    if (best.mma != nullptr) {
      std::int64_t items = 0;
      std::int64_t narrow_items = 0;
      for (const auto& s : p.seqs) {
        items += (s.sq + kMmaWideTileQ - 1) / kMmaWideTileQ;
        narrow_items += (s.sq + kMmaTileQ - 1) / kMmaTileQ;
      }
      items *= p.hq;
      narrow_items *= p.hq;
      const std::int64_t rows = total_rows(p) * p.hq;
      const bool worth =
          rows >= 96 * items &&
          wide_tiles_finish_sooner(items, static_cast<std::int64_t>(sms) * best.occupancy,
                                   narrow_items, static_cast<std::int64_t>(sms) * c.occupancy);
      if (worth || force.tile == kMmaWideTileQ) c = best;
    }
  }
  if (c.occupancy == 0) {  // no tensor-core kernel, or it does not fit this GPU's shared memory
    c = {nullptr, simt_occupancy(a, p.device_index, false), kSimtTileQ, kSimtTileK};
  }
  return c;
}

/// LONGATTN_CUDA_BACKWARD_TILE=64 or 128 forces the key tile of the fast tensor-core backward
/// (where that instance exists); 128h the Hopper wgmma backward (64 x 128 tiles, compute
/// capability 9.0; not taken unless forced until it is measured on a GPU). Unset or empty: 128
/// where instantiated (returns 0).
constexpr int kForcedHopperBackward = -1;
int forced_backward_tile() {
  static const int forced = [] {
    switch (env_choice("LONGATTN_CUDA_BACKWARD_TILE", {"64", "128", "128h"})) {
      case 0:
        return kMmaTileK;
      case 1:
        return kMmaWideTileK;
      case 2:
        return kForcedHopperBackward;
      default:
        return 0;
    }
  }();
  return forced;
}

/// LONGATTN_CUDA_HOPPER_DQ=atomic: the Hopper backward adds dQ with per-thread atomics instead
/// of bulk reductions (an A/B switch); unset, empty or "bulk": bulk reductions.
bool hopper_dq_atomics() {
  static const bool atomics = env_choice("LONGATTN_CUDA_HOPPER_DQ", {"bulk", "atomic"}) == 1;
  return atomics;
}

/// The backward kernels for p: tensor cores (64 x 64 tiles; in the fast mode 64 x 128 where that
/// instance exists) or the generic ones.
struct BackwardChoice {
  const MmaKernel* mma = nullptr;  // null: generic kernels
  int occupancy = 0;               // resident blocks per SM (0: cannot run)
  int tile_q = kSimtTileQ;
  int tile_k = kSimtTileK;
  bool atomic_dq = false;  // the fast mode: dQ added into an fp32 accumulator with atomics
};

/// `fast`: the caller allows the atomic-dQ mode (not options.deterministic, and its accumulator
/// fits in memory). 128-key tiles halve the Q/dO loads and dQ reductions per key and have the
/// same warps per SM as two 64-key blocks; they are taken where they exist, fit, and their
/// key tiles (half as many work items) still fill every resident block.
BackwardChoice choose_backward(const Problem& p, const AttnParams& a, bool fast) {
  const int forced = forced_backward_tile();  // read first: a bad value is an error in every mode
  (void)hopper_dq_atomics();                  // likewise
  BackwardChoice c;
  if (const MmaKernel* narrow = tensor_core_kernel(p, MmaKind::kBackward); narrow != nullptr) {
    c = {narrow, mma_occupancy(narrow, p.device_index), kMmaTileQ, kMmaTileK, fast};
  }
  if (const MmaKernel* wide = tensor_core_kernel(p, MmaKind::kBackwardWide);
      fast && wide != nullptr && forced != kMmaTileK) {
    const int occupancy = mma_occupancy(wide, p.device_index);
    std::int64_t items = 0;
    for (const auto& s : p.seqs) items += (s.skv + kMmaWideTileK - 1) / kMmaWideTileK;
    items *= p.hkv;
    const bool fills = items >= static_cast<std::int64_t>(props(p.device_index).sms) * occupancy;
    if (occupancy > 0 && (fills || forced == kMmaWideTileK || c.occupancy == 0)) {
      c = {wide, occupancy, kMmaTileQ, kMmaWideTileK, true};
    }
  }
  if (const MmaKernel* hopper = tensor_core_kernel(p, MmaKind::kBackwardHopper);
      fast && hopper != nullptr && forced == kForcedHopperBackward) {
    if (const int occupancy = mma_occupancy(hopper, p.device_index); occupancy > 0) {
      c = {hopper, occupancy, kMmaTileQ, kMmaWideTileK, true};
    }
  }
  if (c.occupancy == 0) {  // no tensor-core kernel, or it does not fit this GPU's shared memory
    c = {nullptr, simt_occupancy(a, p.device_index, true), kSimtTileQ, kSimtTileK, false};
  }
  return c;
}

}  // namespace

bool built() noexcept { return true; }

std::string describe_kernels(const Problem& p) {
  int tile_q = kMmaTileQ;
  int tile_k = kMmaTileK;
  std::vector<BatchEntry> table;
  std::string shape;
  if (p.dout.present()) {
    // The fast mode's choice; it falls back to 64 x 64 deterministic when its accumulator does
    // not fit in memory.
    const BackwardChoice c = choose_backward(p, base_params(p, table), !p.deterministic);
    if (c.mma == nullptr) return "generic SIMT kernels, tile 16x32";
    tile_k = c.tile_k;
    if (is_wgmma(c.mma->kind)) {
      return "tensor cores (wgmma, sm_90a), tile " + std::to_string(c.tile_q) + "x" +
             std::to_string(c.tile_k);
    }
  } else {
    const ForwardChoice c = choose_forward(p, base_params(p, table));
    if (c.mma == nullptr) return "generic SIMT kernels, tile 16x32";
    tile_q = c.tile_q;
    tile_k = c.tile_k;
    if (c.mma->kind == MmaKind::kForwardTall) shape = ", 32 rows per warp";
    if (is_wgmma(c.mma->kind)) {
      return "tensor cores (wgmma, sm_90a), tile " + std::to_string(c.tile_q) + "x" +
             std::to_string(c.tile_k);
    }
  }
  const bool packed =
      !p.dout.present() && use_gqa_packing(p, *cached_schedules(p, tile_q, tile_k), tile_q);
  return "tensor cores (mma.sync), tile " + std::to_string(tile_q) + "x" + std::to_string(tile_k) +
         shape + (packed ? ", GQA heads packed" : "");
}

int usable_devices() noexcept {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

std::string device_summary() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess)
    return std::string("no usable GPU (") + cudaGetErrorString(status) + ")";
  if (count == 0) return "no GPU";
  std::string s;
  for (int d = 0; d < count; ++d) {
    const DeviceProps& pr = props(d);
    if (!s.empty()) s += "; ";
    s += pr.name + " (sm_" + std::to_string(pr.major * 10 + pr.minor) + ", " +
         std::to_string(pr.sms) + " SMs)";
  }
  return s;
}

void check_supported(const Problem& p) {
  if (p.dim < 1 || p.dim > kSimtMaxDim) {
    throw Error(ErrorKind::kUnsupported, "q",
                "head dim D = " + std::to_string(p.dim) +
                    " is not supported by the CUDA backend (expected 1..256)");
  }
  if (p.hq > 65535) {
    throw Error(ErrorKind::kUnsupported, "q",
                "Hq = " + std::to_string(p.hq) + " query heads; the CUDA backend takes <= 65535");
  }
  const DeviceProps& pr = props(p.device_index);
  // The generic kernels keep whole K/V rows in shared memory; GPUs with 99 KB per block
  // (sm_86, sm_89) cannot run the largest head dims.
  const std::size_t need =
      std::max(simt_forward_smem(static_cast<int>(p.dim)),
               p.dout.present() ? simt_backward_smem(static_cast<int>(p.dim)) : std::size_t{0}) +
      kStaticSmemBytes;
  if (need > pr.smem_per_block) {
    throw Error(ErrorKind::kUnsupported, "q",
                "head dim D = " + std::to_string(p.dim) + " needs " + std::to_string(need) +
                    " bytes of shared memory per block on GPU " + std::to_string(p.device_index) +
                    " (" + pr.name + "), which allows " + std::to_string(pr.smem_per_block));
  }
  if (pr.major < 8) {
    throw Error(ErrorKind::kUnsupported, "q",
                "GPU " + std::to_string(p.device_index) + " (" + pr.name + ") is sm_" +
                    std::to_string(pr.major * 10 + pr.minor) +
                    "; the CUDA backend needs sm_80 or newer");
  }
}

void forward(const Problem& p) {
  check_supported(p);
  const DeviceScope scope(p.device_index);
  auto stream = static_cast<cudaStream_t>(p.stream);
  std::vector<BatchEntry> table;
  AttnParams a = base_params(p, table);
  const ForwardChoice choice = choose_forward(p, a);
  const MmaKernel* mma = choice.mma;
  if (choice.occupancy == 0) {
    check(cudaGetLastError(), "forward kernel setup (D=" + std::to_string(p.dim) + ")");
    throw Error(ErrorKind::kRuntime, "q",
                "the forward kernel cannot be resident at D=" + std::to_string(p.dim));
  }
  const int tile_q = choice.tile_q;
  const int tile_k = choice.tile_k;
  const int slots = props(p.device_index).sms * choice.occupancy;
  // GQA packing (tensor-core forward only) is decided with the schedule, in device_work.
  const auto work = device_work(p, slots, tile_q, tile_k, false, mma != nullptr, stream);
  if (work->num_fwd_work == 0) return;  // nothing to compute (empty sequences)
  const WorkUse use(*work, stream);

  Packer pk;
  const std::size_t o_table = pk.add(table);
  const std::size_t o_sinks = pk.add(p.sink_logits);
  const std::size_t o_counter = pk.reserve(2 * sizeof(std::int32_t));
  const std::size_t o_acc = pk.reserve_device(static_cast<std::size_t>(work->num_parts) * tile_q *
                                              static_cast<std::size_t>(p.dim) * sizeof(float));
  const std::size_t o_ml =
      pk.reserve_device(static_cast<std::size_t>(work->num_parts) * tile_q * 2 * sizeof(float));
  CallWorkspace ws(pk.size(), stream);
  // The tables and the zeroed counters; the partial buffers need no initial values.
  check(cudaMemcpyAsync(ws.get(), pk.data(), pk.staged_size(), cudaMemcpyHostToDevice, stream),
        "cudaMemcpyAsync (forward tables)");
  a.batch = at<BatchEntry>(ws.get(), o_table);
  a.sink_logits = p.has_sink_logits() ? at<float>(ws.get(), o_sinks) : nullptr;
  a.work_counter = at<std::int32_t>(ws.get(), o_counter);
  a.part_acc = at<float>(ws.get(), o_acc);
  a.part_ml = at<float>(ws.get(), o_ml);
  a.sched = work->sched;
  a.pack_gqa = work->packed;
  a.row_work = work->fwd_work;
  a.num_row_work = work->num_fwd_work;
  a.merge_work = work->merge_work;
  a.num_merge_work = work->num_merge_work;
  const int grid = std::min(work->num_fwd_work, slots);
  if (mma != nullptr) {
    check(mma->launch(a, grid, stream),
          "forward kernel launch (tensor cores, D=" + std::to_string(p.dim) + ")");
  } else {
    check(launch_simt_forward(a, grid, stream),
          "forward kernel launch (generic, D=" + std::to_string(p.dim) + ")");
  }
}

void backward(const Problem& p) {
  check_supported(p);
  const DeviceScope scope(p.device_index);
  auto stream = static_cast<cudaStream_t>(p.stream);
  std::vector<BatchEntry> table;
  AttnParams a = base_params(p, table);
  a.dout = p.dout.data;
  a.dq = p.dq.data;
  a.dk = p.dk.data;
  a.dv = p.dv.data;
  a.do_ts = p.dout.token_stride;
  a.do_hs = p.dout.head_stride;
  a.dq_ts = p.dq.token_stride;
  a.dq_hs = p.dq.head_stride;
  a.dk_ts = p.dk.token_stride;
  a.dk_hs = p.dk.head_stride;
  a.dv_ts = p.dv.token_stride;
  a.dv_hs = p.dv.head_stride;
  a.dsink = p.dsink;
  a.dsink_stride = p.dsink_stride;
  BackwardChoice choice = choose_backward(p, a, !p.deterministic);
  if (choice.occupancy == 0) {
    check(cudaGetLastError(),
          "backward kernel setup (shared memory for D=" + std::to_string(p.dim) + ")");
    throw Error(ErrorKind::kRuntime, "q",
                "the backward kernels cannot be resident at D=" + std::to_string(p.dim));
  }
  auto work_of = [&](const BackwardChoice& c) {
    return device_work(p, props(p.device_index).sms * c.occupancy, c.tile_q, c.tile_k, true, false,
                       stream);
  };
  auto work = work_of(choice);
  // Nothing to compute, except the sink-logit gradient, which is then 0 and still written.
  if (work->num_full_work == 0 && work->num_col_work == 0 && p.dsink == nullptr) return;

  const std::int64_t rows = total_rows(p) * p.hq;
  Packer pk;
  const std::size_t o_table = pk.add(table);
  const std::size_t o_sinks = pk.add(p.sink_logits);
  // Two work counters for the tensor-core kernels, two for the generic kernels that stand in
  // for them on Inf/NaN inputs, and the prologue's Inf/NaN flag, zeroed by the table upload.
  const std::size_t o_counter = pk.reserve(5 * sizeof(std::int32_t));
  const std::size_t o_dot = pk.reserve_device(static_cast<std::size_t>(rows) * sizeof(float));
  const std::size_t o_lse2 = pk.reserve_device(static_cast<std::size_t>(rows) * sizeof(float));
  const std::size_t without_accum = pk.size();
  const std::size_t accum_bytes = static_cast<std::size_t>(rows * p.dim) * sizeof(float);
  const std::size_t o_dq_accum = pk.reserve_device(choice.atomic_dq ? accum_bytes : 0);
  CallWorkspace ws(stream);
  if (const cudaError_t status = ws.allocate(pk.size()); status != cudaSuccess) {
    // The dQ accumulator is 4 * D bytes per (token, head): where it does not fit, the
    // deterministic mode, which needs none, runs instead.
    if (status != cudaErrorMemoryAllocation || !choice.atomic_dq) {
      check(status,
            "cudaMallocAsync (backward workspace, " + std::to_string(pk.size()) + " bytes)");
    }
    (void)cudaGetLastError();  // not sticky; cleared so the launch checks do not report it
    choice = choose_backward(p, a, false);
    if (choice.occupancy == 0) {
      throw Error(
          ErrorKind::kRuntime, "q",
          "the deterministic backward kernels cannot be resident at D=" + std::to_string(p.dim));
    }
    work = work_of(choice);
    check(ws.allocate(without_accum),
          "cudaMallocAsync (backward workspace, " + std::to_string(without_accum) + " bytes)");
  }
  const WorkUse use(*work, stream);
  check(cudaMemcpyAsync(ws.get(), pk.data(), pk.staged_size(), cudaMemcpyHostToDevice, stream),
        "cudaMemcpyAsync (backward tables)");
  a.batch = at<BatchEntry>(ws.get(), o_table);
  a.sink_logits = p.has_sink_logits() ? at<float>(ws.get(), o_sinks) : nullptr;
  a.work_counter = at<std::int32_t>(ws.get(), o_counter);
  a.packed_rows = rows;
  a.row_dot = at<float>(ws.get(), o_dot);
  a.row_lse2 = at<float>(ws.get(), o_lse2);
  if (choice.atomic_dq) {
    a.dq_accum = at<float>(ws.get(), o_dq_accum);
    a.hopper_dq_atomics = hopper_dq_atomics();
    check(cudaMemsetAsync(a.dq_accum, 0, accum_bytes, stream),
          "cudaMemsetAsync (backward dQ accumulator)");
  }
  a.sched = work->sched;
  a.row_work = work->full_work;
  a.num_row_work = work->num_full_work;
  a.col_work = work->col_work;
  a.num_col_work = work->num_col_work;
  // The fast backward has no dQ pass: its grid covers the dK/dV work alone.
  const int items =
      choice.atomic_dq ? work->num_col_work : std::max(work->num_full_work, work->num_col_work);
  const int grid = std::max(1, std::min(items, props(p.device_index).sms * choice.occupancy));
  if (choice.mma != nullptr) {
    // Inf/NaN in Q, K, V or dO: a pair of probability 0 must not carry it into a gradient (the
    // mma products would: 0 * Inf = NaN). The prologue scans the inputs; where it finds one,
    // the tensor-core kernels return at once and the generic kernels, launched behind them,
    // compute the gradients over the same schedule (else they return at once).
    // (The tensor-core kernels take their items from counters 0 and 1 even when they have
    // none to do: the generic kernels count with 2 and 3.)
    a.nonfinite = a.work_counter + 4;
    check(launch_backward_prologue(a, stream), "backward prologue launch");
    check(choice.mma->launch(a, grid, stream), "backward kernel launch (tensor cores, 64x" +
                                                   std::to_string(choice.tile_k) +
                                                   " tiles, D=" + std::to_string(p.dim) + ")");
    AttnParams exact = a;
    exact.work_counter = a.work_counter + 2;
    const int exact_items = std::max(work->num_full_work, work->num_col_work);
    const int exact_grid = std::max(
        1, std::min(exact_items, props(p.device_index).sms *
                                     std::max(1, simt_occupancy(a, p.device_index, true))));
    check(launch_simt_backward(exact, exact_grid, stream),
          "backward kernel launch (generic, for Inf/NaN inputs, D=" + std::to_string(p.dim) + ")");
  } else {
    check(launch_simt_backward(a, grid, stream),
          "backward kernel launch (generic, D=" + std::to_string(p.dim) + ")");
  }
}

void copy_to_host(void* dst, const void* src, std::size_t bytes, int device_index) {
  const DeviceScope scope(device_index);
  check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost),
        "cudaMemcpy (device to host, " + std::to_string(bytes) + " bytes)");
}

void copy_to_device(void* dst, const void* src, std::size_t bytes, int device_index) {
  const DeviceScope scope(device_index);
  check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice),
        "cudaMemcpy (host to device, " + std::to_string(bytes) + " bytes)");
}

void* device_alloc(std::size_t bytes, int device_index) {
  const DeviceScope scope(device_index);
  void* ptr = nullptr;
  check(cudaMalloc(&ptr, std::max<std::size_t>(bytes, 1)),
        "cudaMalloc (" + std::to_string(bytes) + " bytes)");
  return ptr;
}

void device_free(void* ptr, int device_index) noexcept {
  if (ptr == nullptr) return;
  int previous = 0;
  cudaGetDevice(&previous);
  cudaSetDevice(device_index);
  cudaFree(ptr);
  cudaSetDevice(previous);
}

void synchronize(int device_index) {
  const DeviceScope scope(device_index);
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (a kernel failed)");
}

}  // namespace longattn::detail::cuda
