"""NumPy inputs against the float64 oracle backend and an independent float64 NumPy attention."""

import zlib

import numpy as np
import pytest

import longattn
from longattn import masks


def rand(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, size=shape).astype(np.float32)


def naive(q, k, v, causal=False, scale=None):
    """float64 attention in NumPy, [B, S, H, D], GQA by head repetition."""
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    b, sq, hq, d = q.shape
    skv, hkv = k.shape[1], k.shape[2]
    k = np.repeat(k, hq // hkv, axis=2)
    v = np.repeat(v, hq // hkv, axis=2)
    s = np.einsum("bihd,bjhd->bhij", q, k) * (scale if scale else 1 / np.sqrt(d))
    if causal:
        i = np.arange(sq)[:, None] + (skv - sq)
        j = np.arange(skv)[None, :]
        s = np.where(j <= i, s, -np.inf)
    with np.errstate(invalid="ignore"):
        s = s - s.max(-1, keepdims=True)  # fully masked rows become NaN, compared only where finite
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhij,bjhd->bihd", p, v)


def test_import_does_not_need_torch():
    import subprocess
    import sys
    code = "import sys, longattn; assert 'torch' not in sys.modules; print(longattn.runtime_info())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "cpu" in done.stdout


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(2, 113, 77, 8, 2, 64), (1, 1, 300, 4, 1, 32), (1, 130, 65, 4, 4, 128)])
def test_matches_numpy_float64(causal, shape):
    b, sq, skv, hq, hkv, d = shape
    q, k, v = rand(b, sq, hq, d, seed=1), rand(b, skv, hkv, d, seed=2), rand(b, skv, hkv, d, seed=3)
    out = longattn.attention(q, k, v, causal=causal)
    ref = naive(q, k, v, causal=causal)
    finite = np.isfinite(ref)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert np.abs(out[finite] - ref[finite]).max() < 2e-5


def test_strided_views_are_not_copied():
    base = rand(1, 8, 200, 64, seed=4)          # [B, H, S, D] memory
    q = base.transpose(0, 2, 1, 3)              # viewed as [B, S, H, D]
    k = v = rand(1, 8, 200, 64, seed=5).transpose(0, 2, 1, 3)
    out = np.empty((1, 200, 8, 64), np.float32)
    got = longattn.attention(q, k, v, causal=True, out=out)
    assert got is out
    ref = longattn.attention(q, k, v, causal=True, backend="reference")
    assert np.abs(out - ref).max() < 2e-5


def test_every_pattern_matches_reference_backend():
    s = 160
    q, k, v = rand(1, s, 4, 32, seed=6), rand(1, s, 2, 32, seed=7), rand(1, s, 2, 32, seed=8)
    docs = masks.random_documents(s, 10, 60, seed=1)
    for name in masks.names():
        params = {}
        if name in ("sliding_window", "sliding_window_causal", "global_sliding_window",
                    "dilated_sliding_window", "shard"):
            params["window"] = 16
        if name in ("block_causal_document", "fixed", "bigbird"):
            params["block"] = 32
        if name.startswith("prefix_lm"):
            params["prefix"] = 20
        if name == "shard":
            params["stride"] = 5
        m = masks.pattern(name, doc_lens=docs, **params)
        got, lse = longattn.attention(q, k, v, mask=m, return_lse=True)
        ref, ref_lse = longattn.attention(q, k, v, mask=m, return_lse=True, backend="reference")
        ok = np.isfinite(ref)
        assert np.abs(got[ok] - ref[ok]).max() < 2e-5, name
        assert np.array_equal(np.isinf(lse), np.isinf(ref_lse)), name


def test_varlen_and_options():
    lens = [50, 0, 129]
    cu = np.array([0, 50, 50, 179], np.int32)
    q, k, v = rand(179, 4, 64, seed=9), rand(179, 2, 64, seed=10), rand(179, 2, 64, seed=11)
    sink_logits = rand(4, seed=12)
    kw = dict(cu_seqlens_q=cu, cu_seqlens_k=cu, causal=True, window=(20, 0), sinks=3,
              sink_logits=sink_logits, softcap=4.0, return_lse=True)
    out, lse = longattn.attention(q, k, v, **kw)
    ref, ref_lse = longattn.attention(q, k, v, backend="reference", **kw)
    assert lse.shape == (4, 179)
    assert np.abs(out - ref).max() < 2e-5
    assert np.abs(lse - ref_lse).max() < 1e-4
    del lens


