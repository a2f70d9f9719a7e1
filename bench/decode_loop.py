#!/usr/bin/env python3
"""A generation loop's decode steps: one query token per step against a KV cache that grows by
one token per step (the shape a serving engine sees), beside the same loop at a fixed KV length,
for longattn and PyTorch SDPA. Steps are enqueued back to back and timed over the whole loop,
so host work that cannot overlap the GPU (a blocking copy or free, schedule building for each
new length) shows up as time per step.

  python3 bench/decode_loop.py --device cuda --B 16 --kv 32768 --steps 200
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

import longattn


def loop_us(step, steps: int, sync) -> float:
    """Microseconds per step of `steps` calls of step(i), after a short warm-up."""
    for i in range(3):
        step(i)
    sync()
    t0 = time.perf_counter()
    for i in range(3, 3 + steps):  # past the warm-up's lengths: each growing step is new
        step(i)
    sync()
    return (time.perf_counter() - t0) * 1e6 / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--B", type=int, default=16)
    ap.add_argument("--Hq", type=int, default=32)
    ap.add_argument("--Hkv", type=int, default=8)
    ap.add_argument("--D", type=int, default=128)
    ap.add_argument("--kv", type=int, default=32768, help="KV length at the first step")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args()

    dev = torch.device(a.device)
    dtype = getattr(torch, a.dtype)
    cap = a.kv + a.steps + 3
    gen = torch.Generator(device="cpu").manual_seed(0)
    k_cache = torch.randn(a.B, cap, a.Hkv, a.D, generator=gen).to(dev, dtype)
    v_cache = torch.randn(a.B, cap, a.Hkv, a.D, generator=gen).to(dev, dtype)
    q = torch.randn(a.B, 1, a.Hq, a.D, generator=gen).to(dev, dtype)
    out = torch.empty_like(q)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def ours(length):
        return lambda i: longattn.attention(q, k_cache[:, : length(i)], v_cache[:, : length(i)], out=out)

    def sdpa(length):
        qt = q.transpose(1, 2)

        def step(i):
            n = length(i)
            return F.scaled_dot_product_attention(
                qt, k_cache[:, :n].transpose(1, 2), v_cache[:, :n].transpose(1, 2), enable_gqa=True)

        return step

    # Same result at one length first: a loop of wrong answers would time nothing useful.
    ref = sdpa(lambda i: a.kv)(0).transpose(1, 2).float()
    got = ours(lambda i: a.kv)(0).float()
    err = (got - ref).abs().max().item()
    if err > 2e-2:
        raise SystemExit(f"longattn and SDPA disagree at KV {a.kv}: max abs {err:.3g}")

    rows = []
    print(f"decode loop, {a.device}, {a.dtype}, B={a.B} Hq={a.Hq} Hkv={a.Hkv} D={a.D}, "
          f"KV {a.kv} (+1 per step when growing), {a.steps} steps (max abs diff {err:.2e})")
    print(f"{'impl':10s} {'fixed us/step':>14s} {'growing us/step':>16s}")
    for name, make in (("longattn", ours), ("sdpa", sdpa)):
        fixed = loop_us(make(lambda i: a.kv), a.steps, sync)
        growing = loop_us(make(lambda i: a.kv + i), a.steps, sync)
        rows.append({"impl": name, "B": a.B, "Hq": a.Hq, "Hkv": a.Hkv, "D": a.D, "kv": a.kv,
                     "fixed_us": fixed, "growing_us": growing, "device": a.device, "dtype": a.dtype})
        print(f"{name:10s} {fixed:14.1f} {growing:16.1f}")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
