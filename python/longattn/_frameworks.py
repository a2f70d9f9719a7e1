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


def _jax_gpu(x):
    """The CUDA device id of a JAX array on a GPU, else None."""
    if not _is_jax(x):
        return None
    devices = x.devices() if hasattr(x, "devices") else set()
    for d in devices:
        if d.platform == "gpu":
            return d.id
    return None


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
    if _jax_gpu(x) is not None:
        # JAX computes on streams of its own: the inputs must be complete before longattn reads
        # them on the legacy default stream (where the outputs' CuPy/PyTorch buffers are
        # ordered for JAX's DLPack import).
        x.block_until_ready()
    return 0


def empty(like, shape: Tuple[int, ...], dtype: str = None):
    """An uninitialized array of `shape` in `like`'s framework and device; dtype None = like's.

    JAX arrays are immutable: their outputs are NumPy buffers (CPU) or CuPy/PyTorch buffers
    (GPU), handed to JAX by ``wrap``."""
    if is_torch(like):
        import torch
        dt = like.dtype if dtype is None else getattr(torch, dtype)
        return torch.empty(shape, dtype=dt, device=like.device)
    if _is_cupy(like):
        import cupy
        with like.device:
            return cupy.empty(shape, dtype=like.dtype if dtype is None else dtype)
    gpu = _jax_gpu(like)
    if gpu is not None:
        return _cuda_buffer(gpu, shape, str(like.dtype) if dtype is None else dtype)
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


def _cuda_buffer(device: int, shape: Tuple[int, ...], dtype: str):
    """A writable CUDA buffer for a JAX output (JAX arrays are immutable): PyTorch, else CuPy
    (which has no bfloat16)."""
    try:
        import torch
        return torch.empty(shape, dtype=getattr(torch, dtype), device=f"cuda:{device}")
    except ImportError:
        pass
    if dtype != "bfloat16":
        try:
            import cupy
            with cupy.cuda.Device(device):
                return cupy.empty(shape, dtype=dtype)
        except ImportError:
            pass
    raise TypeError(f"JAX {dtype} arrays on a GPU need PyTorch (or, except for bfloat16, CuPy): "
                    "longattn writes its outputs into one of their buffers and hands it to JAX "
                    "without a copy")


def empty_like(like):
    return empty(like, tuple(like.shape))


def wrap(like, array):
    """`array` (written by longattn) in `like`'s framework, without a copy where possible."""
    if array is None or not _is_jax(like):
        return array
    if _jax_gpu(like) is not None:
        import jax.dlpack
        return jax.dlpack.from_dlpack(array)  # zero-copy: JAX owns the CuPy/PyTorch buffer
    import jax.numpy as jnp
    return jnp.asarray(array)  # NOTE: a copy on CPU; JAX arrays are immutable
