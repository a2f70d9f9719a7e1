"""python -m longattn.report: draws `longattn bench --json` and bench/compare.py --json rows."""

import json

import pytest

pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install longattn[report])")

from longattn import report  # noqa: E402


def rows(impl, dtype, tflops, **shape):
    base = dict(op="fwd", impl=impl, dtype=dtype, mask="causal", B=1, Hq=16, Hkv=16, D=128)
    base.update(shape)
    return [dict(base, Sq=s, Skv=shape.get("Skv", s), tflops=tflops * s / 16384, ms=1.0)
            for s in (4096, 8192, 16384)]


def test_bench_and_compare_rows_share_panels(tmp_path):
    bench = tmp_path / "bench.json"
    compare = tmp_path / "compare.json"
    bench.write_text(json.dumps(rows("longattn", "bf16", 280.0)))
    # compare.py rows, with the dtype spelled the torch way as in files written before the fix
    compare.write_text(json.dumps(rows("sdpa-flash", "bfloat16", 330.0)
                                  + rows("sdpa-flash", "bf16", 300.0, D=64)
                                  + [dict(rows("longattn", "bf16", 1.0, Sq=1)[0], Sq=1, Skv=4096)]))
    loaded = report.load_rows([str(bench), str(compare)])
    assert {r["dtype"] for r in loaded} == {"bf16"}
    panels = {report.panel_key(r) for r in loaded}
    # D=128 prefill (both files), D=64 prefill, and the decode row on a panel of its own.
    assert len(panels) == 3, panels
    fig = report.figure(loaded)
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert len(titled) == 3
    d128 = next(ax for ax in titled if "D=128" in ax.get_title() and "Sq=" not in ax.get_title())
    assert len(d128.get_lines()) == 2  # longattn and sdpa-flash on one plot
    for out in ("report.png", "report.html"):
        path = tmp_path / out
        assert report.main([str(bench), str(compare), "-o", str(path)]) == 0
        assert path.stat().st_size > 1000
    assert "max_abs_diff" in (tmp_path / "report.html").read_text()
