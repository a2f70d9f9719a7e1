"""Output allocation in the input's framework and on its device (no framework imported here)."""

from __future__ import annotations

from typing import Tuple


def is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _is_numpy(x) -> bool:
    return type(x).__module__.split(".")[0] == "numpy"


def empty(like, shape: Tuple[int, ...], dtype: str = None):
    """An uninitialized array of `shape` in `like`'s framework and device; dtype None = like's."""
    if is_torch(like):
        import torch
        dt = like.dtype if dtype is None else getattr(torch, dtype)
        return torch.empty(shape, dtype=dt, device=like.device)
    if _is_numpy(like):
        import numpy as np
        return np.empty(shape, dtype=like.dtype if dtype is None else dtype)
    if hasattr(like, "__array_namespace__"):
        xp = like.__array_namespace__()
        dt = like.dtype if dtype is None else getattr(xp, dtype)
        try:
            return xp.empty(shape, dtype=dt, device=getattr(like, "device", None))
        except TypeError:
            return xp.empty(shape, dtype=dt)
    raise TypeError(f"expected a NumPy, PyTorch or array-API array, got {type(like).__name__}")


def empty_like(like):
    return empty(like, tuple(like.shape))
