"""CUDA tensors: PyTorch (and CuPy where installed) on the GPU against the float64 oracle on the
CPU. Skips where there is no usable GPU or the build has no CUDA backend."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import longattn  # noqa: E402

info = longattn._core.runtime_info()
pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or "cuda" not in info["backends"],
    reason="needs a GPU and a build with the CUDA backend")


def reference(q, k, v, **kw):
    """The float64 oracle on CPU copies."""
    args = [x.detach().float().cpu() for x in (q, k, v)]
    out = torch.empty_like(args[0])
    longattn._core.forward(*args, out, None, backend="reference", **kw)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dim", [64, 128, 80])
@pytest.mark.parametrize("causal", [False, True])
def test_forward_matches_oracle(dtype, dim, causal):
    g = torch.Generator(device="cuda").manual_seed(dim)
    q = torch.randn(2, 133, 8, dim, device="cuda", dtype=dtype, generator=g)
    k = torch.randn(2, 201, 2, dim, device="cuda", dtype=dtype, generator=g)
    v = torch.randn(2, 201, 2, dim, device="cuda", dtype=dtype, generator=g)
    out = longattn.attention(q, k, v, causal=causal)
    assert out.device == q.device and out.dtype == dtype
    ref = reference(q.float(), k.float(), v.float(), causal=causal)
    err = (out.double().cpu() - ref.double()).norm() / ref.double().norm()
    assert err < (1e-5 if dtype == torch.float32 else 1e-2), err


def test_runs_on_the_current_stream():
    q = torch.randn(1, 1024, 4, 64, device="cuda", dtype=torch.bfloat16)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        out = longattn.attention(q, q, q, causal=True)
        expected = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), q.transpose(1, 2), q.transpose(1, 2), is_causal=True).transpose(1, 2)
    side.synchronize()
    assert (out.float() - expected.float()).abs().max() < 2e-2


def test_autograd_on_gpu():
    q = torch.randn(1, 77, 4, 64, device="cuda", dtype=torch.float32, requires_grad=True)
    k = torch.randn(1, 90, 2, 64, device="cuda", dtype=torch.float32, requires_grad=True)
    v = torch.randn(1, 90, 2, 64, device="cuda", dtype=torch.float32, requires_grad=True)
    out = longattn.attention(q, k, v, causal=True)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    # The CPU engine (itself checked against the oracle) on CPU copies.
    qc, kc, vc = (x.detach().cpu().requires_grad_() for x in (q, k, v))
    outc = longattn.attention(qc, kc, vc, causal=True)
    refs = torch.autograd.grad(outc.square().sum(), (qc, kc, vc))
    for g, r in zip(grads, refs):
        assert ((g.cpu() - r).norm() / r.norm()) < 1e-4


@pytest.mark.parametrize("deterministic", [False, True])
def test_bf16_backward_modes(deterministic):
    """Both dQ modes of the tensor-core backward against the CPU engine; deterministic mode gives
    the same bits on a repeat."""
    g = torch.Generator(device="cuda").manual_seed(7)
    q = torch.randn(2, 300, 8, 128, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(2, 300, 2, 128, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(2, 300, 2, 128, device="cuda", dtype=torch.bfloat16, generator=g)
    dout = torch.randn(2, 300, 8, 128, device="cuda", dtype=torch.bfloat16, generator=g)
    out, lse = longattn.attention(q, k, v, causal=True, return_lse=True)
    run = lambda: longattn.attention_backward(dout, q, k, v, out, lse, causal=True,
                                              deterministic=deterministic)
    grads = run()
    cpu = [x.cpu() for x in (dout, q, k, v, out, lse)]
    refs = longattn.attention_backward(*cpu, causal=True)
    for got, ref in zip(grads, refs):
        assert ((got.cpu().double() - ref.double()).norm() / ref.double().norm()) < 1e-2
    if deterministic:
        assert all(torch.equal(a, b) for a, b in zip(grads, run()))


def test_cupy_inputs():
    cupy = pytest.importorskip("cupy")
    q = cupy.random.standard_normal((1, 64, 2, 64), dtype=cupy.float32)
    out = longattn.attention(q, q, q)
    assert isinstance(out, cupy.ndarray)
    ref = reference(*(torch.as_tensor(q.get()),) * 3)
    assert float(abs(cupy.asnumpy(out) - ref.numpy()).max()) < 1e-4


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_jax_gpu_inputs(dtype):
    """JAX arrays on the GPU: read in place, the output handed to JAX through DLPack (on the GPU,
    in the input's dtype), after JAX's own work on its streams has finished."""
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus:
        pytest.skip("JAX has no GPU here")
    key = jax.random.PRNGKey(3)
    q = jax.device_put(jax.random.normal(key, (1, 96, 4, 64), dtype=jnp.float32), gpus[0])
    q = (q * 1.5).astype(dtype)  # still in flight on JAX's stream when longattn is called
    out = longattn.attention(q, q, q, causal=True)
    assert type(out).__module__.split(".")[0] in ("jax", "jaxlib")
    assert str(out.dtype) == dtype and {d.platform for d in out.devices()} == {"gpu"}
    host = torch.from_numpy(np.asarray(q.astype(jnp.float32)))
    ref = reference(host, host, host, causal=True)
    err = float(np.abs(np.asarray(out.astype(jnp.float32)) - ref.numpy()).max())
    assert err < (1e-4 if dtype == "float32" else 2e-2), err
