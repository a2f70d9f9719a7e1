#!/usr/bin/env bash
# One full GPU iteration on the lent machine: build (a chosen instantiation subset), check every
# case against the oracle, compute-sanitizer on the quick suite, the GPU benchmark, and the
# anchors (SDPA backends, FlexAttention) in the same job; a summary table last, full logs and
# JSON under $OUT (logs.tgz, core.json, longattn_gpu.json, anchors.json, flex_masks.json,
# compare.json, summary.txt).
#
# Here first: scripts/fetch_gpu_deps.sh   (fills .gpudeps/: header libraries, the anchors, and
#             the CLI prebuilt here for sm_90 when build/release is a CUDA build, xz-compressed)
# Then, with the device tool:  run(command="bash bench/gpu_job.sh", carry=[".gpudeps"])
#
# Stages run in the order STAGES names them (default "build core check sanitize bench": the
# numbers of the bars first, then correctness of every kernel, then the long benchmark suite);
# each stage's timeout is cut to what is left of DEADLINE seconds (default 570), so the summary
# and logs always come back from one device call (10 minutes). Later calls on a warm machine
# keep build/gpu:
#   STAGES="build check bench anchors sanitize" bash bench/gpu_job.sh   (the old order, all A/Bs)
#   STAGES="python" bash bench/gpu_job.sh     (pip install ., GPU pytest, compare.py, decode loop)
#   STAGES="profile flex" bash bench/gpu_job.sh  (ncu on the bar's kernels; FlexAttention masks)
#   STAGES="hotspots" bash bench/gpu_job.sh  (stall samples per SASS instruction: the 128t forward
#     on full and sliding_window_causal, the fast backward; bench/ncu_hotspots.py reads them)
# LONGATTN_CUDA_FORWARD_TILE=128h and LONGATTN_CUDA_BACKWARD_TILE=128h (the sm_90a wgmma
# forward and backward, not yet taken by default) run together in the check (full list) and
# sanitize (memcheck, racecheck, synccheck) stages, each in the core, bench A/B and profile
# stages; LONGATTN_CUDA_FORWARD_TILE=128hk (the wgmma forward on 128 x 128 tiles) in all of
# them too, on its own. Each kernel only once its own 90-second probe on the quick list has
# passed (hopper_probe: summary rows probe128h_fwd, probe128hk_fwdk, probe128h_bwd). Each
# stage's duration is in the summary ("time"), to size the next call.
# The build stage uses .gpudeps/bin/longattn.xz when it runs there (it saves minutes of device
# time) and builds with CMake otherwise.
# Knobs (environment): KERNELS (LONGATTN_CUDA_KERNELS, default all), ARCHS (default 90),
# STAGES, DEADLINE, CHECK_FILTER, BENCH_ARGS, PROBE_CAP (seconds for each Hopper probe, 90).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-$PWD/build/gpu_out}
# The device tool returns at most 8 files: logs go to $LOGS and come back as one archive.
LOGS=/tmp/longattn_gpu_logs
rm -rf "$LOGS" && mkdir -p "$OUT" "$LOGS"
KERNELS=${KERNELS:-all}
ARCHS=${ARCHS:-90}
STAGES=${STAGES:-"build core check sanitize bench"}
BUILD=build/gpu
CLI=$BUILD/longattn
start=$(date +%s)
summary=()
stage() { echo; echo "=== [$(( $(date +%s) - start ))s] $*"; }
# Every stage's timeout is cut to what is left of DEADLINE (seconds from the start), so the job
# ends, with its summary and logs archived, inside one device call (10 minutes).
DEADLINE=${DEADLINE:-570}
cap() {
  local left=$(( DEADLINE - ($(date +%s) - start) - 15 ))
  (( left < 1 )) && left=1
  echo $(( $1 < left ? $1 : left ))
}
record() { summary+=("$(printf '%-10s %-6s %s' "$1" "$2" "$3")"); }

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv >"$LOGS/gpu.txt" 2>&1
cat "$LOGS/gpu.txt"

