// SPDX-License-Identifier: Apache-2.0
// TensorView helpers and the scalar element conversions.
#include "longattn/tensor.hpp"

#include <cstring>
#include <sstream>

#include "core/problem.hpp"
#include "longattn/error.hpp"

namespace longattn {

std::size_t dtype_size(DType dtype) noexcept {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kBF16:
    case DType::kF16:
      return 2;
  }
  return 0;
}

const char* dtype_name(DType dtype) noexcept {
  switch (dtype) {
    case DType::kF32:
      return "fp32";
    case DType::kBF16:
      return "bf16";
    case DType::kF16:
      return "fp16";
    case DType::kI32:
      return "int32";
  }
  return "?";
}

DType parse_dtype(std::string_view name, const std::string& argument) {
  if (name == "fp32" || name == "f32" || name == "float32") return DType::kF32;
  if (name == "bf16" || name == "bfloat16") return DType::kBF16;
  if (name == "fp16" || name == "f16" || name == "float16") return DType::kF16;
  if (name == "int32" || name == "i32") return DType::kI32;
  throw Error(ErrorKind::kInvalidArgument, argument,
              "unknown dtype '" + std::string(name) + "', expected fp32, bf16 or fp16");
}

const char* device_name(Device device) noexcept { return device == Device::kCPU ? "cpu" : "cuda"; }

std::int64_t TensorView::numel() const noexcept {
  std::int64_t n = 1;
  for (int i = 0; i < rank; ++i) n *= shape[static_cast<std::size_t>(i)];
  return n;
}

bool TensorView::is_contiguous() const noexcept {
  std::int64_t expected = 1;
  for (int i = rank - 1; i >= 0; --i) {
    const auto d = static_cast<std::size_t>(i);
    if (shape[d] != 1 && strides[d] != expected) return false;
    expected *= shape[d];
  }
  return true;
}

std::string TensorView::describe() const {
  std::ostringstream os;
  os << '[';
  for (int i = 0; i < rank; ++i) os << (i ? ", " : "") << shape[static_cast<std::size_t>(i)];
  os << "] " << dtype_name(dtype) << ' ' << device_name(device);
  return os.str();
}

TensorView TensorView::contiguous(void* data, DType dtype,
                                  std::initializer_list<std::int64_t> shape, Device device) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.rank = static_cast<int>(shape.size());
  if (t.rank > kMaxRank) {
    throw Error(ErrorKind::kInvalidArgument, "shape", "at most 4 dimensions are supported");
  }
  std::size_t i = 0;
  for (auto s : shape) t.shape[i++] = s;
  std::int64_t stride = 1;
  for (int d = t.rank - 1; d >= 0; --d) {
    t.strides[static_cast<std::size_t>(d)] = stride;
    stride *= t.shape[static_cast<std::size_t>(d)];
  }
  return t;
}

TensorView TensorView::strided(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                               std::initializer_list<std::int64_t> strides, Device device) {
  if (shape.size() != strides.size()) {
    throw Error(ErrorKind::kInvalidArgument, "strides",
                "expected as many strides as dimensions (" + std::to_string(shape.size()) +
                    "), got " + std::to_string(strides.size()));
  }
  TensorView t = contiguous(data, dtype, shape, device);
  std::size_t i = 0;
  for (auto s : strides) t.strides[i++] = s;
  return t;
}

namespace detail {

float f16_to_float(std::uint16_t bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000U) << 16;
  std::uint32_t exponent = (bits >> 10) & 0x1fU;
  std::uint32_t mantissa = bits & 0x3ffU;
  std::uint32_t out = 0;
  if (exponent == 0x1fU) {
    out = sign | 0x7f800000U | (mantissa << 13);  // Inf / NaN
  } else if (exponent != 0) {
    out = sign | ((exponent + 112U) << 23) | (mantissa << 13);
  } else if (mantissa != 0) {
    // Subnormal: normalize.
    exponent = 113;
    while ((mantissa & 0x400U) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    out = sign | (exponent << 23) | ((mantissa & 0x3ffU) << 13);
  } else {
    out = sign;
  }
  float value = 0;
  std::memcpy(&value, &out, 4);
  return value;
}

std::uint16_t float_to_f16(float value) {
  std::uint32_t bits = 0;
  std::memcpy(&bits, &value, 4);
  const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000U);
  const std::uint32_t abs = bits & 0x7fffffffU;
  if (abs > 0x7f800000U) return static_cast<std::uint16_t>(sign | 0x7e00U);   // NaN
  if (abs >= 0x477ff000U) return static_cast<std::uint16_t>(sign | 0x7c00U);  // overflow -> Inf
  if (abs < 0x38800000U) {
    // Subnormal or zero in fp16: round abs * 2^24 to an integer, nearest even.
    if (abs < 0x33000000U) return sign;  // below half the smallest subnormal
    const std::uint32_t exponent = abs >> 23;
    const std::uint32_t mantissa = (abs & 0x7fffffU) | 0x800000U;
    const std::uint32_t shift = 126U - exponent;  // in [14, 24]
    std::uint32_t half = mantissa >> shift;
    const std::uint32_t rest = mantissa & ((1U << shift) - 1U);
    const std::uint32_t halfway = 1U << (shift - 1U);
    if (rest > halfway || (rest == halfway && (half & 1U) != 0)) ++half;
    return static_cast<std::uint16_t>(sign | half);
  }
  // Normal: rebias the exponent and round the mantissa to 10 bits, nearest even.
  std::uint32_t h = ((abs >> 13) - (112U << 10));
  const std::uint32_t rest = abs & 0x1fffU;
  if (rest > 0x1000U || (rest == 0x1000U && (h & 1U) != 0)) ++h;
  return static_cast<std::uint16_t>(sign | h);
}

float load_as_float(const void* base, DType dtype, std::int64_t index) {
  switch (dtype) {
    case DType::kF32:
      return static_cast<const float*>(base)[index];
    case DType::kBF16:
      return bf16_to_float(static_cast<const std::uint16_t*>(base)[index]);
    case DType::kF16:
      return f16_to_float(static_cast<const std::uint16_t*>(base)[index]);
    case DType::kI32:
      return static_cast<float>(static_cast<const std::int32_t*>(base)[index]);
  }
  return 0.0F;
}

void store_from_float(void* base, DType dtype, std::int64_t index, float value) {
  switch (dtype) {
    case DType::kF32:
      static_cast<float*>(base)[index] = value;
      return;
    case DType::kBF16:
      static_cast<std::uint16_t*>(base)[index] = float_to_bf16(value);
      return;
    case DType::kF16:
      static_cast<std::uint16_t*>(base)[index] = float_to_f16(value);
      return;
    case DType::kI32:
      static_cast<std::int32_t*>(base)[index] = static_cast<std::int32_t>(value);
      return;
  }
}

}  // namespace detail
}  // namespace longattn
