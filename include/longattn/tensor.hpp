// SPDX-License-Identifier: Apache-2.0
/// @file tensor.hpp
/// @brief Non-owning tensor views: pointer, dtype, device, shape and element strides.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace longattn {

/// Element type of a tensor.
enum class DType : std::uint8_t {
  kF32,   ///< IEEE float32
  kBF16,  ///< bfloat16 (upper half of a float32)
  kF16,   ///< IEEE float16
  kI32,   ///< int32 (cu_seqlens)
};

/// Where a tensor's memory lives.
enum class Device : std::uint8_t { kCPU, kCUDA };

/// Size of one element in bytes.
[[nodiscard]] std::size_t dtype_size(DType dtype) noexcept;
/// "fp32", "bf16", "fp16", "int32".
[[nodiscard]] const char* dtype_name(DType dtype) noexcept;
/// Parses "fp32"/"f32"/"float32", "bf16"/"bfloat16", "fp16"/"f16"/"float16", "int32".
/// @throws Error naming `argument` when the name is unknown.
[[nodiscard]] DType parse_dtype(std::string_view name, const std::string& argument = "dtype");
/// "cpu" or "cuda".
[[nodiscard]] const char* device_name(Device device) noexcept;

/// A non-owning view of up to 4-dimensional memory.
///
/// Strides are in elements (not bytes) and may be any non-negative value except that the last
/// dimension of attention operands must be contiguous (stride 1). A view with `rank == 0` and
/// `data == nullptr` means "absent" for optional arguments.
struct TensorView {
  static constexpr int kMaxRank = 4;

  void* data = nullptr;          ///< First element (may be null only when numel() == 0).
  DType dtype = DType::kF32;     ///< Element type.
  Device device = Device::kCPU;  ///< Memory space.
  int device_index = 0;          ///< GPU ordinal for Device::kCUDA.
  int rank = 0;                  ///< Number of dimensions, 0..4.
  std::array<std::int64_t, kMaxRank> shape{};    ///< Extent of each dimension.
  std::array<std::int64_t, kMaxRank> strides{};  ///< Element stride of each dimension.

  /// True when this view was left default-constructed (an omitted optional argument).
  [[nodiscard]] bool empty_view() const noexcept { return rank == 0 && data == nullptr; }
  /// Product of the extents (1 for rank 0 views that are not empty_view()).
  [[nodiscard]] std::int64_t numel() const noexcept;
  /// True when the strides are the row-major strides of the shape.
  [[nodiscard]] bool is_contiguous() const noexcept;
  /// A printable "[2, 113, 8, 64] fp32 cpu" description.
  [[nodiscard]] std::string describe() const;

  /// A row-major contiguous view of `shape`.
  static TensorView contiguous(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                               Device device = Device::kCPU);
  /// A view with explicit element strides.
  static TensorView strided(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                            std::initializer_list<std::int64_t> strides,
                            Device device = Device::kCPU);
};

}  // namespace longattn
