"""PyTorch integration: a ``torch.library`` custom op with autograd and a fake-tensor
implementation (works under ``torch.compile``), and a Hugging Face attention backend.

Imported on demand by :func:`longattn.attention` for torch tensors.
"""

from __future__ import annotations

import itertools
import math
import threading
import weakref
from collections import OrderedDict
from typing import Optional, Tuple

import torch

from . import _longattn as _core
from . import _lse_shape, _mask_spec, _window
from . import masks as _masks

# Custom-op arguments must be tensors or scalars: a mask travels as an id into this registry.
# Masks are registered by content (equal masks share an id, a mask given by name stays alive),
# strongly, in an LRU of bounded size; autograd keeps its forward's mask on the context.
# NOTE: under torch.compile a mask is a constant of the compiled graph (build it outside the
# compiled function); a mask built inside it from tensor data is traced once.
_MASKS: "OrderedDict[int, object]" = OrderedDict()
_MASK_KEYS: dict = {}
_MASK_IDS = itertools.count(1)
_MASK_CAPACITY = 256
_LOCK = threading.Lock()


# torch.compile holds a mask as a constant of the graph (masks compare and hash by content).
if hasattr(torch.utils._pytree, "register_constant"):
    torch.utils._pytree.register_constant(_masks.MaskSpec)


@torch._dynamo.assume_constant_result
def _mask_id(mask) -> int:
    if mask is None:
        return 0
    if isinstance(mask, str):
        mask = _masks.pattern(mask)
    key = _masks.content(mask)
    with _LOCK:
        mid = _MASK_KEYS.get(key)
        if mid is not None and mid in _MASKS:
            _MASKS.move_to_end(mid)
            return mid
        mid = next(_MASK_IDS)
        _MASKS[mid] = mask
        _MASK_KEYS[key] = mid
        while len(_MASKS) > _MASK_CAPACITY:
            old, _ = _MASKS.popitem(last=False)
            for k, v in list(_MASK_KEYS.items()):
                if v == old:
                    del _MASK_KEYS[k]
        return mid


def _mask_of(mask_id: int):
    if mask_id == 0:
        return None
    mask = _MASKS.get(mask_id)
    if mask is None:
        raise RuntimeError(f"longattn: mask {mask_id} is no longer registered (more than "
                           f"{_MASK_CAPACITY} distinct masks since it was made)")
    return mask


def _opts(q, scale, causal, window_left, window_right, sinks, sink_logits, softcap, score,
          sigmoid_bias, mask, threads, cu_q, cu_k, backend):
    # scale NaN = the default 1/sqrt(D) (custom ops take no Optional[float] defaults here).
    # CUDA tensors run on PyTorch's current stream.
    stream = torch.cuda.current_stream(q.device).cuda_stream if q.is_cuda else 0
    return dict(scale=None if math.isnan(scale) else scale, causal=causal, window_left=window_left,
                window_right=window_right, sinks=sinks, sink_logits=sink_logits, softcap=softcap,
                score=score, sigmoid_bias=sigmoid_bias, mask=mask,
                cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, backend=backend, threads=threads,
                stream=int(stream))


@torch.library.custom_op("longattn::attention", mutates_args=())
def _attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  sink_logits: Optional[torch.Tensor], cu_q: Optional[torch.Tensor],
                  cu_k: Optional[torch.Tensor], scale: float, causal: bool, window_left: int,
                  window_right: int, sinks: int, softcap: float, score: str, sigmoid_bias: float,
                  mask_id: int, threads: int, backend: str,
                  deterministic: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    # `deterministic` is for the backward (the autograd formula passes the scalars on).
    out = torch.empty_like(q)
    softmax = score == "softmax"
    lse = torch.empty(_lse_shape(q, cu_q is not None) if softmax else [0], dtype=torch.float32,
                      device=q.device)
    _core.forward(q, k, v, out, lse if softmax else None,
                  **_opts(q, scale, causal, window_left, window_right, sinks, sink_logits, softcap,
                          score, sigmoid_bias, _mask_of(mask_id), threads, cu_q, cu_k, backend))
    return out, lse


@_attention_op.register_fake
def _(q, k, v, sink_logits, cu_q, cu_k, scale, causal, window_left, window_right, sinks, softcap,
      score, sigmoid_bias, mask_id, threads, backend, deterministic):
    shape = _lse_shape(q, cu_q is not None) if score == "softmax" else [0]
    return torch.empty_like(q), q.new_empty(shape, dtype=torch.float32)


