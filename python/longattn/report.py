"""Draws benchmark results: TFLOP/s against sequence length, per mask and implementation.

    python -m longattn.report RESULTS.json [MORE.json ...] -o report.png   (or report.html)

Reads the rows written by ``longattn bench --json`` and ``bench/compare.py --json`` (fields
``op``, ``impl``, ``dtype``, ``mask``, ``Sq``, ``tflops`` in TFLOP/s; ``B``, ``Hq``, ``Hkv``,
``D``, ``Skv`` where present). One panel per operation, dtype and shape (batch, heads, head
dim; decode rows, whose query length differs from the key length, get panels of their own).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
from collections import defaultdict
from typing import Dict, List


# Older compare.py files spelled dtypes the torch way.
_DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def load_rows(paths: List[str]) -> List[dict]:
    rows = []
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        rows.extend(data if isinstance(data, list) else data.get("rows", []))
    rows = [r for r in rows if "tflops" in r and "Sq" in r and r.get("tflops") is not None]
    for r in rows:
        r["dtype"] = _DTYPE_ALIASES.get(r.get("dtype"), r.get("dtype", "?"))
    return rows


def panel_key(r: dict) -> tuple:
    """(op, dtype, shape text): rows that share a plot."""
    shape = f"B={r.get('B', '?')} Hq={r.get('Hq', '?')} Hkv={r.get('Hkv', '?')} D={r.get('D', '?')}"
    if "Skv" in r and int(r["Skv"]) != int(r["Sq"]):
        shape += f" Sq={r['Sq']}"  # decode / cross attention: x is then the key length
    return (r.get("op", "fwd"), r.get("dtype", "?"), shape)


def x_of(r: dict) -> int:
    return int(r["Skv"]) if "Skv" in r and int(r["Skv"]) != int(r["Sq"]) else int(r["Sq"])


def is_decode(r: dict) -> bool:
    """A few queries against a long KV cache: drawn as bandwidth, not FLOP rate."""
    return int(r["Sq"]) <= 16 and "Skv" in r and int(r["Skv"]) > int(r["Sq"]) and "gbps" in r


def metric(r: dict) -> float:
    return float(r["gbps"]) / 1e3 if is_decode(r) else float(r["tflops"])


def figure(rows: List[dict]):
    """One panel per (op, dtype, shape): lines over the sequence length, or, where a panel has
    a single length, bars per mask and implementation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: Dict[tuple, Dict[tuple, dict]] = defaultdict(lambda: defaultdict(dict))
    decode_panels = set()
    for r in rows:
        key = panel_key(r)
        if is_decode(r):
            decode_panels.add(key)
        pts = panels[key][(r.get("mask", "?"), r.get("impl", "?"))]
        x, y = x_of(r), metric(r)
        pts[x] = max(y, pts.get(x, y))  # repeated measurements of one point: the best
    # A line panel comparing several implementations over several masks gets one plot per mask.
    for key in list(panels):
        series = panels[key]
        lengths = {x for pts in series.values() for x in pts}
        masks = {m for m, _ in series}
        if len(lengths) > 1 and len(masks) > 1 and len({i for _, i in series}) > 1:
            del panels[key]
            for (mask, impl), pts in series.items():
                sub = (key[0], key[1], f"{key[2]}, {mask}")
                panels[sub][(mask, impl)] = pts
                if key in decode_panels:
                    decode_panels.add(sub)
    n = max(1, len(panels))
    cols = min(2, n)
    rows_n = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(7 * cols, 4.5 * rows_n), squeeze=False)
    for ax, (key, series) in zip(axes.flat, sorted(panels.items())):
        op, dtype, shape = key
        xs_all = sorted({x for pts in series.values() for x in pts})
        if len(xs_all) == 1:
            masks = sorted({m for m, _ in series})
            impls = sorted({i for _, i in series}, key=lambda i: (i != "longattn", i))
            width = 0.8 / len(impls)
            for k, impl in enumerate(impls):
                ys = [series.get((m, impl), {}).get(xs_all[0], 0.0) for m in masks]
                ax.bar([j + k * width for j in range(len(masks))], ys, width, label=impl)
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(masks))])
            ax.set_xticklabels(masks, rotation=35, ha="right", fontsize=7)
            ax.set_xlabel(f"mask ({'key length' if 'Sq=' in shape else 'S'} = {xs_all[0]})")
        else:
            for (mask, impl), pts in sorted(series.items()):
                xs, ys = zip(*sorted(pts.items()))
                style = "-o" if impl == "longattn" else "--s"
                label = impl if mask in shape else f"{mask} ({impl})"
                ax.plot(xs, ys, style, label=label, markersize=4)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("key length" if "Sq=" in shape else "sequence length")
        ax.set_ylabel("TB/s of K/V read" if key in decode_panels else "TFLOP/s (unmasked area)")
        ax.set_title(f"{op} {dtype}, {shape}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def table_html(rows: List[dict]) -> str:
    cols = ["op", "impl", "dtype", "mask", "B", "Hq", "Hkv", "Sq", "Skv", "D", "ms", "tflops", "rel_err",
            "max_abs_diff"]
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{r.get(c, '')}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table border=1 cellspacing=0 cellpadding=3><tr>{head}</tr>{body}</table>"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", help="JSON files from longattn bench --json or compare.py --json")
    ap.add_argument("-o", "--output", default="report.png", help="report.png or report.html")
    a = ap.parse_args(argv)
    rows = load_rows(a.results)
    if not rows:
        ap.error("no rows with Sq and tflops in the given files")
    fig = figure(rows)
    if a.output.endswith(".html"):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        img = base64.b64encode(buf.getvalue()).decode()
        with open(a.output, "w") as f:
            f.write("<html><head><meta charset='utf-8'><title>longattn report</title></head><body>"
                    f"<h1>longattn benchmark report</h1><img src='data:image/png;base64,{img}'/>"
                    f"{table_html(rows)}</body></html>")
    else:
        fig.savefig(a.output, dpi=110)
    print(f"wrote {a.output} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
