// SPDX-License-Identifier: Apache-2.0
/// @file longattn.hpp
/// @brief Umbrella header: everything a user of the C++ API needs.
#pragma once

#include "longattn/attention.hpp"
#include "longattn/error.hpp"
#include "longattn/mask.hpp"
#include "longattn/runtime.hpp"
#include "longattn/tensor.hpp"