stage_build() {
  stage "build (LONGATTN_CUDA_KERNELS=$KERNELS, archs $ARCHS)"
  deps=/tmp/longattn_deps
  mkdir -p "$deps"
  for f in .gpudeps/debs/*.deb; do [ -e "$f" ] && dpkg -x "$f" "$deps"; done
  export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  # A CLI from an earlier call on this (warm) machine is kept; else the one prebuilt here.
  origin="kept from the last call on this machine"
  if [ ! -x "$CLI" ] && [ -f .gpudeps/bin/longattn.xz ]; then
    mkdir -p "$BUILD"
    xz -dc .gpudeps/bin/longattn.xz >"$CLI" && chmod +x "$CLI"
    origin="prebuilt ($(cat .gpudeps/bin/commit 2>/dev/null))"
  fi
  if [ -x "$CLI" ] && "$CLI" info >"$LOGS/info.txt" 2>&1; then
    record build ok "$origin"
    cat "$LOGS/info.txt"
    return
  fi
  if [ -e "$CLI" ]; then
    echo "the CLI does not run here, building:"; cat "$LOGS/info.txt"
    rm -f "$CLI"
  fi
  if cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLONGATTN_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES="$ARCHS" -DLONGATTN_CUDA_KERNELS="$KERNELS" \
      -DLONGATTN_BUILD_TESTS=OFF -DCMAKE_PREFIX_PATH="$deps/usr" >"$LOGS/build.log" 2>&1 &&
     cmake --build "$BUILD" -j 16 >>"$LOGS/build.log" 2>&1; then
    record build ok "$(( $(date +%s) - start ))s"
  else
    tail -n 40 "$LOGS/build.log"
    record build FAIL "see build.log"
    printf '%s\n' "${summary[@]}"
    exit 1
  fi
  "$CLI" info | tee "$LOGS/info.txt"
}
export LD_LIBRARY_PATH="/tmp/longattn_deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"

# The Hopper (wgmma, 128h) kernels had never run on a GPU when this was written. The first stage
# that needs them runs each once on the quick list under a short cap (the forward with the
# default backward, the backward with the default forward); one that fails or hangs is left out
# of every later stage, so a fault there costs ~90 s and not the whole call, nor the other one.
hopper_fwd=unknown   # the forward on 128 x 64 tiles (128h)
hopper_fwdk=unknown  # the forward on 128 x 128 tiles (128hk)
hopper_bwd=unknown   # the backward (128h)
hopper=unknown       # ok when the 128h forward or backward passed
hopper_probe() {
  [ "$hopper" != unknown ] && return
  local kind var tile rc
  for kind in fwd fwdk bwd; do
    var=LONGATTN_CUDA_FORWARD_TILE
    tile=128h
    [ $kind = fwdk ] && tile=128hk
    [ $kind = bwd ] && var=LONGATTN_CUDA_BACKWARD_TILE
    env "$var=$tile" timeout "$(cap "${PROBE_CAP:-90}")" "$CLI" check --device cuda --quick \
      >"$LOGS/check_quick${tile}_$kind.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then
      printf -v "hopper_$kind" ok
      record "probe${tile}_$kind" ok "$(tail -n 1 "$LOGS/check_quick${tile}_$kind.log")"
    else
      printf -v "hopper_$kind" bad
      grep -E "FAIL" "$LOGS/check_quick${tile}_$kind.log" | head -n 20
      record "probe${tile}_$kind" FAIL "quick list, rc $rc (124: timed out); left out of later stages"
    fi
  done
  hopper=bad
  [ "$hopper_fwd" = ok ] || [ "$hopper_bwd" = ok ] && hopper=ok
}
# The forward tiles whose probe passed (hopper_tile: 128h, 128hk) and "128h" when the backward's
# did (hopper_bwd_tile), else nothing: for the tile lists of the A/B loops (call hopper_probe
# first, in the stage itself: a command substitution's variables do not come back).
hopper_tile() {
  [ "$hopper_fwd" = ok ] && echo 128h
  [ "$hopper_fwdk" = ok ] && echo 128hk
}
hopper_bwd_tile() { [ "$hopper_bwd" = ok ] && echo 128h; }
# The environment that forces the Hopper kernels whose probe passed (for env).
hopper_env() {
  [ "$hopper_fwd" = ok ] && echo LONGATTN_CUDA_FORWARD_TILE=128h
  [ "$hopper_bwd" = ok ] && echo LONGATTN_CUDA_BACKWARD_TILE=128h
}

stage_check() {
  stage "longattn check --device cuda (every case vs the float64 oracle)"
  filter=()
  [ -n "${CHECK_FILTER:-}" ] && filter=(--filter "$CHECK_FILTER")
  timeout "$(cap 400)" "$CLI" check --device cuda "${filter[@]}" >"$LOGS/check.log" 2>&1
  rc=$?
  grep -E "FAIL" "$LOGS/check.log" | head -n 20
  record check "$([ $rc -eq 0 ] && echo ok || echo FAIL)" "$(tail -n 1 "$LOGS/check.log")"
  hopper_probe
  # The rule picks 64- or 128-row forward tiles by shape; run each kernel on the quick list,
  # and the fast backward on 64-key tiles (the default is 128 where instantiated). 128h is the
  # wgmma kernel (sm_90a), taken only when forced until these runs show it correct and faster;
  # it runs the full list with the wgmma backward (a failing row's op names which kernel).
  if [ "$hopper" = ok ]; then
    # shellcheck disable=SC2046
    env $(hopper_env) timeout "$(cap 400)" "$CLI" check --device cuda "${filter[@]}" \
      >"$LOGS/check_full128h.log" 2>&1
    rc=$?
    grep -E "FAIL" "$LOGS/check_full128h.log" | head -n 20
    record check128h "$([ $rc -eq 0 ] && echo ok || echo FAIL)" "full list: $(tail -n 1 "$LOGS/check_full128h.log")"
  fi
  if [ "$hopper_fwdk" = ok ]; then
    LONGATTN_CUDA_FORWARD_TILE=128hk timeout "$(cap 300)" "$CLI" check --device cuda "${filter[@]}" \
      >"$LOGS/check_full128hk.log" 2>&1
    rc=$?
    grep -E "FAIL" "$LOGS/check_full128hk.log" | head -n 20
    record check128hk "$([ $rc -eq 0 ] && echo ok || echo FAIL)" "full list: $(tail -n 1 "$LOGS/check_full128hk.log")"
  fi
  for tile in 64 128t 128w; do
    LONGATTN_CUDA_FORWARD_TILE=$tile LONGATTN_CUDA_BACKWARD_TILE=64 timeout "$(cap 200)" "$CLI" check \
      --device cuda --quick "${filter[@]}" >"$LOGS/check_tile$tile.log" 2>&1
    rc=$?
    grep -E "FAIL" "$LOGS/check_tile$tile.log" | head -n 20
    record "check$tile" "$([ $rc -eq 0 ] && echo ok || echo FAIL)" "$(tail -n 1 "$LOGS/check_tile$tile.log")"
  done
}

# The numbers a short lease must bring back first (a drawn task has had 15 minutes of device time,
# start included: one call): the bars' shapes on the default kernels and on 128h (when the probe
# passed), the masks that trail Flex most in fwd and bwd, and the anchors of the same shapes
# (SDPA flash / cuDNN, and Flex on those masks). One summary line per run.
stage_core() {
  stage "core: bar shapes and four masks, default kernels, 128h and 128hk, with their anchors"
  hopper_probe
  run_bench() {  # name, tile (default / 128h), then the bench arguments
    local name=$1 tile=$2
    shift 2
    local env=()
    # shellcheck disable=SC2207
    [ "$tile" = 128h ] && env=($(hopper_env))
    # The Hopper backward's dQ by per-thread atomics instead of bulk reductions (A/B).
    [ "$tile" = 128h-atomic ] && env=(LONGATTN_CUDA_BACKWARD_TILE=128h LONGATTN_CUDA_HOPPER_DQ=atomic)
    if [ "$tile" = 128hk ]; then
      env=(LONGATTN_CUDA_FORWARD_TILE=128hk)
      [ "$hopper_bwd" = ok ] && env+=(LONGATTN_CUDA_BACKWARD_TILE=128h)
    fi
    env "${env[@]}" timeout "$(cap 60)" "$CLI" bench --device cuda --dtype bf16 --reps 5 --no-check \
      --json "$LOGS/core_${name}_$tile.json" "$@" >"$LOGS/core_${name}_$tile.log" 2>&1
    record "${name}_$tile" "$([ $? -eq 0 ] && echo ok || echo FAIL)" "$(grep '^fwd\|^bwd' \
      "$LOGS/core_${name}_$tile.log" | awk '{printf "%s %s %s TFLOP/s; ", $1, $2, $12}')"
  }
  # (128h: the forward rows where the forward's probe passed, the backward rows where the
  # backward's did; the masks rows force whichever passed. 128hk: its forward rows, and the masks
  # with the 128h backward where that passed.)
  for tile in default $([ "$hopper" = ok ] && echo 128h) $([ "$hopper_fwdk" = ok ] && echo 128hk); do
    if [ "$tile" = default ] || [ "$tile" = 128hk ] || [ "$hopper_fwd" = ok ]; then
      run_bench fwd128 "$tile" --B 1 --H 16 --S 16384 --D 128 --mask full,causal --fwd
      run_bench fwd64 "$tile" --B 1 --H 32 --S 16384 --D 64 --mask full,causal --fwd
    fi
    if [ "$tile" = default ] || { [ "$tile" = 128h ] && [ "$hopper_bwd" = ok ]; }; then
      run_bench bwd128 "$tile" --B 2 --H 16 --S 8192 --D 128 --mask full,causal --bwd
    fi
    if [ "$tile" = 128h ] && [ "$hopper_bwd" = ok ]; then
      run_bench bwd128 128h-atomic --B 2 --H 16 --S 8192 --D 128 --mask full,causal --bwd
    fi
    run_bench masks "$tile" --B 1 --H 64 --Hkv 8 --S 16384 --D 128 \
      --mask full,sliding_window_causal,causal_document,sliding_window
  done
  # One JSON for the summary (the device tool brings back at most 8 files), rows tagged by tile.
  python3 - "$LOGS" "$OUT/core.json" <<'PY'
import glob, json, os, sys
rows = []
for path in sorted(glob.glob(os.path.join(sys.argv[1], "core_*.json"))):
    tile = os.path.basename(path)[:-5].rsplit("_", 1)[1]
    try:
        rows += [dict(r, tile=tile) for r in json.load(open(path))]
    except (OSError, ValueError):
        pass
json.dump(rows, open(sys.argv[2], "w"), indent=1)
PY
  anchors=.gpudeps/anchors
  [ -d "$anchors" ] || anchors=../shared/anchors
  PYTHONUNBUFFERED=1 timeout "$(cap 150)" python3 "$anchors/anchors_gpu.py" --only ceiling,fwd,bwd \
    --S 16384 --json "$OUT/anchors.json" >"$LOGS/anchors.log" 2>&1
  record anchors "$([ $? -eq 0 ] && echo ok || echo FAIL)" "anchors_gpu.py (ceiling, fwd, bwd)"
  PYTHONUNBUFFERED=1 timeout "$(cap 200)" python3 "$anchors/longca_masks_flex.py" --S 16384 \
    --masks full,sliding_window_causal,causal_document,sliding_window \
    --json "$OUT/flex_masks.json" >"$LOGS/flex.log" 2>&1
  record flex "$([ $? -eq 0 ] && echo ok || echo FAIL)" "longca_masks_flex.py (four masks)"
}

stage_sanitize() {
  stage "compute-sanitizer memcheck + racecheck (quick suite)"
  timeout "$(cap 300)" compute-sanitizer --tool memcheck --error-exitcode 9 \
    "$CLI" check --device cuda --quick >"$LOGS/memcheck.log" 2>&1
  rc=$?
  record memcheck "$([ $rc -eq 0 ] && echo ok || echo FAIL)" "$(grep -E 'ERROR SUMMARY' "$LOGS/memcheck.log" | tail -n 1)"
  timeout "$(cap 300)" compute-sanitizer --tool racecheck --error-exitcode 9 \
    "$CLI" check --device cuda --quick --filter pattern >"$LOGS/racecheck.log" 2>&1
  rc=$?
  record racecheck "$([ $rc -eq 0 ] && echo ok || echo FAIL)" "$(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$LOGS/racecheck.log" | tail -n 1)"
  hopper_probe
  if [ "$hopper" = ok ]; then
    # The wgmma forward and backward (forced): memcheck on the quick list, racecheck on the pattern cases.
    # shellcheck disable=SC2046
    env $(hopper_env) timeout "$(cap 300)" compute-sanitizer --tool memcheck \
      --error-exitcode 9 "$CLI" check --device cuda --quick >"$LOGS/memcheck128h.log" 2>&1
    rc=$?
    record memcheck128h "$([ $rc -eq 0 ] && echo ok || echo FAIL)" "$(grep -E 'ERROR SUMMARY' "$LOGS/memcheck128h.log" | tail -n 1)"
    # shellcheck disable=SC2046
    env $(hopper_env) timeout "$(cap 300)" compute-sanitizer --tool racecheck \
      --error-exitcode 9 "$CLI" check --device cuda --quick --filter pattern >"$LOGS/racecheck128h.log" 2>&1
    rc=$?
    record racecheck128h "$([ $rc -eq 0 ] && echo ok || echo FAIL)" "$(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$LOGS/racecheck128h.log" | tail -n 1)"
    # The Hopper forward orders its warpgroups with a named barrier: synccheck checks its use.
    # shellcheck disable=SC2046
    env $(hopper_env) timeout "$(cap 200)" compute-sanitizer --tool synccheck \
      --error-exitcode 9 "$CLI" check --device cuda --quick --filter pattern >"$LOGS/synccheck128h.log" 2>&1
    rc=$?
    record synccheck128h "$([ $rc -eq 0 ] && echo ok || echo FAIL)" "$(grep -E 'ERROR SUMMARY' "$LOGS/synccheck128h.log" | tail -n 1)"
  fi
  if [ "$hopper_fwdk" = ok ]; then
    # The forward on 128 x 128 tiles: memcheck on the quick list, synccheck on the pattern cases.
    LONGATTN_CUDA_FORWARD_TILE=128hk timeout "$(cap 300)" compute-sanitizer --tool memcheck \
      --error-exitcode 9 "$CLI" check --device cuda --quick >"$LOGS/memcheck128hk.log" 2>&1
    rc=$?
    record memcheck128hk "$([ $rc -eq 0 ] && echo ok || echo FAIL)" "$(grep -E 'ERROR SUMMARY' "$LOGS/memcheck128hk.log" | tail -n 1)"
    LONGATTN_CUDA_FORWARD_TILE=128hk timeout "$(cap 200)" compute-sanitizer --tool synccheck \
      --error-exitcode 9 "$CLI" check --device cuda --quick --filter pattern >"$LOGS/synccheck128hk.log" 2>&1
    rc=$?
    record synccheck128hk "$([ $rc -eq 0 ] && echo ok || echo FAIL)" "$(grep -E 'ERROR SUMMARY' "$LOGS/synccheck128hk.log" | tail -n 1)"
  fi
}

stage_bench() {
  stage "longattn bench --device cuda --suite gpu"
  hopper_probe
  # shellcheck disable=SC2086
  timeout "$(cap 420)" "$CLI" bench --device cuda --suite gpu --reps 5 ${BENCH_ARGS:-} \
    --json "$OUT/longattn_gpu.json" >"$LOGS/bench.log" 2>&1
  rc=$?
  record bench "$([ $rc -eq 0 ] && echo ok || echo FAIL)" "$(grep -c '^fwd\|^bwd' "$LOGS/bench.log") rows"
  # A/B of the forward's query tile on the bar's shape (the rule's choice is in bench.log): 64
  # rows, 128 rows on 4 warps x 32 rows (FA2's shape) and on 8 warps x 16 rows.
  # The same at D = 64 (H = 32) and at S = 4096, where the rule weighs waves of each tile.
  for shape in "16 16384 128" "32 16384 64" "16 4096 128"; do
    read -r heads len dim <<<"$shape"
    for tile in $(hopper_tile) 64 128t 128w; do
      LONGATTN_CUDA_FORWARD_TILE=$tile timeout "$(cap 120)" "$CLI" bench --device cuda --dtype bf16 \
        --B 1 --H "$heads" --S "$len" --D "$dim" --mask full,causal --fwd --reps 5 --no-check \
        >"$LOGS/bench_tile${tile}_S${len}_D$dim.log" 2>&1
      record "tile$tile" "$([ $? -eq 0 ] && echo ok || echo FAIL)" "S=$len D=$dim: $(grep '^fwd' \
        "$LOGS/bench_tile${tile}_S${len}_D$dim.log" | awk '{printf "%s %s TFLOP/s; ", $2, $12}')"
    done
  done
  # The sparse masks that trail Flex most, on each forward tile (the rule takes 128 rows there).
  for tile in $(hopper_tile) 64 128t; do
    LONGATTN_CUDA_FORWARD_TILE=$tile timeout "$(cap 120)" "$CLI" bench --device cuda --dtype bf16 \
      --B 1 --H 64 --Hkv 8 --S 16384 --D 128 --mask sliding_window_causal,causal_document --fwd \
      --reps 5 --no-check >"$LOGS/bench_masks_tile$tile.log" 2>&1
    record "masks$tile" "$([ $? -eq 0 ] && echo ok || echo FAIL)" "$(grep '^fwd' \
      "$LOGS/bench_masks_tile$tile.log" | awk '{printf "%s %s TFLOP/s; ", $2, $12}')"
  done
  # The same masks on the rule's tile with row spans and with PARTIAL tiles tested by bitmask
  # only (LONGATTN_CUDA_ROW_SPANS=0), in the order spans, bitmask, spans (clocks and warm-up
  # favour neither): the A/B of the thirteenth session's prediction (bench/NOTES.md).
  for run in spans1 bitmask spans2; do
    spans=1
    [ "$run" = bitmask ] && spans=0
    LONGATTN_CUDA_ROW_SPANS=$spans timeout "$(cap 120)" "$CLI" bench --device cuda --dtype bf16 \
      --B 1 --H 64 --Hkv 8 --S 16384 --D 128 \
      --mask sliding_window_causal,causal_document,sliding_window --fwd --reps 5 --no-check \
      >"$LOGS/bench_masks_$run.log" 2>&1
    record "masks_$run" "$([ $? -eq 0 ] && echo ok || echo FAIL)" "$(grep '^fwd' \
      "$LOGS/bench_masks_$run.log" | awk '{printf "%s %s TFLOP/s; ", $2, $12}')"
  done
  # A/B of the backward on the bar's shape: atomic dQ on 64 x 128 tiles with wgmma (fasth), the
  # same with mma.sync (the default), on 64 x 64 tiles, and the deterministic mode (64 x 64).
  for mode in $([ "$hopper_bwd" = ok ] && echo fasth) fast fast64 deterministic; do
    flag=""
    [ "$mode" = deterministic ] && flag="--deterministic"
    tile=64
    [ "$mode" = fast ] && tile=128
    [ "$mode" = fasth ] && tile=128h
    # shellcheck disable=SC2086
    LONGATTN_CUDA_BACKWARD_TILE=$tile timeout "$(cap 120)" "$CLI" bench --device cuda --dtype bf16 --B 2 --H 16 --S 8192 --D 128 \
      --mask full,causal --bwd --reps 5 --no-check $flag >"$LOGS/bench_bwd_$mode.log" 2>&1
    record "bwd_$mode" "$([ $? -eq 0 ] && echo ok || echo FAIL)" \
      "$(grep '^bwd' "$LOGS/bench_bwd_$mode.log" | awk '{printf "%s %s TFLOP/s; ", $2, $12}')"
  done
}

stage_anchors() {
  anchors=.gpudeps/anchors
  [ -d "$anchors" ] || anchors=../shared/anchors
  stage "anchors: $anchors/anchors_gpu.py (SDPA flash and cuDNN, the same job)"
  PYTHONUNBUFFERED=1 timeout "$(cap 300)" python3 "$anchors/anchors_gpu.py" --only ceiling,fwd,bwd,decode \
    --S 16384 --json "$OUT/anchors.json" >"$LOGS/anchors.log" 2>&1
  record anchors "$([ $? -eq 0 ] && echo ok || echo FAIL)" "anchors_gpu.py"
}

stage_flex() {
  anchors=.gpudeps/anchors
  [ -d "$anchors" ] || anchors=../shared/anchors
  stage "anchors: $anchors/longca_masks_flex.py (FlexAttention, the twelve masks)"
  PYTHONUNBUFFERED=1 timeout "$(cap 400)" python3 "$anchors/longca_masks_flex.py" --S 16384 \
    --json "$OUT/flex_masks.json" >"$LOGS/flex.log" 2>&1
  record flex "$([ $? -eq 0 ] && echo ok || echo FAIL)" "longca_masks_flex.py"
}

stage_profile() {
  stage "ncu: forward (64- and 128-row tiles) and backward kernels on the bar's shape"
  hopper_probe
  # One launch of each kernel; the sections that explain a miss against the floors: tensor-pipe
  # and memory throughput, shared-memory bank conflicts, warp stall reasons, occupancy.
  sections=(--section SpeedOfLight --section ComputeWorkloadAnalysis
            --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy
            --section LaunchStats)
  for tile in $(hopper_tile) 64 128t 128w; do
    LONGATTN_CUDA_FORWARD_TILE=$tile timeout "$(cap 240)" ncu --kernel-name regex:"forward_(mma|wgmma)" \
      --launch-skip 1 --launch-count 1 "${sections[@]}" "$CLI" bench --device cuda --dtype bf16 \
      --B 1 --H 16 --S 16384 --D 128 --mask causal --fwd --reps 1 --no-check \
      >"$LOGS/ncu_fwd_tile$tile.txt" 2>&1
    record "ncu$tile" "$([ $? -eq 0 ] && echo ok || echo FAIL)" "ncu_fwd_tile$tile.txt"
  done
  # The second call of each: fast mode launches dK/dV (with atomic dQ) alone, on 128- and on
  # 64-key tiles; deterministic mode dK/dV then dQ.
  for tile in $(hopper_bwd_tile) 128 64; do
    LONGATTN_CUDA_BACKWARD_TILE=$tile timeout "$(cap 240)" ncu --kernel-name regex:"dkdv_mma|backward_wgmma" \
      --launch-skip 1 --launch-count 1 "${sections[@]}" "$CLI" bench --device cuda --dtype bf16 \
      --B 2 --H 16 --S 8192 --D 128 --mask causal --bwd --reps 1 --no-check \
      >"$LOGS/ncu_bwd_tile$tile.txt" 2>&1
    record "ncubwd$tile" "$([ $? -eq 0 ] && echo ok || echo FAIL)" "ncu_bwd_tile$tile.txt"
  done
  timeout "$(cap 240)" ncu --kernel-name regex:"dkdv_mma|dq_mma" --launch-skip 2 --launch-count 2 \
    "${sections[@]}" "$CLI" bench --device cuda --dtype bf16 --B 2 --H 16 --S 8192 --D 128 \
    --mask causal --bwd --reps 1 --no-check --deterministic >"$LOGS/ncu_bwd_det.txt" 2>&1
  record ncubwdet "$([ $? -eq 0 ] && echo ok || echo FAIL)" "ncu_bwd_det.txt"
}

stage_hotspots() {
  stage "ncu SourceCounters: stall samples per SASS instruction (forward full / sliding window, backward)"
  # The forward on the bar's shape and on the mask benchmark's worst case against Flex (64 q / 8
  # KV heads, S = 16384, window S/16), and the fast backward: where do the warps wait?
  local runs=(
    "fwd_full|forward_mma|--B 1 --H 16 --S 16384 --D 128 --mask full --fwd"
    "fwd_swc|forward_mma|--B 1 --H 64 --Hkv 8 --S 16384 --D 128 --mask sliding_window_causal --fwd"
    "bwd_full|dkdv_mma|--B 2 --H 16 --S 8192 --D 128 --mask full --bwd"
  )
  for run in "${runs[@]}"; do
    IFS='|' read -r name kernel args <<<"$run"
    # shellcheck disable=SC2086
    timeout "$(cap 200)" ncu --kernel-name regex:"$kernel" --launch-skip 1 --launch-count 1 \
      --section SourceCounters --section WarpStateStats --import-source no -f -o "$LOGS/hot_$name" \
      "$CLI" bench --device cuda --dtype bf16 $args --reps 1 --no-check >"$LOGS/hot_$name.log" 2>&1
    timeout "$(cap 60)" ncu --import "$LOGS/hot_$name.ncu-rep" --page source --csv --print-source sass \
      >"$LOGS/hot_$name.csv" 2>>"$LOGS/hot_$name.log"
    python3 bench/ncu_hotspots.py "$LOGS/hot_$name.csv" >"$LOGS/hot_$name.txt" 2>&1
    record "hot_$name" "$([ $? -eq 0 ] && echo ok || echo FAIL)" "hot_$name.txt"
    head -n 30 "$LOGS/hot_$name.txt"
  done
}

stage_python() {
  stage "Python: pip install . (CUDA build), GPU tests, bench/compare.py"
  # A wheel built here for the device's Python (scripts/fetch_gpu_deps.sh with WHEEL=1) saves
  # the CUDA build; else build there (no network: the installed scikit-build-core and nanobind).
  wheel=$(ls .gpudeps/wheels/longattn-*-cp312-*.whl 2>/dev/null | head -n 1)
  if [ -n "$wheel" ] && python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
    timeout "$(cap 120)" python3 -m pip install -q --no-deps --force-reinstall "$wheel" >"$LOGS/pip.log" 2>&1
    record pip "$([ $? -eq 0 ] && echo ok || echo FAIL)" "pip install $(basename "$wheel")"
  else
    timeout "$(cap 400)" python3 -m pip install -q --no-build-isolation --no-deps . \
      -C cmake.define.CMAKE_CUDA_ARCHITECTURES="$ARCHS" -C cmake.define.LONGATTN_CUDA_KERNELS="$KERNELS" \
      >"$LOGS/pip.log" 2>&1
    record pip "$([ $? -eq 0 ] && echo ok || echo FAIL)" "pip install ."
  fi
  (cd python/tests && timeout "$(cap 300)" python3 -m pytest -q -p no:cacheprovider . >"$LOGS/pytest.log" 2>&1)
  record pytest "$([ $? -eq 0 ] && echo ok || echo FAIL)" "$(tail -n 1 "$LOGS/pytest.log")"
  PYTHONUNBUFFERED=1 timeout "$(cap 300)" python3 bench/compare.py --device cuda --dtype bfloat16 \
    --S 4096,16384 --Hq 16 --Hkv 16 --json "$OUT/compare.json" >"$LOGS/compare.log" 2>&1
  record compare "$([ $? -eq 0 ] && echo ok || echo FAIL)" "bench/compare.py (table in compare.log)"
  tail -n 30 "$LOGS/compare.log"
  # Generation loops: a KV cache growing by one token per step against a fixed length (the host
  # cost of a new length: schedule build, stream-ordered upload, no device-wide sync).
  for shape in "--B 16 --kv 32768 --steps 100" "--B 1 --kv 4096 --steps 300"; do
    PYTHONUNBUFFERED=1 timeout "$(cap 120)" python3 bench/decode_loop.py --device cuda $shape \
      >>"$LOGS/decode_loop.log" 2>&1
    record decode_loop "$([ $? -eq 0 ] && echo ok || echo FAIL)" "bench/decode_loop.py $shape"
  done
  cat "$LOGS/decode_loop.log"
}

for name in $STAGES; do
  if declare -F "stage_$name" >/dev/null; then
    stage_start=$(date +%s)
    "stage_$name"
    record "$name" time "$(( $(date +%s) - stage_start ))s (stage)"
  else
    record "$name" FAIL "unknown stage"
  fi
done

stage "summary"
python3 bench/gpu_summary.py "$OUT" | tee "$OUT/summary.txt"
printf '%s\n' "${summary[@]}" | tee -a "$OUT/summary.txt"
tar -czf "$OUT/logs.tgz" -C "$LOGS" .
