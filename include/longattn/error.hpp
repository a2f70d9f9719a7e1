// SPDX-License-Identifier: Apache-2.0
/// @file error.hpp
/// @brief The one exception type that every longattn entry point throws.
#pragma once

#include <stdexcept>
#include <string>

namespace longattn {

/// Why an operation failed.
enum class ErrorKind {
  kInvalidArgument,  ///< An argument is malformed (rank, dtype, shape, range, null pointer).
  kUnsupported,      ///< Well-formed, but this backend/build does not implement it.
  kRuntime,          ///< The backend failed while running (allocation, device error).
};

/// The exception thrown by every longattn function.
///
/// `what()` reads like `q: expected rank 4 [B, Sq, Hq, D] or 3 [total_q, Hq, D], got rank 2`:
/// it names the argument, the value and what was expected.
class Error : public std::runtime_error {
 public:
  /// @param kind what went wrong
  /// @param argument the name of the offending argument (e.g. "q", "options.window_left")
  /// @param message the value and what was expected
  Error(ErrorKind kind, std::string argument, const std::string& message)
      : std::runtime_error(argument.empty() ? message : argument + ": " + message),
        kind_(kind),
        argument_(std::move(argument)) {}

  /// The category of the failure.
  [[nodiscard]] ErrorKind kind() const noexcept { return kind_; }
  /// The name of the argument at fault ("" when none applies).
  [[nodiscard]] const std::string& argument() const noexcept { return argument_; }

 private:
  ErrorKind kind_;
  std::string argument_;
};

}  // namespace longattn
