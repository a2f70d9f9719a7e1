"""Mask builders. Every pattern of the C++ engine, with the semantics of ``mask.hpp``.

>>> from longattn import masks
>>> m = masks.pattern("sliding_window_causal", window=1024)
>>> d = masks.documents("causal_document", [512, 1024, 2560])
>>> s = masks.strided_shards(heads=16, stride=8, window=128)
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

from . import _longattn as _core

MaskSpec = _core.MaskSpec
PatternSpec = _core.PatternSpec
BlockSparseLayout = _core.BlockSparseLayout


def content(mask: MaskSpec) -> tuple:
    """Everything that defines a mask, as a hashable tuple (masks compare and hash by it)."""
    heads = tuple((int(h.kind.value), h.window, h.block, h.prefix, h.stride, h.offset, h.summary,
                   h.dilation, h.global_blocks, h.window_blocks, h.random_blocks, h.seed)
                  for h in mask.heads)
    layout = mask.layout
    lay = None
    if layout is not None:
        lay = (layout.block_q, layout.block_k, layout.batches, layout.heads, layout.q_blocks,
               tuple(layout.row_offsets), tuple(layout.key_blocks), tuple(layout.partial))
    return heads, tuple(mask.doc_lens), lay


# Value semantics: two masks with the same content are equal and hash alike (so a mask can be a
# dict key, and torch.compile can hold one as a constant). Treat a mask as immutable once used.
MaskSpec.__eq__ = lambda self, other: (isinstance(other, MaskSpec)
                                       and content(self) == content(other))
MaskSpec.__hash__ = lambda self: hash(content(self))

__all__ = ["pattern", "documents", "per_head", "block_sparse", "strided_shards",
           "random_documents", "names", "benchmark_names", "content", "MaskSpec", "PatternSpec",
           "BlockSparseLayout"]


def names():
    """All pattern names."""
    return _core.pattern_names()


def benchmark_names():
    """The twelve Long-Context Attention Benchmark kernel masks."""
    return _core.benchmark_pattern_names()


def spec(name: str, **params) -> PatternSpec:
    """A PatternSpec: ``spec("bigbird", block=64, random_blocks=3, seed=1)``."""
    p = PatternSpec()
    p.kind = _core.parse_pattern(name)
    for key, value in params.items():
        if not hasattr(p, key) or key == "kind":
            raise ValueError(f"{name}: unknown parameter '{key}'")
        setattr(p, key, int(value))
    return p


def pattern(name: str, doc_lens: Optional[Sequence[int]] = None, **params) -> MaskSpec:
    """One pattern for every head, e.g. ``pattern("prefix_lm_causal", prefix=512)``."""
    m = MaskSpec()
    m.heads = [spec(name, **params)]
    if doc_lens is not None:
        m.doc_lens = [int(n) for n in doc_lens]
    return m


def documents(name: str, doc_lens: Sequence[int], **params) -> MaskSpec:
    """A document pattern (``full_document``, ``causal_document``, ``share_question``, ...)."""
    return pattern(name, doc_lens=doc_lens, **params)


def per_head(patterns: Iterable[PatternSpec], doc_lens: Optional[Sequence[int]] = None) -> MaskSpec:
    """One PatternSpec per query head (heterogeneous heads)."""
    m = MaskSpec()
    m.heads = list(patterns)
    if doc_lens is not None:
        m.doc_lens = [int(n) for n in doc_lens]
    return m


def strided_shards(heads: int, stride: int, window: int) -> MaskSpec:
    """S2-Attention-style shards: head h reads keys j % stride == h % stride plus a causal window."""
    return per_head([spec("shard", stride=stride, offset=h % stride, window=window) for h in range(heads)])


def block_sparse(block_q: int, block_k: int, q_blocks: int, row_offsets: Sequence[int],
                 key_blocks: Sequence[int], partial: Optional[Sequence[int]] = None,
                 batches: int = 1, heads: int = 1) -> MaskSpec:
    """A caller CSR layout: row r = (b * heads + h) * q_blocks + qb lists its key blocks;
    entries marked partial (1) also apply the causal/window/sinks rule."""
    layout = BlockSparseLayout()
    layout.block_q, layout.block_k, layout.q_blocks = int(block_q), int(block_k), int(q_blocks)
    layout.batches, layout.heads = int(batches), int(heads)
    layout.row_offsets = [int(x) for x in row_offsets]
    layout.key_blocks = [int(x) for x in key_blocks]
    layout.partial = [int(x) for x in partial] if partial is not None else []
    m = MaskSpec()
    m.heads = [spec("block_sparse")]
    m.layout = layout
    return m


def random_documents(total: int, min_len: int, max_len: int, seed: int = 42):
    """Seeded document lengths in [min_len, max_len] covering ``total`` tokens."""
    return _core.random_documents(total, min_len, max_len, seed)
