"""
longattn C++ core (use the `longattn` package, not this module directly)
"""

from collections.abc import Sequence
import enum
from typing import Annotated

from numpy.typing import NDArray


class Pattern(enum.Enum):
    full = 0

    causal = 1

    full_document = 2

    causal_document = 3

    sliding_window = 4

    sliding_window_causal = 5

    global_sliding_window = 6

    share_question = 7

    causal_blockwise = 8

    prefix_lm_causal = 9

    prefix_lm_document = 10

    block_causal_document = 11

    strided = 12

    fixed = 13

    bigbird = 14

    dilated_sliding_window = 15

    shard = 16

    block_sparse = 17

class PatternSpec:
    def __init__(self) -> None: ...

    @property
    def kind(self) -> Pattern: ...

    @kind.setter
    def kind(self, arg: Pattern, /) -> None: ...

    @property
    def window(self) -> int: ...

    @window.setter
    def window(self, arg: int, /) -> None: ...

    @property
    def block(self) -> int: ...

    @block.setter
    def block(self, arg: int, /) -> None: ...

    @property
    def prefix(self) -> int: ...

    @prefix.setter
    def prefix(self, arg: int, /) -> None: ...

    @property
    def stride(self) -> int: ...

    @stride.setter
    def stride(self, arg: int, /) -> None: ...

    @property
    def offset(self) -> int: ...

    @offset.setter
    def offset(self, arg: int, /) -> None: ...

    @property
    def summary(self) -> int: ...

    @summary.setter
    def summary(self, arg: int, /) -> None: ...

    @property
    def dilation(self) -> int: ...

    @dilation.setter
    def dilation(self, arg: int, /) -> None: ...

    @property
    def global_blocks(self) -> int: ...

    @global_blocks.setter
    def global_blocks(self, arg: int, /) -> None: ...

    @property
    def window_blocks(self) -> int: ...

    @window_blocks.setter
    def window_blocks(self, arg: int, /) -> None: ...

    @property
    def random_blocks(self) -> int: ...

    @random_blocks.setter
    def random_blocks(self, arg: int, /) -> None: ...

    @property
    def seed(self) -> int: ...

    @seed.setter
    def seed(self, arg: int, /) -> None: ...

    def __repr__(self) -> str: ...

class BlockSparseLayout:
    def __init__(self) -> None: ...

    @property
    def block_q(self) -> int: ...

    @block_q.setter
    def block_q(self, arg: int, /) -> None: ...

    @property
    def block_k(self) -> int: ...

    @block_k.setter
    def block_k(self, arg: int, /) -> None: ...

    @property
    def batches(self) -> int: ...

    @batches.setter
    def batches(self, arg: int, /) -> None: ...

    @property
    def heads(self) -> int: ...

    @heads.setter
    def heads(self, arg: int, /) -> None: ...

    @property
    def q_blocks(self) -> int: ...

    @q_blocks.setter
    def q_blocks(self, arg: int, /) -> None: ...

    @property
    def row_offsets(self) -> list[int]: ...

    @row_offsets.setter
    def row_offsets(self, arg: Sequence[int], /) -> None: ...

    @property
    def key_blocks(self) -> list[int]: ...

    @key_blocks.setter
    def key_blocks(self, arg: Sequence[int], /) -> None: ...

    @property
    def partial(self) -> list[int]: ...

    @partial.setter
    def partial(self, arg: Sequence[int], /) -> None: ...

class MaskSpec:
    def __init__(self) -> None: ...

    # Added by longattn.masks: masks compare and hash by content.
    def __eq__(self, other: object) -> bool: ...

    def __hash__(self) -> int: ...

    @property
    def heads(self) -> list[PatternSpec]: ...

    @heads.setter
    def heads(self, arg: Sequence[PatternSpec], /) -> None: ...

    @property
    def doc_lens(self) -> list[int]: ...

    @doc_lens.setter
    def doc_lens(self, arg: Sequence[int], /) -> None: ...

    @property
    def layout(self) -> BlockSparseLayout | None: ...

    @layout.setter
    def layout(self, arg: BlockSparseLayout, /) -> None: ...

    def __repr__(self) -> str: ...

def pattern_names() -> list[str]: ...

def benchmark_pattern_names() -> list[str]: ...

def parse_pattern(arg: str, /) -> Pattern: ...

def random_documents(total: int, min_len: int, max_len: int, seed: int = 42) -> list[int]: ...

def forward(q: Annotated[NDArray, dict(writable=False)], k: Annotated[NDArray, dict(writable=False)], v: Annotated[NDArray, dict(writable=False)], out: NDArray, lse: NDArray | None = None, scale: float | None = None, causal: bool = False, window_left: int = -1, window_right: int = -1, sinks: int = 0, sink_logits: Annotated[NDArray, dict(writable=False)] | None = None, softcap: float = 0.0, score: str = 'softmax', sigmoid_bias: float = 0.0, mask: MaskSpec | None = None, cu_seqlens_q: Annotated[NDArray, dict(writable=False)] | None = None, cu_seqlens_k: Annotated[NDArray, dict(writable=False)] | None = None, backend: str = 'auto', threads: int = 0, stream: int = 0) -> None: ...

def backward(q: Annotated[NDArray, dict(writable=False)], k: Annotated[NDArray, dict(writable=False)], v: Annotated[NDArray, dict(writable=False)], out: Annotated[NDArray, dict(writable=False)], lse: Annotated[NDArray, dict(writable=False)] | None, dout: Annotated[NDArray, dict(writable=False)], dq: NDArray, dk: NDArray, dv: NDArray, dsink_logits: NDArray | None = None, scale: float | None = None, causal: bool = False, window_left: int = -1, window_right: int = -1, sinks: int = 0, sink_logits: Annotated[NDArray, dict(writable=False)] | None = None, softcap: float = 0.0, score: str = 'softmax', sigmoid_bias: float = 0.0, mask: MaskSpec | None = None, cu_seqlens_q: Annotated[NDArray, dict(writable=False)] | None = None, cu_seqlens_k: Annotated[NDArray, dict(writable=False)] | None = None, backend: str = 'auto', threads: int = 0, stream: int = 0, deterministic: bool = False) -> None: ...

def runtime_info() -> dict: ...

__version__: str
