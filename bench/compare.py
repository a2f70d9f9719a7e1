#!/usr/bin/env python3
"""longattn beside PyTorch SDPA (every backend the device offers) and FlexAttention, in one
process, on the same shapes and masks, forward and (with --op fwd,bwd) backward. Prints times,
TFLOP/s over the unmasked area (backward: 2.5x the forward's FLOPs, as `longattn bench`) and the
time relative to longattn; --json writes the rows in `longattn bench --json`'s fields and units
(``python -m longattn.report`` draws either).

  python3 bench/compare.py --S 1024,4096 --masks full,causal,sliding_window_causal --json out.json

Masks follow the LongCA-bench semantics (``../shared/anchors/longca_masks_flex.py``); SDPA gets
them as dense boolean masks (it has no block sparsity), FlexAttention as block masks.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

import longattn
from longattn import masks as lmasks


def dense_mask(name: str, s: int, window: int, doc_lens):
    """The [S, S] boolean mask of a benchmark pattern (True = visible)."""
    q = torch.arange(s)[:, None]
    k = torch.arange(s)[None, :]
    doc = torch.repeat_interleave(torch.arange(len(doc_lens)), torch.tensor(doc_lens))
    start = torch.repeat_interleave(torch.cumsum(torch.tensor([0] + list(doc_lens[:-1])), 0), torch.tensor(doc_lens))
    dq, dk = doc[:, None], doc[None, :]
    cd = (dq == dk) & (k <= q)
    last = len(doc_lens) - 1
    w, p, bs = window, s // 8, s // 8
    table = {
        "full": torch.ones(s, s, dtype=torch.bool),
        "causal": k <= q,
        "full_document": dq == dk,
        "causal_document": cd,
        "sliding_window": (q - k).abs() <= w,
        "sliding_window_causal": (k <= q) & (q - k <= w),
        "global_sliding_window": ((q - k).abs() <= w) | (q < 2 * w) | (k < 2 * w),
        "share_question": cd | ((dk == 0) & (dq != 0)),
        "causal_blockwise": cd | ((dq == last) & (dk != last)),
        "prefix_lm_causal": (k <= q) | (k <= p),
        "prefix_lm_document": cd | ((dq == dk) & (k - start[None, :] <= p)),
        "block_causal_document": (dq == dk) & (k < (q // bs + 1) * bs),
    }
    return table[name]


MASK_NAMES = ("full", "causal", "full_document", "causal_document", "sliding_window",
              "sliding_window_causal", "global_sliding_window", "share_question", "causal_blockwise",
              "prefix_lm_causal", "prefix_lm_document", "block_causal_document")


def longattn_mask(name: str, s: int, window: int, doc_lens):
    return lmasks.pattern(name, doc_lens=doc_lens, window=window, prefix=s // 8, block=s // 8)


# dtype names as `longattn bench` writes them, so the two JSON files draw in one report.
CLI_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def median_ms(fn, warm: int, reps: int, sync) -> float:
    for _ in range(warm):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--S", default="1024,2048")
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--Hq", type=int, default=8)
    ap.add_argument("--Hkv", type=int, default=1)
    ap.add_argument("--D", type=int, default=128)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--masks", default="full,causal,sliding_window_causal,causal_document",
                    help="comma-separated, from: " + ",".join(MASK_NAMES))
    ap.add_argument("--op", default="fwd", help="fwd, bwd or fwd,bwd")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-flex", action="store_true", help="skip FlexAttention (compiles with inductor)")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    for name in a.masks.split(","):
        if name not in MASK_NAMES:
            ap.error(f"--masks: unknown mask '{name}' (expected one of {', '.join(MASK_NAMES)})")
    ops = a.op.split(",")
    for op in ops:
        if op not in ("fwd", "bwd"):
            ap.error(f"--op: expected fwd, bwd or fwd,bwd, got '{op}'")
    dev = torch.device(a.device)
    dtype = getattr(torch, a.dtype)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    backends = {"sdpa-math": torch.nn.attention.SDPBackend.MATH,
                "sdpa-flash": torch.nn.attention.SDPBackend.FLASH_ATTENTION}
    if dev.type == "cuda":
        backends["sdpa-cudnn"] = torch.nn.attention.SDPBackend.CUDNN_ATTENTION
        backends["sdpa-efficient"] = torch.nn.attention.SDPBackend.EFFICIENT_ATTENTION
    flex = None
    if not a.no_flex:
        try:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention
            flex = (torch.compile(flex_attention), create_block_mask)
        except Exception as err:  # noqa: BLE001 - report and go on
            print(f"# FlexAttention unavailable: {err}")
    rows = []
    print(f"{'op':<4} {'mask':<22} {'S':>6} {'impl':<16} {'ms':>10} {'TFLOP/s':>9} {'vs longattn':>12} "
          f"{'max|diff|':>10}")
    for s in [int(x) for x in a.S.split(",")]:
        window = max(1, s // 16)
        docs = lmasks.random_documents(s, max(1, s // 64), max(1, s // 4), 42)
        g = torch.Generator().manual_seed(0)
        q = torch.randn(a.B, s, a.Hq, a.D, generator=g).to(dev, dtype)
        k = torch.randn(a.B, s, a.Hkv, a.D, generator=g).to(dev, dtype)
        v = torch.randn(a.B, s, a.Hkv, a.D, generator=g).to(dev, dtype)
        dout = torch.randn(a.B, s, a.Hq, a.D, generator=g).to(dev, dtype)
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # [B, H, S, D] views for torch
        for name in a.masks.split(","):
            dense = dense_mask(name, s, window, docs).to(dev)
            area = int(dense.sum()) * a.B
            lm = longattn_mask(name, s, window, docs)
            impls = {"longattn": lambda q_, k_, v_: longattn.attention(q_, k_, v_, mask=lm)}
            for impl, be in backends.items():
                kwargs = dict(is_causal=True) if name == "causal" else dict(attn_mask=dense)
                if name == "full":
                    kwargs = {}

                def sdpa(q_, k_, v_, be=be, kwargs=kwargs):
                    with torch.nn.attention.sdpa_kernel([be]):
                        return F.scaled_dot_product_attention(q_.transpose(1, 2), k_.transpose(1, 2),
                                                              v_.transpose(1, 2), enable_gqa=True,
                                                              **kwargs).transpose(1, 2)
                impls[impl] = sdpa
            if flex is not None:
                fa, cbm = flex
                try:
                    dm = dense
                    bm = cbm(lambda b, h, qi, ki: dm[qi, ki], None, None, s, s, device=a.device)
                    impls["flex"] = lambda q_, k_, v_, bm=bm: fa(
                        q_.transpose(1, 2), k_.transpose(1, 2), v_.transpose(1, 2), block_mask=bm,
                        enable_gqa=True).transpose(1, 2)
                except Exception as err:  # noqa: BLE001 - report and go on
                    print(f"# flex {name} S={s}: {str(err).splitlines()[0][:100]}")
            for op in ops:
                flops = 4.0 * area * a.Hq * a.D * (2.5 if op == "bwd" else 1.0)
                results = []
                ours = None
                for impl, fn in impls.items():
                    try:
                        if op == "fwd":
                            run = lambda fn=fn: fn(q, k, v)
                            got = [run()]
                        else:
                            leaves = [x.detach().requires_grad_() for x in (q, k, v)]
                            out = fn(*leaves)

                            def run(out=out, leaves=leaves):
                                return torch.autograd.grad(out, leaves, dout, retain_graph=True)
                            got = list(run())
                        t = median_ms(run, 1, a.reps, sync)
                    except Exception as err:  # noqa: BLE001 - a backend may refuse a mask
                        print(f"# {impl} {op} {name} S={s}: {str(err).splitlines()[0][:100]}")
                        continue
                    if ours is None:
                        ours = got
                    diff = max((x.float() - y.float()).nan_to_num().abs().max().item()
                               for x, y in zip(got, ours))
                    results.append((impl, t, diff))
                if not results or results[0][0] != "longattn":
                    continue
                t_ours = results[0][1]
                for impl, t, diff in results:
                    tf = flops / t / 1e9  # TFLOP/s (t in ms)
                    print(f"{op:<4} {name:<22} {s:>6} {impl:<16} {t:>10.3f} {tf:>9.2f} {t / t_ours:>11.2f}x "
                          f"{diff:>10.2e}")
                    rows.append({"op": op, "impl": impl, "device": a.device, "dtype": CLI_DTYPE[a.dtype],
                                 "mask": name, "B": a.B, "Hq": a.Hq, "Hkv": a.Hkv, "Sq": s, "Skv": s,
                                 "D": a.D, "ms": t, "tflops": tf, "time_vs_longattn": t / t_ours,
                                 "max_abs_diff": diff, "unmasked_fraction": area / (a.B * s * s)})
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"# wrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
