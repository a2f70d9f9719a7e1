"""PyTorch: the custom op, autograd, torch.compile and the Hugging Face attention backend."""

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed; the torch integration is untested here")

import longattn  # noqa: E402
from longattn import masks  # noqa: E402


def sdpa_ref(q, k, v, causal=False):
    """float64 SDPA on [B, S, H, D] inputs (GQA by repetition)."""
    q, k, v = (x.double().transpose(1, 2) for x in (q, k, v))
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    sq, skv = q.shape[2], k.shape[2]
    mask = None
    if causal:
        mask = torch.ones(sq, skv, dtype=torch.bool).tril(diagonal=skv - sq)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.bfloat16, 2e-2), (torch.float16, 3e-3)])
def test_forward_matches_sdpa_float64(dtype, tol):
    torch.manual_seed(0)
    q = torch.randn(2, 97, 8, 64).to(dtype)
    k = torch.randn(2, 150, 2, 64).to(dtype)
    v = torch.randn(2, 150, 2, 64).to(dtype)
    out = longattn.attention(q, k, v, causal=True)
    assert out.dtype == dtype and isinstance(out, torch.Tensor)
    assert (out.double() - sdpa_ref(q, k, v, causal=True)).abs().max() < tol


def test_autograd_matches_sdpa_float64():
    torch.manual_seed(1)
    q = torch.randn(1, 70, 4, 32, requires_grad=True)
    k = torch.randn(1, 90, 2, 32, requires_grad=True)
    v = torch.randn(1, 90, 2, 32, requires_grad=True)
    g = torch.randn(1, 70, 4, 32)
    out = longattn.attention(q, k, v, causal=True)
    grads = torch.autograd.grad(out, (q, k, v), g)
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = torch.autograd.grad(sdpa_ref(q64, k64, v64, causal=True), (q64, k64, v64), g.double())
    for a, b in zip(grads, ref):
        assert (a.double() - b).abs().max() < 1e-4


def test_deterministic_option_reaches_the_backward():
    """On the CPU both modes are the same deterministic engine: equal bits."""
    torch.manual_seed(3)
    q = torch.randn(1, 50, 4, 32, requires_grad=True)
    k = torch.randn(1, 50, 2, 32, requires_grad=True)
    v = torch.randn(1, 50, 2, 32, requires_grad=True)
    fast = torch.autograd.grad(longattn.attention(q, k, v, causal=True).sum(), (q, k, v))
    det = torch.autograd.grad(longattn.attention(q, k, v, causal=True, deterministic=True).sum(),
                              (q, k, v))
    assert all(torch.equal(a, b) for a, b in zip(fast, det))
    torch.use_deterministic_algorithms(True)
    try:
        also = torch.autograd.grad(longattn.attention(q, k, v, causal=True).sum(), (q, k, v))
    finally:
        torch.use_deterministic_algorithms(False)
    assert all(torch.equal(a, b) for a, b in zip(fast, also))


def test_sink_logit_gradient_and_lse():
    torch.manual_seed(2)
    q = torch.randn(1, 40, 2, 32, requires_grad=True)
    k = torch.randn(1, 40, 2, 32, requires_grad=True)
    v = torch.randn(1, 40, 2, 32, requires_grad=True)
    sink = torch.randn(2, requires_grad=True)
    out, lse = longattn.attention(q, k, v, sink_logits=sink, causal=True, return_lse=True)
    assert lse.shape == (1, 2, 40)
    (gs,) = torch.autograd.grad(out.sum(), (sink,))
    # The same through an explicit softmax with an extra zero-value column.
    s = torch.einsum("bihd,bjhd->bhij", q.double(), k.double()) / 32**0.5
    s = s.masked_fill(~torch.ones(40, 40, dtype=torch.bool).tril(), float("-inf"))
    s = torch.cat([s, sink.double().view(1, 2, 1, 1).expand(1, 2, 40, 1)], -1)
    p = s.softmax(-1)[..., :-1]
    ref = torch.einsum("bhij,bjhd->bihd", p, v.double())
    (gr,) = torch.autograd.grad(ref.sum(), (sink,))
    assert (gs.double() - gr).abs().max() < 1e-4


