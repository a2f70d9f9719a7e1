#!/usr/bin/env python3
"""Where a kernel's warps wait, per SASS instruction, from an Nsight Compute report exported as
CSV (``ncu --import R.ncu-rep --page source --csv --print-source sass > R.csv``, with the
SourceCounters section collected). Prints the columns found, the stall samples per opcode and
the hottest instructions with their neighbours, so a miss against the floors can be read off
without the GUI.

  python3 bench/ncu_hotspots.py R.csv [--top 40]
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections import Counter


def number(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def column(header, *needles):
    """The first column whose name contains every needle (case-insensitive)."""
    for i, name in enumerate(header):
        if all(n.lower() in name.lower() for n in needles):
            return i
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=40)
    a = ap.parse_args(argv)
    with open(a.csv, newline="") as f:
        rows = list(csv.reader(f))
    # The export may start with report lines before the header: the header holds "Source".
    start = next((i for i, r in enumerate(rows) if any(c.strip() == "Source" for c in r)), None)
    if start is None:
        print(f"{a.csv}: no 'Source' column (was the SourceCounters section collected?)")
        return 1
    header, body = rows[start], [r for r in rows[start + 1:] if len(r) == len(rows[start])]
    print("columns:", " | ".join(header))
    src = column(header, "source")
    samples = column(header, "stall sampling", "all") or column(header, "samples")
    not_issued = column(header, "stall sampling", "not")
    executed = column(header, "instructions executed")
    if samples is None:
        print("no stall-sampling column")
        return 1
    total = sum(number(r[samples]) for r in body) or 1.0
    per_op, executed_op = Counter(), Counter()
    for r in body:
        m = re.match(r"\s*(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", r[src])
        op = m.group(1) if m else "?"
        per_op[op] += number(r[samples])
        if executed is not None:
            executed_op[op] += number(r[executed])
    print(f"\nstall samples per opcode (of {total:.0f}; executed warp instructions beside)")
    for op, s in per_op.most_common(20):
        print(f"  {op:<10} {100 * s / total:5.1f} %  executed {executed_op[op]:.3g}")
    print(f"\nthe {a.top} hottest instructions (index, % of samples, not-issued %, source)")
    order = sorted(range(len(body)), key=lambda i: -number(body[i][samples]))[: a.top]
    for i in sorted(order):
        r = body[i]
        ni = f"{100 * number(r[not_issued]) / total:5.1f}" if not_issued is not None else "  -  "
        print(f"  {i:6d} {100 * number(r[samples]) / total:5.1f} {ni}  {r[src].strip()[:100]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