@torch.library.custom_op("longattn::attention_backward", mutates_args=())
def _attention_backward_op(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           out: torch.Tensor, lse: torch.Tensor,
                           sink_logits: Optional[torch.Tensor], cu_q: Optional[torch.Tensor],
                           cu_k: Optional[torch.Tensor], scale: float, causal: bool,
                           window_left: int, window_right: int, sinks: int, softcap: float,
                           score: str, sigmoid_bias: float, mask_id: int, threads: int,
                           backend: str, deterministic: bool
                           ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dsink = torch.empty([q.shape[-2]] if sink_logits is not None else [0], dtype=torch.float32,
                        device=q.device)
    _core.backward(q, k, v, out, lse if score == "softmax" else None, dout.contiguous(), dq, dk, dv,
                   dsink if sink_logits is not None else None, deterministic=deterministic,
                   **_opts(q, scale, causal, window_left, window_right, sinks, sink_logits, softcap,
                           score, sigmoid_bias, _mask_of(mask_id), threads, cu_q, cu_k, backend))
    return dq, dk, dv, dsink


@_attention_backward_op.register_fake
def _(dout, q, k, v, out, lse, sink_logits, cu_q, cu_k, scale, causal, window_left, window_right,
      sinks, softcap, score, sigmoid_bias, mask_id, threads, backend, deterministic):
    dsink = q.new_empty([q.shape[-2]] if sink_logits is not None else [0], dtype=torch.float32)
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), dsink


_SCALARS = ("scale", "causal", "window_left", "window_right", "sinks", "softcap", "score",
            "sigmoid_bias", "mask_id", "threads", "backend", "deterministic")


def _setup_context(ctx, inputs, output):
    q, k, v, sink_logits, cu_q, cu_k = inputs[:6]
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, sink_logits, cu_q, cu_k)
    ctx.scalars = inputs[6:]
    # A strong reference to the mask until the backward.
    ctx.mask = _mask_of(inputs[6 + _SCALARS.index("mask_id")])


def _backward(ctx, dout, dlse):
    q, k, v, out, lse, sink_logits, cu_q, cu_k = ctx.saved_tensors
    # NOTE: gradients through the returned lse are not propagated (dlse is ignored), as in
    # FlashAttention; lse is an auxiliary output.
    dq, dk, dv, dsink = _attention_backward_op(dout, q, k, v, out, lse, sink_logits, cu_q, cu_k,
                                               *ctx.scalars)
    return dq, dk, dv, (dsink if sink_logits is not None else None), None, None, *([None] * len(_SCALARS))


_attention_op.register_autograd(_backward, setup_context=_setup_context)


def _needs_op(*tensors) -> bool:
    """Whether a call must go through the custom op: under torch.compile, or when a gradient can
    flow to an input."""
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    if is_compiling is not None and is_compiling():
        return True
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def attention(q, k, v, *, causal=False, window=(-1, -1), sinks=0, sink_logits=None, softcap=0.0,
              score="softmax", sigmoid_bias=0.0, mask=None, cu_seqlens_q=None, cu_seqlens_k=None,
              scale=None, return_lse=False, out=None, backend="auto", threads=0,
              deterministic=False):
    """:func:`longattn.attention` for torch tensors, differentiable. ``backend`` is passed on
    to the engine (forward and backward): "auto", "cpu", "reference" or "cuda"."""
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected a string, got {type(backend).__name__}")
    if return_lse and score != "softmax":
        raise ValueError("return_lse: the log-sum-exp is only defined for score='softmax'")
    left, right = _window(window)
    scale = math.nan if scale is None else float(scale)
    if not _needs_op(q, k, v, sink_logits):
        # Inference: straight to the engine, without the custom op's dispatch (tens of
        # microseconds a call, the size of a whole decode step on a GPU), into `out` if given.
        o = torch.empty_like(q) if out is None else out
        lse = torch.empty(_lse_shape(q, cu_seqlens_q is not None), dtype=torch.float32,
                          device=q.device) if return_lse else None
        _core.forward(q, k, v, o, lse,
                      **_opts(q, scale, bool(causal), left, right, int(sinks), sink_logits,
                              float(softcap), score, float(sigmoid_bias), _mask_spec(mask),
                              int(threads), cu_seqlens_q, cu_seqlens_k, backend))
        return (o, lse) if return_lse else o
    # torch.use_deterministic_algorithms(True) asks for the deterministic backward too.
    deterministic = bool(deterministic) or torch.are_deterministic_algorithms_enabled()
    o, lse = _attention_op(q, k, v, sink_logits, cu_seqlens_q, cu_seqlens_k,
                           scale, bool(causal), left, right,
                           int(sinks), float(softcap), score, float(sigmoid_bias), _mask_id(mask),
                           int(threads), backend, deterministic)
    if out is not None:
        out.copy_(o)
        o = out
    return (o, lse) if return_lse else o


