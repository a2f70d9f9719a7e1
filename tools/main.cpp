// SPDX-License-Identifier: Apache-2.0
// The `longattn` command-line program: info, check, bench.
#include <fmt/core.h>

#include <CLI/CLI.hpp>

#include "longattn/longattn.hpp"
#include "tools/commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{"longattn: fast attention for long contexts. Subcommands: info, check, bench."};
  app.require_subcommand(1);
  app.set_version_flag("--version", longattn::version());
  longattn::tools::add_info_command(app);
  longattn::tools::add_check_command(app);
  longattn::tools::add_bench_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const longattn::Error& e) {
    fmt::print(stderr, "longattn: error: {}\n", e.what());
    return 2;
  }
  return 0;
}