def test_opcheck():
    import longattn.torch  # noqa: F401 - registers the ops (run alone, nothing else has)

    q, k, v = torch.randn(1, 33, 2, 32), torch.randn(1, 33, 1, 32), torch.randn(1, 33, 1, 32)
    scalars = (float("nan"), True, -1, -1, 0, 0.0, "softmax", 0.0, 0, 0, "auto", False)
    args = (q, k, v, None, None, None, *scalars)
    torch.library.opcheck(torch.ops.longattn.attention.default, args)
    out, lse = torch.ops.longattn.attention.default(*args)
    dout = torch.randn_like(out)
    for deterministic in (False, True):
        torch.library.opcheck(torch.ops.longattn.attention_backward.default,
                              (dout, q, k, v, out, lse, None, None, None, *scalars[:-1],
                               deterministic))


def test_torch_compile_fullgraph():
    m = masks.pattern("sliding_window_causal", window=16)

    def f(q, k, v):
        return longattn.attention(q, k, v, mask=m) * 2.0

    q, k, v = torch.randn(1, 64, 2, 32), torch.randn(1, 64, 2, 32), torch.randn(1, 64, 2, 32)
    compiled = torch.compile(f, fullgraph=True, backend="eager")
    assert torch.allclose(compiled(q, k, v), f(q, k, v))


def test_hf_mask_conversion_matches_sdpa():
    from longattn.torch import hf_attention_forward

    class M(torch.nn.Module):
        is_causal = False

    torch.manual_seed(3)
    q = torch.randn(2, 4, 20, 32)
    k = torch.randn(2, 4, 20, 32)
    v = torch.randn(2, 4, 20, 32)
    pad = torch.ones(2, 20, dtype=torch.bool)
    pad[1, 13:] = False
    mask = pad[:, None, None, :].expand(2, 1, 20, 20)
    out, _ = hf_attention_forward(M(), q, k, v, mask, scaling=0.2)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.2).transpose(1, 2)
    assert (out - ref).abs().max() < 1e-5


def test_mask_registry_is_by_content_and_bounded():
    import longattn.torch as lt

    q = torch.randn(1, 16, 1, 32)
    before = len(lt._MASKS)
    for _ in range(50):
        longattn.attention(q, q, q, mask=masks.pattern("sliding_window", window=3))
    assert len(lt._MASKS) <= before + 1
    for w in range(lt._MASK_CAPACITY + 10):
        lt._mask_id(masks.pattern("sliding_window", window=w + 100))
    assert len(lt._MASKS) == lt._MASK_CAPACITY


def test_mask_by_name_and_negative_scale():
    torch.manual_seed(4)
    q, k, v = torch.randn(1, 50, 2, 32), torch.randn(1, 50, 2, 32), torch.randn(1, 50, 2, 32)
    by_name = longattn.attention(q, k, v, mask="causal")
    assert (by_name.double() - sdpa_ref(q, k, v, causal=True)).abs().max() < 2e-5
    neg = longattn.attention(q, k, v, scale=-0.1)
    ref = torch.nn.functional.scaled_dot_product_attention(
        *(x.transpose(1, 2).double() for x in (q, k, v)), scale=-0.1).transpose(1, 2)
    assert (neg.double() - ref).abs().max() < 2e-5


def test_inference_path_matches_the_custom_op():
    """Without a gradient to track, calls skip the custom op: same results, `out` written in
    place, the LSE only when asked for, masks passed through."""
    import longattn.torch as lt
    torch.manual_seed(5)
    q = torch.randn(2, 40, 4, 32, requires_grad=True)
    k = torch.randn(2, 40, 2, 32, requires_grad=True)
    v = torch.randn(2, 40, 2, 32, requires_grad=True)
    m = masks.pattern("sliding_window_causal", window=9)
    assert lt._needs_op(q, k, v, None)
    ref, ref_lse = longattn.attention(q, k, v, mask=m, return_lse=True)
    with torch.no_grad():
        assert not lt._needs_op(q, k, v, None)
        out = torch.full_like(q, float("nan"))
        got, lse = longattn.attention(q, k, v, mask=m, return_lse=True, out=out)
        assert got is out and torch.equal(got, ref) and torch.equal(lse, ref_lse)
        assert not got.requires_grad
        assert torch.equal(longattn.attention(q.detach(), k, v, mask="sliding_window_causal"),
                           longattn.attention(q, k, v, mask=masks.pattern("sliding_window_causal")))


