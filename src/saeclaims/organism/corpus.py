"""Corpus handling for the organism: documents, a held-out split and the BPE tokenizer.

The split is made on documents, not tokens, so no evaluation text ever reaches the tokenizer,
the model or the SAEs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts import sha256_file
from .layout import BOS_TOKEN, windows  # noqa: F401  (windows now lives in layout; kept importable here)


@dataclass(frozen=True)
class Document:
    book: str
    index: int
    text: str


@dataclass(frozen=True)
class CorpusSplit:
    train: list[Document]
    eval: list[Document]
    file_sha256: dict[str, str]


def cut_documents(book: str, text: str, doc_bytes: int) -> list[Document]:
    """Cut a book into documents of about `doc_bytes`, at paragraph breaks where possible."""
    docs: list[Document] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + doc_bytes)
        if end < len(text):
            brk = text.rfind("\n\n", start + doc_bytes // 2, end)
            if brk > start:
                end = brk
        chunk = text[start:end].strip()
        if chunk:
            docs.append(Document(book, len(docs), chunk))
        start = end
    return docs


def split_corpus(
    corpus_dir: Path, seed: int, doc_bytes: int = 16_000, eval_fraction: float = 0.05,
    max_bytes_per_book: int | None = None,
) -> CorpusSplit:
    """Hold out about `eval_fraction` of each book's documents, so evaluation spans all books."""
    files = sorted(corpus_dir.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no *.txt books in corpus folder {corpus_dir}: pass --corpus")
    rng = np.random.default_rng(seed)
    train: list[Document] = []
    held: list[Document] = []
    hashes: dict[str, str] = {}
    for path in files:
        hashes[path.name] = sha256_file(path)
        text = path.read_text(encoding="utf-8", errors="replace")
        if max_bytes_per_book is not None:
            text = text[:max_bytes_per_book]
        docs = cut_documents(path.stem, text, doc_bytes)
        if len(docs) < 2:
            train.extend(docs)
            continue
        n_eval = max(1, int(round(eval_fraction * len(docs))))
        chosen = set(rng.choice(len(docs), size=n_eval, replace=False).tolist())
        for d in docs:
            (held if d.index in chosen else train).append(d)
    if not held:
        raise ValueError(f"corpus {corpus_dir} is too small to hold out evaluation documents")
    return CorpusSplit(train=train, eval=held, file_sha256=hashes)


def train_tokenizer(docs: list[Document], vocab_size: int):
    """Byte-level BPE (GPT-2's scheme) with one special token serving as BOS and EOS."""
    # lazy: only the tokenizer stage needs it
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    tok.train_from_iterator((d.text for d in docs), trainer=trainer)
    return tok


def encode_stream(tok, docs: list[Document]) -> np.ndarray:
    """All documents as one token stream, each preceded by the BOS/EOS separator."""
    bos = tok.token_to_id(BOS_TOKEN)
    encodings = tok.encode_batch([d.text for d in docs])
    parts = []
    for enc in encodings:
        parts.append(np.array([bos], dtype=np.uint16))
        parts.append(np.asarray(enc.ids, dtype=np.uint16))
    return np.concatenate(parts)
