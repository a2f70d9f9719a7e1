"""Output allocation in the input's framework and on its device (no framework imported here)."""

from __future__ import annotations

from typing import Tuple


def is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _is_numpy(x) -> bool:
    return type(x).__module__.split(".")[0] == "numpy"


def _is_jax(x) -> bool:
    return type(x).__module__.split(".")[0] in ("jax", "jaxlib")


def _is_cupy(x) -> bool:
    return type(x).__module__.split(".")[0] == "cupy"


def current_stream(x) -> int:
    """The framework's current CUDA stream (as an integer handle) for a GPU array, else 0.

    longattn launches on it, so its kernels order with the framework's own work."""
    if is_torch(x):
        if not x.is_cuda:
            return 0
        import torch
        return int(torch.cuda.current_stream(x.device).cuda_stream)
    if _is_cupy(x):
        import cupy
        with x.device:
            return int(cupy.cuda.get_current_stream().ptr)
    return 0


def empty(like, shape: Tuple[int, ...], dtype: str = None):
    """An uninitialized array of `shape` in `like`'s framework and device; dtype None = like's.

    JAX arrays are immutable: their outputs are NumPy buffers, handed back by ``wrap``."""
    if is_torch(like):
        import torch
        dt = like.dtype if dtype is None else getattr(torch, dtype)
        return torch.empty(shape, dtype=dt, device=like.device)
    if _is_cupy(like):
        import cupy
        with like.device:
            return cupy.empty(shape, dtype=like.dtype if dtype is None else dtype)
    if _is_numpy(like) or _is_jax(like):
        import numpy as np
        return np.empty(shape, dtype=np.dtype(like.dtype) if dtype is None else dtype)
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


def wrap(like, array):
    """`array` (written by longattn) in `like`'s framework, without a copy where possible."""
    if array is None or not _is_jax(like):
        return array
    import jax.numpy as jnp
    return jnp.asarray(array)  # NOTE: a copy on CPU; JAX arrays are immutable