def test_backward_matches_float64_finite_differences():
    rng = np.random.default_rng(0)
    q, k, v = rand(1, 6, 2, 16, seed=13), rand(1, 9, 1, 16, seed=14), rand(1, 9, 1, 16, seed=15)
    dout = rand(1, 6, 2, 16, seed=16)
    out, lse = longattn.attention(q, k, v, causal=True, return_lse=True)
    dq, dk, dv = longattn.attention_backward(dout, q, k, v, out, lse, causal=True)

    def loss(q_, k_, v_):
        return float((naive(q_, k_, v_, causal=True) * dout.astype(np.float64)).sum())

    for name, x, g in (("q", q, dq), ("k", k, dk), ("v", v, dv)):
        x64 = x.astype(np.float64)
        for _ in range(12):
            idx = tuple(rng.integers(0, n) for n in x.shape)
            h = 1e-6
            up, down = x64.copy(), x64.copy()
            up[idx] += h
            down[idx] -= h
            args = {"q": (q, k, v), "k": (q, k, v), "v": (q, k, v)}[name]
            pick = lambda z: [z if n == name else a.astype(np.float64) for n, a in zip("qkv", args)]
            fd = (loss(*pick(up)) - loss(*pick(down))) / (2 * h)
            assert abs(g[idx] - fd) < 1e-4 + 1e-3 * abs(fd), (name, idx, g[idx], fd)


def visible_keys(mask, s, hq, hkv, **options):
    """[hq, s, s] booleans: which keys each query sees under `mask` and options, read off the
    engine's oracle backend (q = k = 0 give uniform weights over the visible keys; V = I)."""
    zeros_q = np.zeros((1, s, hq, s), np.float32)
    zeros_k = np.zeros((1, s, hkv, s), np.float32)
    eye = np.broadcast_to(np.eye(s, dtype=np.float32)[None, :, None, :], (1, s, hkv, s)).copy()
    out = longattn.attention(zeros_q, zeros_k, eye, mask=mask, backend="reference", **options)
    return out[0].transpose(1, 0, 2) > 0


def naive_general(q, k, v, visible, scale, softcap=0.0, sink_logits=None, score="softmax",
                  bias=0.0):
    """float64 attention with a dense [H, Sq, Skv] visibility, softcap, sink logits, sigmoid."""
    b, sq, hq, d = q.shape
    rep = hq // k.shape[2]
    k, v = np.repeat(k, rep, axis=2), np.repeat(v, rep, axis=2)
    x = np.einsum("bihd,bjhd->bhij", q, k) * scale
    if softcap > 0:
        x = softcap * np.tanh(x / softcap)
    if score == "sigmoid":
        p = np.where(visible[None], 1 / (1 + np.exp(-(x + bias))), 0.0)
    else:
        x = np.where(visible[None], x, -np.inf)
        m = x.max(-1, keepdims=True)
        if sink_logits is not None:
            m = np.maximum(m, sink_logits[None, :, None, None])
        m = np.where(np.isfinite(m), m, 0.0)
        e = np.exp(x - m)
        den = e.sum(-1, keepdims=True)
        if sink_logits is not None:
            den = den + np.exp(sink_logits[None, :, None, None] - m)
        p = np.where(den > 0, e / np.where(den > 0, den, 1), 0.0)
    return np.einsum("bhij,bjhd->bihd", p, v)


FD_CASES = {
    "sliding_window_causal": dict(mask=masks.pattern("sliding_window_causal", window=5)),
    "causal_document": dict(mask=masks.documents("causal_document", [7, 12, 3, 16, 10])),
    "strided": dict(mask=masks.pattern("strided", stride=4, window=3)),
    "softcap+window": dict(window=(6, 2), softcap=1.5),
    "sinks+sink_logits": dict(causal=True, window=(4, 0), sinks=2, sink_logits=True),
    "sigmoid": dict(causal=True, score="sigmoid", sigmoid_bias=-1.0),
}


