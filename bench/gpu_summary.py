#!/usr/bin/env python3
"""Side-by-side table of one GPU job: longattn (`longattn bench --device cuda --json`) against
the anchors measured in the same job (anchors_gpu.py: SDPA flash/cuDNN; longca_masks_flex.py:
FlexAttention). Usage: python3 bench/gpu_summary.py OUT_DIR  (reads the JSON files there)."""
import json
import os
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return []


def fmt(x):
    return f"{x:8.1f}" if isinstance(x, (int, float)) else f"{'-':>8}"


def ratio(a, b):
    return f"{a / b:6.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else f"{'-':>7}"


def tables(ours, anchors, flex, label):
    """The dense, decode and mask tables of one set of longattn rows against the anchors."""
    print(f"== {label}")

    def anchor(kind, impl, D, S, causal):
        for r in anchors:
            if (r.get("kind") == kind and r.get("impl") == impl and r.get("D") == D
                    and r.get("S") == S and r.get("causal") == causal and "tflops" in r):
                return r["tflops"]
        return None

    print("dense (bf16; anchors_gpu.py shapes)      TFLOP/s: longattn  sdpa-flash  sdpa-cudnn  vs flash")
    for r in ours:
        if r.get("mask") not in ("full", "causal") or r.get("Hq") == 64 or r.get("Sq") == 1:
            continue
        causal = r["mask"] == "causal"
        kind = r["op"]
        fl = anchor(kind, "sdpa-flash", r["D"], r["Sq"], causal)
        cu = anchor(kind, "sdpa-cudnn", r["D"], r["Sq"], causal)
        shape = f"{kind} {r['mask']:<7} B={r['B']} H={r['Hq']} S={r['Sq']} D={r['D']}"
        print(f"  {shape:<42}{fmt(r['tflops'])}  {fmt(fl)}    {fmt(cu)}    {ratio(r['tflops'], fl)}")

    print("\ndecode (1 query, 32 q / 8 kv heads, D=128)   K+V TB/s and us: longattn  sdpa-flash  sdpa-cudnn")
    for r in ours:
        if r.get("Sq") != 1:
            continue
        kv_bytes = 2 * r["B"] * r["Skv"] * r["Hkv"] * r["D"] * 2
        tbps = kv_bytes / (r["ms"] * 1e-3) / 1e12
        ref = {a["impl"]: a for a in anchors if a.get("kind") == "decode" and a.get("B") == r["B"]
               and a.get("L") == r["Skv"] and "TBps" in a}
        fl, cu = ref.get("sdpa-flash", {}), ref.get("sdpa-cudnn", {})
        print(f"  B={r['B']:<3} KV={r['Skv']:<7} {tbps:6.2f} TB/s {r['ms'] * 1e3:8.1f} us   "
              f"flash {fmt(fl.get('TBps'))} TB/s {fmt(fl.get('ms', 0) * 1e3)} us   "
              f"cudnn {fmt(cu.get('TBps'))} TB/s")

    print("\nmasks (64 q / 8 kv heads, D=128, S=16384)  TFLOP/s over the unmasked area")
    print(f"  {'mask':<24} {'fwd':>8} {'flex':>8} {'ratio':>7}   {'bwd':>8} {'flex':>8} {'ratio':>7}")
    flex_by_mask = {r["mask"]: r for r in flex if r.get("impl") == "flex"}
    by_mask = {}
    for r in ours:
        if r.get("Hq") == 64:
            by_mask.setdefault(r["mask"], {})[r["op"]] = r["tflops"]
    for mask, ops in by_mask.items():
        f = flex_by_mask.get(mask, {})
        print(f"  {mask:<24} {fmt(ops.get('fwd'))} {fmt(f.get('fwd_tflops'))} "
              f"{ratio(ops.get('fwd'), f.get('fwd_tflops'))}   {fmt(ops.get('bwd'))} "
              f"{fmt(f.get('bwd_tflops'))} {ratio(ops.get('bwd'), f.get('bwd_tflops'))}")
    if not ours:
        print("  (no rows: the stage did not run or failed)")
    print()


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", ".")
    ours = load(os.path.join(out, "longattn_gpu.json"))
    anchors = load(os.path.join(out, "anchors.json"))
    flex = load(os.path.join(out, "flex_masks.json"))
    # The core stage of gpu_job.sh: the same tables once per kernel choice ("tile").
    core = load(os.path.join(out, "core.json"))
    for tile in sorted({r.get("tile", "?") for r in core}):
        rows = [r for r in core if r.get("tile", "?") == tile]
        tables(rows, anchors, flex, f"core stage, kernels: {tile}")
    if ours or not core:
        tables(ours, anchors, flex, "bench stage (longattn bench --suite gpu)")


if __name__ == "__main__":
    main()
