#!/usr/bin/env bash
# Prepares .gpudeps/ (git-ignored) for bench/gpu_job.sh on the lent GPU machine, which cannot
# download anything: the Debian packages of the CLI's header libraries (fmt, CLI11,
# nlohmann-json) and a copy of ../shared/anchors (the device tool sends the repo only).
# Call the device tool with carry [".gpudeps"].
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpudeps && mkdir -p .gpudeps/debs
(cd .gpudeps/debs && apt-get download libfmt-dev libfmt9 libcli11-dev nlohmann-json3-dev >/dev/null)
if [ -d ../shared/anchors ]; then cp -r ../shared/anchors .gpudeps/anchors; fi
du -sh .gpudeps
