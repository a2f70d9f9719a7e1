#!/usr/bin/env bash
# clang-tidy over the library sources, using the compile database of a configured build dir.
set -euo pipefail
build=${1:-build/release}
files=$(git ls-files 'src/*.cpp')
# NOTE: the engine_*.cpp files share engine.inc; checking one of them covers it.
files=$(echo "$files" | grep -v -e engine_avx2.cpp -e engine_generic.cpp)
# Only the files this build compiles (cuda_stub.cpp or cuda_backend.cpp, not both).
files=$(for f in $files; do grep -q "\"file\": \".*/$f\"" "$build/compile_commands.json" && echo "$f"; done)
clang-tidy -p "$build" --quiet $files 2>&1 | grep -v -e "warnings generated" -e "^Suppressed" -e "Use -header-filter" || true
if clang-tidy -p "$build" --quiet $files 2>&1 | grep -q -E "(warning|error):"; then
  echo "clang-tidy: findings above"; exit 1
fi
