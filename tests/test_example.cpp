// SPDX-License-Identifier: Apache-2.0
// The README's C++ example is examples/basic.cpp, compiled into this test and run; the README
// must quote the file verbatim.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

int example_main();

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(Readme, ExampleRuns) {
  testing::internal::CaptureStdout();
  EXPECT_EQ(example_main(), 0);
  const std::string printed = testing::internal::GetCapturedStdout();
  EXPECT_NE(printed.find("out[0] = 1.000, lse[last] = 6.545"), std::string::npos) << printed;
}

TEST(Readme, QuotesTheExampleVerbatim) {
  const std::string readme = slurp(std::string(LONGATTN_SOURCE_DIR) + "/README.md");
  const std::string example = slurp(std::string(LONGATTN_SOURCE_DIR) + "/examples/basic.cpp");
  ASSERT_FALSE(example.empty());
  // The README shows the file without the LONGATTN_EXAMPLE_AS_FUNCTION switch.
  std::string shown;
  std::istringstream lines(example);
  bool skip = false;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("#ifdef LONGATTN_EXAMPLE_AS_FUNCTION", 0) == 0) {
      skip = true;
      continue;
    }
    if (skip && line.rfind("#else", 0) == 0) continue;
    if (skip && line.rfind("int example_main", 0) == 0) continue;
    if (skip && line.rfind("#endif", 0) == 0) {
      skip = false;
      continue;
    }
    shown += line + "\n";
  }
  EXPECT_NE(readme.find(shown), std::string::npos) << "README.md must contain:\n" << shown;
}

}  // namespace
