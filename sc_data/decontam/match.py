"""The three ways a training prompt matches an eval item: exact, n-gram overlap, embedding similarity.

Each index is built once over every eval item of every eval set (items are numbered in that
order) and answers, for a training prompt, the best-matching item and a score in [0, 1]:

- exact: the normalised whole prompt (:func:`sc_data.decontam.text.exact_key`) is equal. Score 1.
- n-gram: the overlap coefficient of the two prompts' word n-gram sets,
  |A ∩ B| / min(|A|, |B|): the share of the shorter prompt's n-grams found in the other. It is
  1 when one prompt contains the other (an eval prompt with a sentence added, a training prompt
  that is the first turn of a multi-turn eval conversation) and stays high under a light edit of
  a long prompt; GPT-3 (Brown et al. 2020, app. C) and Llama 2 (Touvron et al. 2023, app. A.6)
  flag by shared word n-grams the same way.
- embedding: the cosine of sentence embeddings (all-MiniLM-L6-v2 by default), for paraphrases
  that share few words. Needs the ``score`` extra (sentence-transformers, torch).
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from sc_data.decontam.text import Turns, exact_key, word_ngrams

Match = tuple[int, float]  # (eval item number, score)


def overlap_coefficient(shared: int, size_a: int, size_b: int) -> float:
    """|A ∩ B| / min(|A|, |B|) from the sizes: the n-gram method's score."""
    return shared / min(size_a, size_b)


class ExactIndex:
    """Normalised whole prompt -> the first eval item with it."""

    def __init__(self, items: Sequence[Turns]) -> None:
        self._first: dict[str, int] = {}
        for k, turns in enumerate(items):
            self._first.setdefault(exact_key(turns), k)

    def best(self, turns: Turns) -> Match | None:
        """The eval item whose normalised prompt equals ``turns``'s, with score 1."""
        k = self._first.get(exact_key(turns))
        return None if k is None else (k, 1.0)


class NgramIndex:
    """Inverted index of the eval items' word n-grams; scores by the overlap coefficient."""

    def __init__(self, items: Sequence[Turns], n: int) -> None:
        self.n = n
        self._postings: dict[str, list[int]] = defaultdict(list)
        self._sizes = np.zeros(len(items), dtype=np.int64)
        for k, turns in enumerate(items):
            grams = word_ngrams(turns, n)
            self._sizes[k] = len(grams)
            for gram in grams:
                self._postings[gram].append(k)

    def best(self, turns: Turns) -> Match | None:
        """The eval item with the highest overlap coefficient (ties: the first item), or None if no gram is shared."""
        grams = word_ngrams(turns, self.n)
        shared = Counter(k for gram in grams if gram in self._postings for k in self._postings[gram])
        if not shared:
            return None
        k, score = max(
            ((k, overlap_coefficient(count, len(grams), int(self._sizes[k]))) for k, count in shared.items()),
            key=lambda ks: (ks[1], -ks[0]),
        )
        return k, score


class EmbeddingIndex:
    """Unit-norm sentence embeddings of the eval items; scores by cosine similarity.

    Args:
        items: the eval items' turns; each is embedded as its turns joined by newlines (the
            encoder reads the first 256 word pieces).
        encoder: a sentence-transformers reference (see :func:`sc_data.models.loading.load_sentence_encoder`).
        device: ``auto``, ``cpu``, ``cuda``, ...
    """

    def __init__(self, items: Sequence[Turns], encoder: str, device: str, batch_size: int = 256) -> None:
        from sc_data.models.loading import load_sentence_encoder

        self._encoder, self.encoder_ref = load_sentence_encoder(encoder, device=device)
        self._batch_size = batch_size
        self._items = self._embed(items)  # (N, D)

    def _embed(self, prompts: Sequence[Turns]) -> np.ndarray:
        texts = ["\n".join(turns) for turns in prompts]
        return np.asarray(
            self._encoder.encode(texts, batch_size=self._batch_size, normalize_embeddings=True, show_progress_bar=False),
            dtype=np.float32,
        )

    def best_many(self, prompts: Sequence[Turns]) -> list[Match]:
        """The most similar eval item of each prompt and its cosine, in order."""
        out: list[Match] = []
        for start in range(0, len(prompts), self._batch_size):
            sims = self._embed(prompts[start : start + self._batch_size]) @ self._items.T  # (B, N)
            best = sims.argmax(axis=1)
            out.extend((int(k), float(sims[i, k])) for i, k in enumerate(best))
        return out


def near_duplicate_components(items: Sequence[Turns], n: int, threshold: float) -> np.ndarray:
    """Component label per item, linking items the exact or the n-gram method would match, transitively.

    Two items are linked when their exact keys are equal or their word n-gram overlap coefficient
    reaches ``threshold``; labels are union-find roots (equal label = same component). Candidate
    pairs come from an inverted index with prefix filtering (Chaudhuri et al. 2006, "A primitive
    operator for similarity joins in data cleaning"): grams are ordered rarest first, and the smaller item S of a
    pair shares at least ceil(threshold x |S|) grams with the other, so one of them lies in S's
    first |S| - ceil(threshold x |S|) + 1 grams. Only those rare grams' postings are probed, and a
    pair already in one component is not compared, so the work stays near-linear in the items
    (100k prompts: see docs/ARCHITECTURE.md, "Staging").

    Args:
        items: prompts as normalised turns (:func:`sc_data.decontam.text.prompt_turns`).
        n: word n-gram length. threshold: overlap coefficient in (0, 1].

    Returns:
        int64 (len(items),) component labels.
    """
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for k, turns in enumerate(items):
        parent[find(k)] = find(first.setdefault(exact_key(turns), k))
    grams = [word_ngrams(turns, n) for turns in items]
    sizes = [len(s) for s in grams]
    df = Counter(g for s in grams for g in s)
    postings: dict[str, list[int]] = defaultdict(list)
    for k, s in enumerate(grams):
        for g in s:
            postings[g].append(k)
    order = [sizes[k] * len(items) + k for k in range(len(items))]  # (size, item) as one sortable int
    for plist in postings.values():
        plist.sort(key=order.__getitem__)
    for a, s in enumerate(grams):
        need = max(1, math.ceil(threshold * len(s) - 1e-9))  # never above the exact count: no pair is missed
        root, seen = find(a), set()
        for g in sorted(s, key=lambda g: (df[g], g))[: len(s) - need + 1]:
            plist = postings[g]
            # Each pair once, probed from its smaller item: only the items after ``a`` in (size, item) order.
            for b in plist[bisect.bisect_right(plist, order[a], key=order.__getitem__):]:
                if b in seen:
                    continue
                seen.add(b)
                rb = find(b)
                if rb != root and overlap_coefficient(len(s & grams[b]), sizes[a], sizes[b]) >= threshold:
                    parent[rb] = root
    return np.fromiter((find(k) for k in range(len(items))), dtype=np.int64, count=len(items))
