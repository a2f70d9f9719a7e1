"""longattn: fast attention for long contexts.

Zero-copy: any DLPack tensor (NumPy, PyTorch, CuPy, JAX, ...) is viewed in place; outputs are
allocated in the input's framework and on its device. Importing this package needs neither
NumPy nor PyTorch; ``longattn.torch`` adds a ``torch.library`` custom op with autograd.

>>> import numpy as np, longattn
>>> q = np.random.rand(1, 128, 8, 64).astype(np.float32)
>>> k = v = np.random.rand(1, 128, 2, 64).astype(np.float32)
>>> out, lse = longattn.attention(q, k, v, causal=True, return_lse=True)
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple, Union

from . import _longattn as _core
from . import masks
from ._frameworks import current_stream, empty, empty_like, is_torch, wrap

__version__ = _core.__version__

__all__ = [
    "attention",
    "attention_backward",
    "masks",
    "runtime_info",
    "__version__",
]

Mask = Union[None, str, "_core.MaskSpec"]


def runtime_info() -> dict:
    """Version, built backends, CPU SIMD level, threads."""
    return _core.runtime_info()


def _mask_spec(mask: Mask):
    if mask is None:
        return None
    if isinstance(mask, str):
        return masks.pattern(mask)
    if isinstance(mask, _core.MaskSpec):
        return mask
    raise TypeError(f"mask: expected None, a pattern name or a longattn.masks MaskSpec, got {type(mask).__name__}")


def _lse_shape(q, varlen: bool) -> Tuple[int, ...]:
    if varlen:
        return (q.shape[1], q.shape[0])
    return (q.shape[0], q.shape[2], q.shape[1])


def _window(window) -> Tuple[int, int]:
    if window is None:
        return (-1, -1)
    if isinstance(window, int):
        return (window, window)
    left, right = window
    return (int(left), int(right))


def _options(q, causal, window, sinks, sink_logits, softcap, score, sigmoid_bias, mask,
             cu_seqlens_q, cu_seqlens_k, scale, backend, threads) -> dict:
    left, right = _window(window)
    return dict(scale=scale, causal=bool(causal), window_left=left, window_right=right,
                sinks=int(sinks), sink_logits=sink_logits, softcap=float(softcap), score=score,
                sigmoid_bias=float(sigmoid_bias), mask=_mask_spec(mask),
                cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, backend=backend,
                threads=int(threads), stream=current_stream(q))


def attention(q, k, v, *, causal: bool = False, window: Union[None, int, Tuple[int, int]] = (-1, -1),
              sinks: int = 0, sink_logits=None, softcap: float = 0.0, score: str = "softmax",
              sigmoid_bias: float = 0.0, mask: Mask = None, cu_seqlens_q=None, cu_seqlens_k=None,
              scale: Optional[float] = None, return_lse: bool = False, out=None,
              backend: str = "auto", threads: int = 0, deterministic: bool = False):
    """Exact attention ``softmax(scale * q k^T) v`` (or sigmoid attention) with masks.

    Layouts: q ``[B, Sq, Hq, D]``, k/v ``[B, Skv, Hkv, D]`` (any strides, last dim contiguous);
    varlen: q ``[total_q, Hq, D]`` with int32 ``cu_seqlens_q``/``cu_seqlens_k`` of length B+1.
    ``window=(left, right)`` (-1 = unbounded) and ``causal`` are bottom-right aligned.
    ``sinks=N``: the first N keys bypass the window. ``sink_logits``: fp32 ``[Hq]``.
    Returns ``out`` (and ``lse``: fp32 ``[B, Hq, Sq]`` or ``[Hq, total_q]``, natural log).

    PyTorch tensors that require grad go through the ``longattn::attention`` custom op, so
    autograd and ``torch.compile`` work; ``deterministic`` (or
    ``torch.use_deterministic_algorithms(True)``) is passed on to its backward (see
    :func:`attention_backward`).
    """
    if is_torch(q):
        from . import torch as _torch_ops
        return _torch_ops.attention(q, k, v, causal=causal, window=window, sinks=sinks,
                                    sink_logits=sink_logits, softcap=softcap, score=score,
                                    sigmoid_bias=sigmoid_bias, mask=mask, cu_seqlens_q=cu_seqlens_q,
                                    cu_seqlens_k=cu_seqlens_k, scale=scale, return_lse=return_lse,
                                    out=out, backend=backend, threads=threads,
                                    deterministic=deterministic)
    opts = _options(q, causal, window, sinks, sink_logits, softcap, score, sigmoid_bias, mask,
                    cu_seqlens_q, cu_seqlens_k, scale, backend, threads)
    if out is None:
        out = empty_like(q)
    lse = None
    if return_lse:
        if score != "softmax":
            raise ValueError("return_lse: the log-sum-exp is only defined for score='softmax'")
        lse = empty(q, _lse_shape(q, cu_seqlens_q is not None), "float32")
    _core.forward(q, k, v, out, lse, **opts)
    out, lse = wrap(q, out), wrap(q, lse)
    return (out, lse) if return_lse else out


def attention_backward(dout, q, k, v, out, lse, *, causal: bool = False,
                       window: Union[None, int, Tuple[int, int]] = (-1, -1), sinks: int = 0,
                       sink_logits=None, softcap: float = 0.0, score: str = "softmax",
                       sigmoid_bias: float = 0.0, mask: Mask = None, cu_seqlens_q=None,
                       cu_seqlens_k=None, scale: Optional[float] = None, dq=None, dk=None, dv=None,
                       backend: str = "auto", threads: int = 0, deterministic: bool = False):
    """Gradients of ``sum(out * dout)``: returns ``(dq, dk, dv)``, plus ``dsink_logits`` when
    ``sink_logits`` is given. ``out`` and ``lse`` come from :func:`attention` with
    ``return_lse=True`` (``lse`` may be None for sigmoid).

    ``deterministic=True``: the same bits on every run. Without it the CUDA tensor-core backward
    adds dQ with fp32 atomics (faster; the last bits of dQ vary between runs). The CPU engine is
    always deterministic."""
    opts = _options(q, causal, window, sinks, sink_logits, softcap, score, sigmoid_bias, mask,
                    cu_seqlens_q, cu_seqlens_k, scale, backend, threads)
    dq = empty_like(q) if dq is None else dq
    dk = empty_like(k) if dk is None else dk
    dv = empty_like(v) if dv is None else dv
    dsink = empty(q, (q.shape[-2],), "float32") if sink_logits is not None else None
    _core.backward(q, k, v, out, lse, dout, dq, dk, dv, dsink, deterministic=bool(deterministic),
                   **opts)
    dq, dk, dv, dsink = (wrap(q, x) for x in (dq, dk, dv, dsink))
    return (dq, dk, dv) if dsink is None else (dq, dk, dv, dsink)
