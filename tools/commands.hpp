// SPDX-License-Identifier: Apache-2.0
// Subcommands of the `longattn` program.
#pragma once

#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace longattn::tools {

/// Registers `info`, `check` and `bench` on the app.
void add_info_command(CLI::App& app);
void add_check_command(CLI::App& app);
void add_bench_command(CLI::App& app);

/// Measured fp32 FMA throughput (GFLOP/s, all threads) and copy bandwidth (GB/s, read+write).
struct Peak {
  double gflops = 0.0;
  double copy_gbps = 0.0;
};
Peak measure_peak();

}  // namespace longattn::tools
