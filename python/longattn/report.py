"""Draws benchmark results: TFLOP/s against sequence length, per mask and implementation.

    python -m longattn.report RESULTS.json [MORE.json ...] -o report.png   (or report.html)

Reads the rows written by ``longattn bench --json`` and ``bench/compare.py --json`` (fields
``op``, ``impl``, ``dtype``, ``mask``, ``Sq``, ``tflops``).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
from collections import defaultdict
from typing import Dict, List


def load_rows(paths: List[str]) -> List[dict]:
    rows = []
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        rows.extend(data if isinstance(data, list) else data.get("rows", []))
    return [r for r in rows if "tflops" in r and "Sq" in r and r.get("tflops") is not None]


def figure(rows: List[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: Dict[tuple, Dict[tuple, list]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        panels[(r.get("op", "fwd"), r.get("dtype", "?"))][(r.get("mask", "?"), r.get("impl", "?"))].append(
            (int(r["Sq"]), float(r["tflops"])))
    n = max(1, len(panels))
    cols = min(2, n)
    rows_n = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(7 * cols, 4.5 * rows_n), squeeze=False)
    for ax, ((op, dtype), series) in zip(axes.flat, sorted(panels.items())):
        for (mask, impl), pts in sorted(series.items()):
            pts.sort()
            xs, ys = zip(*pts)
            style = "-o" if impl == "longattn" else "--s"
            ax.plot(xs, ys, style, label=f"{mask} ({impl})", markersize=4)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length")
        ax.set_ylabel("TFLOP/s (unmasked area)")
        ax.set_title(f"{op} {dtype}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def table_html(rows: List[dict]) -> str:
    cols = ["op", "impl", "dtype", "mask", "B", "Hq", "Hkv", "Sq", "Skv", "D", "ms", "tflops", "rel_err"]
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