def test_backend_reaches_the_engine():
    """backend= is passed on by the torch path (forward and backward), not dropped."""
    torch.manual_seed(6)
    q = torch.randn(1, 37, 2, 32, requires_grad=True)
    k = torch.randn(1, 37, 1, 32, requires_grad=True)
    v = torch.randn(1, 37, 1, 32, requires_grad=True)
    outs, grads = {}, {}
    for backend in ("cpu", "reference"):
        out = longattn.attention(q, k, v, causal=True, backend=backend)
        outs[backend] = out.detach()
        grads[backend] = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
        with torch.no_grad():
            assert torch.equal(longattn.attention(q, k, v, causal=True, backend=backend),
                               outs[backend])
    # The oracle rounds once from float64: close to the engine, not bit-equal to it.
    assert not torch.equal(outs["cpu"], outs["reference"])
    assert (outs["cpu"] - outs["reference"]).abs().max() < 1e-5
    for a, b in zip(grads["cpu"], grads["reference"]):
        assert (a - b).abs().max() < 1e-4
    with pytest.raises(ValueError, match="backend"):
        longattn.attention(q, k, v, backend="tpu")


def _hf_module(causal):
    class M(torch.nn.Module):
        is_causal = causal

    return M()


def test_hf_causal_padding_mask_matches_sdpa():
    """Per-query HF masks (causal + left padding) become a per-query block-sparse layout."""
    from longattn.torch import hf_attention_forward

    torch.manual_seed(7)
    b, h, s, d = 3, 4, 45, 32
    q, k, v = torch.randn(b, h, s, d), torch.randn(b, h, s, d), torch.randn(b, h, s, d)
    lengths = torch.tensor([45, 30, 7])
    keys = torch.arange(s)[None, :] >= (s - lengths)[:, None]  # left padding
    mask = torch.ones(s, s, dtype=torch.bool).tril()[None, None] & keys[:, None, None, :]
    out, _ = hf_attention_forward(_hf_module(True), q, k, v, mask, scaling=0.15)
    ref = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(),
                                                           attn_mask=mask, scale=0.15)
    ref = ref.transpose(1, 2)
    valid = keys[:, :, None, None].expand_as(out)  # a padded query sees no key here
    assert (out.double() - ref)[valid].abs().max() < 2e-5
    assert bool((out[~valid] == 0).all())


def test_hf_sink_logits_s_aux():
    """gpt-oss hands its per-head sinks to the attention function as s_aux."""
    from longattn.torch import hf_attention_forward

    torch.manual_seed(8)
    b, h, s, d = 2, 4, 33, 32
    q, k, v = torch.randn(b, h, s, d), torch.randn(b, h, s, d), torch.randn(b, h, s, d)
    sinks = torch.randn(h)
    out, _ = hf_attention_forward(_hf_module(True), q, k, v, None, scaling=0.2, s_aux=sinks)
    logits = torch.einsum("bhid,bhjd->bhij", q.double(), k.double()) * 0.2
    logits = logits.masked_fill(~torch.ones(s, s, dtype=torch.bool).tril(), float("-inf"))
    full = torch.cat([logits, sinks.double()[None, :, None, None].expand(b, h, s, 1)], dim=-1)
    probs = torch.softmax(full, dim=-1)[..., :-1]
    ref = torch.einsum("bhij,bhjd->bihd", probs, v.double())
    assert (out.double() - ref).abs().max() < 2e-5


def test_hf_mask_is_converted_once_per_forward():
    """Every layer gets the same mask tensor: converted once; an in-place change converts again."""
    import longattn.torch as lt

    torch.manual_seed(9)
    q = torch.randn(2, 2, 12, 32)
    pad = torch.ones(2, 1, 12, 12, dtype=torch.bool)
    pad[1, ..., 9:] = False
    first, _ = lt.hf_attention_forward(_hf_module(False), q, q, q, pad)
    spec = lt._HF_MASK_CACHE["entry"][2]
    again, _ = lt.hf_attention_forward(_hf_module(False), q, q, q, pad)
    assert lt._HF_MASK_CACHE["entry"][2] is spec and torch.equal(first, again)
    pad[0, ..., 5:] = False  # in place: _version moves
    changed, _ = lt.hf_attention_forward(_hf_module(False), q, q, q, pad)
    assert lt._HF_MASK_CACHE["entry"][2] is not spec
    ref = torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=pad).transpose(1, 2)
    assert (changed - ref).abs().max() < 1e-5
    del pad  # the cache holds the mask weakly: its entry goes with it
    assert "entry" not in lt._HF_MASK_CACHE