# ---- Hugging Face transformers ---------------------------------------------------------------

def _mask_from_hf(attention_mask: Optional[torch.Tensor], batch: int, heads: int, sq: int, skv: int):
    """A block-sparse MaskSpec equal to an HF 4D mask ([B, 1|H, Sq, Skv], bool or additive):
    one key block per visible key, one query block in all when every query sees the same keys
    (padding alone), else one per query (causal + padding)."""
    if attention_mask is None:
        return None
    m = attention_mask
    if m.dtype == torch.bool:
        allowed = m
    else:
        allowed = m > torch.finfo(m.dtype).min / 2
        if bool((m[allowed] != 0).any()):
            raise NotImplementedError("longattn: additive attention masks with bias values "
                                      "(ALiBi, relative positions) are not supported; only "
                                      "0 / -inf masks")
    hs = allowed.shape[1]
    allowed = allowed.expand(batch, hs, sq, skv)
    per_query = not bool((allowed == allowed[:, :, :1, :]).all())
    rows_mask = allowed if per_query else allowed[:, :, :1, :]
    # Row-major nonzero: keys in order within each (batch, head, query) row, rows in order.
    flat = rows_mask.reshape(-1, skv).to("cpu")
    counts = flat.sum(dim=1)
    row_offsets = torch.zeros(flat.shape[0] + 1, dtype=torch.int64)
    torch.cumsum(counts, dim=0, out=row_offsets[1:])
    key_blocks = flat.nonzero()[:, 1]
    block_q = 1 if per_query else sq
    return _masks.block_sparse(block_q=block_q, block_k=1, q_blocks=sq // block_q,
                               row_offsets=row_offsets.tolist(), key_blocks=key_blocks.tolist(),
                               batches=batch, heads=heads if hs > 1 else 1)


# The last HF mask converted: a model hands the same mask tensor to every layer of a forward, so
# the conversion (a pass over B x Sq x Skv booleans) runs once per forward, not once per layer.
_HF_MASK_CACHE: dict = {}
_HF_MASK_LOCK = threading.Lock()


def _cached_mask_from_hf(attention_mask, batch: int, heads: int, sq: int, skv: int):
    if attention_mask is None:
        return None
    m = attention_mask
    key = (m._version, tuple(m.shape), tuple(m.stride()), m.dtype, str(m.device), batch, heads,
           sq, skv)
    with _HF_MASK_LOCK:
        hit = _HF_MASK_CACHE.get("entry")
        if hit is not None and hit[0] == key and hit[1]() is m:
            return hit[2]
    spec = _mask_from_hf(m, batch, heads, sq, skv)

    def forget(ref):  # the model's mask is gone: so is its conversion
        with _HF_MASK_LOCK:
            if _HF_MASK_CACHE.get("entry", (None, None))[1] is ref:
                del _HF_MASK_CACHE["entry"]

    with _HF_MASK_LOCK:
        # A weak reference: the cache neither keeps the mask alive nor mistakes a new tensor
        # at the same address for it.
        _HF_MASK_CACHE["entry"] = (key, weakref.ref(m, forget), spec)
    return spec


def hf_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                         **kwargs):
    """An attention function for ``transformers.AttentionInterface``: query/key/value are
    ``[B, H, S, D]``; returns ``([B, S, H, D], None)``. Takes HF's ``softcap`` and ``s_aux``
    (per-head sink logits, as gpt-oss passes them); the sliding window arrives in the mask."""
    if dropout and module.training:
        raise NotImplementedError("longattn: attention dropout is not supported")
    b, hq, sq, _ = query.shape
    skv = key.shape[2]
    mask = _cached_mask_from_hf(attention_mask, b, hq, sq, skv)
    causal = bool(getattr(module, "is_causal", False)) and attention_mask is None and sq > 1
    sink_logits = kwargs.get("s_aux")
    if sink_logits is not None:
        sink_logits = sink_logits.to(torch.float32).reshape(hq)
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))  # views, no copy
    out = attention(q, k, v, causal=causal, scale=scaling, mask=mask, sink_logits=sink_logits,
                    softcap=float(kwargs.get("softcap") or 0.0))
    return out, None


def register_hf_attention(name: str = "longattn") -> str:
    """Registers longattn with ``transformers.AttentionInterface``; then load a model with
    ``attn_implementation=name`` (or set ``model.config._attn_implementation = name``)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register(name, hf_attention_forward)
    # The model builds its padding/causal masks the way it does for SDPA (boolean, or None
    # when the mask is plain causal or absent).
    AttentionMaskInterface.register(name, sdpa_mask)
    return name