@pytest.mark.parametrize("case", list(FD_CASES))
def test_backward_options_match_float64_finite_differences(case):
    """Gradients (dq, dk, dv and the sink logits' gradient) of the CPU engine against central
    differences of a float64 NumPy attention on the same visibility, per mask and option."""
    opts = dict(FD_CASES[case])
    s, hq, hkv, d, scale = 48, 4, 2, 16, 0.4
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    q, k, v = (rng.uniform(-1, 1, (1, s, h, d)).astype(np.float32) for h in (hq, hkv, hkv))
    dout = rng.uniform(-1, 1, (1, s, hq, d)).astype(np.float32)
    sinks = None
    if opts.pop("sink_logits", False):
        sinks = rng.uniform(-1, 1, hq).astype(np.float32)
    score = opts.get("score", "softmax")
    rule = {key: val for key, val in opts.items() if key in ("causal", "window", "sinks")}
    visible = visible_keys(opts.get("mask"), s, hq, hkv, **rule)
    assert visible.any() and not visible.all()
    if score == "softmax":
        out, lse = longattn.attention(q, k, v, scale=scale, sink_logits=sinks, return_lse=True,
                                      **opts)
    else:
        out, lse = longattn.attention(q, k, v, scale=scale, **opts), None
    grads = longattn.attention_backward(dout, q, k, v, out, lse, scale=scale, sink_logits=sinks,
                                        **opts)
    inputs = {"q": q, "k": k, "v": v}
    if sinks is not None:
        inputs["sink_logits"] = sinks

    def loss(vals):
        y = naive_general(vals["q"], vals["k"], vals["v"], visible, scale,
                          softcap=opts.get("softcap", 0.0), sink_logits=vals.get("sink_logits"),
                          score=score, bias=opts.get("sigmoid_bias", 0.0))
        return float((y * dout.astype(np.float64)).sum())

    base = {n: x.astype(np.float64) for n, x in inputs.items()}
    ref_out = naive_general(base["q"], base["k"], base["v"], visible, scale,
                            softcap=opts.get("softcap", 0.0), sink_logits=base.get("sink_logits"),
                            score=score, bias=opts.get("sigmoid_bias", 0.0))
    assert np.abs(out - ref_out).max() < 2e-5, "forward disagrees with the float64 model"
    for (name, x), g in zip(inputs.items(), grads):
        assert g.shape == x.shape, name
        for _ in range(10):
            idx = tuple(int(rng.integers(0, n)) for n in x.shape)
            h = 1e-6
            up = dict(base)
            down = dict(base)
            up[name] = base[name].copy()
            down[name] = base[name].copy()
            up[name][idx] += h
            down[name][idx] -= h
            fd = (loss(up) - loss(down)) / (2 * h)
            assert abs(g[idx] - fd) < 1e-4 + 1e-3 * abs(fd), (case, name, idx, g[idx], fd)


def test_errors_are_python_exceptions_with_the_message():
    q = rand(1, 8, 6, 32)
    k = rand(1, 8, 4, 32)
    with pytest.raises(ValueError, match="not a multiple of Hkv"):
        longattn.attention(q, k, k)
    with pytest.raises(TypeError, match="dtype"):
        longattn.attention(q.astype(np.float64), k, k)
    with pytest.raises(ValueError, match="window_left"):
        longattn.attention(q, q, q, window=(-5, 0))
    with pytest.raises(ValueError, match="doc_lens"):
        longattn.attention(q, q, q, mask=masks.pattern("causal_document"))
    with pytest.raises(ValueError, match="unknown mask"):
        masks.pattern("diagonal")
    with pytest.raises(ValueError, match="return_lse"):
        longattn.attention(q, q, q, score="sigmoid", return_lse=True)


def test_sigmoid_and_block_sparse():
    q, k, v = rand(1, 100, 2, 32, seed=17), rand(1, 100, 2, 32, seed=18), rand(1, 100, 2, 32, seed=19)
    m = masks.block_sparse(block_q=50, block_k=25, q_blocks=2, row_offsets=[0, 2, 5],
                           key_blocks=[0, 1, 0, 2, 3], partial=[0, 1, 0, 1, 1])
    for kw in (dict(score="sigmoid", sigmoid_bias=-1.0), dict(mask=m, causal=True)):
        got = longattn.attention(q, k, v, **kw)
        ref = longattn.attention(q, k, v, backend="reference", **kw)
        assert np.abs(got - ref).max() < 2e-5


def test_read_only_inputs_and_jax():
    q = rand(1, 64, 2, 32, seed=20)
    q.setflags(write=False)  # e.g. NumPy views of immutable buffers
    ref = longattn.attention(q, q, q, causal=True, backend="reference")
    assert np.abs(longattn.attention(q, q, q, causal=True) - ref).max() < 2e-5
    jnp = pytest.importorskip("jax.numpy", reason="JAX is not installed")
    qj = jnp.asarray(q)
    out = longattn.attention(qj, qj, qj, causal=True)
    assert type(out).__module__.split(".")[0] in ("jax", "jaxlib")
    assert np.abs(np.asarray(out) - ref).max() < 2e-5


def test_masks_compare_and_hash_by_content():
    a = masks.pattern("sliding_window_causal", window=16)
    b = masks.pattern("sliding_window_causal", window=16)
    c = masks.pattern("sliding_window_causal", window=17)
    assert a is not b and a == b and hash(a) == hash(b)
    assert a != c and a != "sliding_window_causal"
    assert len({a, b, c}) == 2
