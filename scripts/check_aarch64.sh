#!/usr/bin/env bash
# Builds longattn for 64-bit Arm Linux (the hosts of Grace Hopper / Grace Blackwell, Graviton)
# with Debian's cross toolchain and runs a reduced test list under qemu-aarch64: the x86-64
# engines (AVX2, AVX-512) must stay out of that build and the generic engine must pass alone.
# Installs what it needs (the cross g++, qemu-user, arm64 GoogleTest and fmt by multiarch).
# Usage: scripts/check_aarch64.sh [--full]   (--full: every test; tens of minutes under qemu)
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
need=()
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
dpkg -s libgtest-dev:arm64 >/dev/null 2>&1 || need+=(libgtest-dev:arm64)
dpkg -s libfmt-dev:arm64 >/dev/null 2>&1 || need+=(libfmt-dev:arm64)
if [ ${#need[@]} -gt 0 ]; then
  echo "check_aarch64: installing ${need[*]}"
  dpkg --print-foreign-architectures | grep -qx arm64 || $sudo dpkg --add-architecture arm64
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cmake --preset aarch64 >/dev/null
cmake --build --preset aarch64
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
# NOTE: one thread: qemu-user (7.2, in the sandboxes this was written in) hangs in thread
# creation, a plain std::thread included; on an Arm host the engine runs threaded as anywhere.
export OMP_NUM_THREADS=1
cli=build/aarch64/longattn
aarch64-linux-gnu-readelf -h "$cli" | grep -q "Machine: *AArch64" ||
  { echo "check_aarch64: $cli is not an aarch64 program"; exit 1; }
qemu-aarch64 "$cli" info
if [ "${1:-}" = "--full" ]; then
  ctest --preset aarch64
  exit 0
fi
# qemu emulates floating point in software (the quick list: ~3 minutes): every test but the
# full case list (DriverCases) and its per-SIMD-level copy, then the quick case list through
# the CLI (every option, mask and dtype on the generic engine).
ctest --preset aarch64 -E 'SimdLevels|DriverCases|cli_check_bf16'
qemu-aarch64 "$cli" check --quick | grep -v ' ok$'
