#!/usr/bin/env bash
# Fails when an engine object built for AVX2 or AVX-512 exports a shared (weak or global)
# function that runs vector-extension code outside its own instruction-set namespace.
# Why: the linker keeps one copy of every inline function and template instantiation for the
# whole program. If std::vector<uint8_t>::assign, say, were compiled inside the AVX-512 engine
# with AVX-512 enabled, the generic engine could call that copy on a CPU without AVX-512 and die
# of SIGILL (it did, in the sanitizer build on an AVX2 machine, where inlining is scarcer).
# engine.inc enables each instruction set for its own functions only; this check proves it on
# the objects, on any CPU (the dispatcher never runs the AVX-512 engine on CI's AVX2 machine).
# Usage: scripts/check_isa_isolation.sh [build dir] (default build/release)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/release}
status=0
for isa in avx2 avx512; do
  obj=$(find "$build" -path "*longattn.dir/src/cpu/engine_$isa.cpp.o" | head -n 1)
  [ -n "$obj" ] || { echo "check_isa_isolation: engine_$isa.cpp.o not found under $build"; exit 1; }
  # Global and weak functions, but those of the engine's own namespace (longattn::detail::cpu::
  # avx2 / avx512, which only the dispatcher calls after checking the CPU).
  own="_ZN8longattn6detail3cpu${#isa}${isa}"
  nm --defined-only -g "$obj" | awk '$2 ~ /^[TWVi]$/ {print $3}' | grep -v "^$own" |
    sort -u >"$build/isa_shared_$isa.txt" || true
  # Functions whose bodies hold a VEX/EVEX instruction (mnemonic v..., ymm/zmm or mask registers):
  # none of these exist in baseline x86-64 code.
  objdump -d --no-show-raw-insn "$obj" | awk '
    /^[0-9a-f]+ <.*>:$/ { name = substr($2, 2, length($2) - 3); next }
    name != "" && ($2 ~ /^v/ || /%[yz]mm[0-9]/ || /%k[0-7]/) { print name }' |
    sort -u >"$build/isa_vector_$isa.txt"
  leaks=$(comm -12 "$build/isa_shared_$isa.txt" "$build/isa_vector_$isa.txt")
  if [ -n "$leaks" ]; then
    echo "check_isa_isolation: $isa code in functions the whole program shares ($obj):"
    echo "$leaks" | c++filt | sed 's/^/  /'
    status=1
  else
    echo "check_isa_isolation: $isa: $(wc -l <"$build/isa_shared_$isa.txt") shared functions, none with $isa code"
  fi
done
exit "$status"
