"""Code descriptions for TS-Rec: what the items behind each code token have in common.

For every code token (level l, code c) the cluster is the set of items whose level-l code is
c. Each item's text is its title + description + categories, lower-cased and split into words
of >= 3 letters/digits (hyphens kept inside words), without English stop-words and pure
numbers; an item counts a word once. With N items that have text, df(w) the number of them
containing w, and for a cluster S (n items with text) s(w) the number of its items containing
w, the keyword score is a lift-weighted support (the term's contribution to the KL divergence
of the cluster's word distribution from the catalogue's)::

    support(w) = s(w) / n,   background(w) = df(w) / N
    score(w)   = support(w) * log(support(w) / background(w))    (only if support > background)

Words must be shared by at least two items of the cluster (when it has two or more). The top
``keywords_per_code`` words by score (ties: alphabetical) are the keywords; the description
is "Items about k1, k2 and k3, e.g. "<title>"" where the example is the cluster item whose
title holds the most keywords (ties: lowest item index). This is a deterministic stand-in for
TS-Rec's teacher-LLM keyword extraction.

``code_descriptions.json``: ``{"<a_12>": {"level": 0, "code": 12, "items": n, "keywords":
[...], "description": "..."}, ...}`` for every token of the vocabulary (unused codes: 0 items,
no keywords, empty description). Data sets without text get empty keywords everywhere.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from alignrec.errors import InputError
from alignrec.tokenizer.codes import code_token
from alignrec.utils.io import read_json

_WORD = re.compile(r"[a-z0-9][a-z0-9]*(?:-[a-z0-9]+)*")

STOP_WORDS = frozenset(
    """
    a about above after again against all also am an and any are aren as at be because been before being below
    between both but by can cannot could did didn do does doesn doing don down during each even ever every few
    for from further get gets got had has hasn have haven having he her here hers herself him himself his how i
    if in into is isn it its itself just let like made make makes many may me might more most much must my
    myself new no nor not now of off on once one only or other our ours ourselves out over own per same she
    should so some such than that the their theirs them themselves then there these they this those through
    to too two under until up upon us use used uses using very via was wasn we well were weren what when where
    which while who whom why will with within without would you your yours yourself yourselves item items
    product products quality great good best high easy including includes include features feature designed
    design provides provide perfect ideal available based set sets pack size sizes type types color colors
    """.split()
)


def item_words(title: str, description: str, categories: list[str]) -> set[str]:
    """The keyword candidates of one item's text (a set: each word counts once)."""
    text = " ".join([title or "", description or "", " ".join(categories or [])]).lower()
    return {
        word
        for word in _WORD.findall(text)
        if len(word) >= 3 and word not in STOP_WORDS and not word.replace("-", "").isdigit()
    }


def code_descriptions(
    codes: np.ndarray,
    sizes: list[int],
    items: list[Any],
    *,
    keywords_per_code: int = 8,
) -> dict[str, dict[str, Any]]:
    """Descriptions of every code token; ``items[i]`` has title, description, categories."""
    import scipy.sparse as sp

    num = codes.shape[0]
    words_of = [item_words(it.title, it.description, list(it.categories)) for it in items]
    vocabulary = sorted(set().union(*words_of)) if words_of else []
    word_index = {w: i for i, w in enumerate(vocabulary)}
    rows = np.fromiter((r for r, ws in enumerate(words_of) for _ in ws), dtype=np.int64)
    cols = np.fromiter((word_index[w] for ws in words_of for w in sorted(ws)), dtype=np.int64)
    presence = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(num, max(len(vocabulary), 1)))
    has_text = np.asarray(presence.sum(1)).ravel() > 0
    total = int(has_text.sum())
    background = np.asarray(presence.sum(0)).ravel() / max(total, 1)
    titles = [getattr(it, "title", "") or "" for it in items]

    out: dict[str, dict[str, Any]] = {}
    for level, size in enumerate(sizes):
        level_codes = codes[:, level]
        member = sp.csr_matrix((np.ones(num), (level_codes, np.arange(num))), shape=(size, num))
        counts = (member @ presence).tocsr()  # (K, W): items of the code containing each word
        cluster_items = np.bincount(level_codes, minlength=size)
        cluster_text = np.bincount(level_codes, weights=has_text.astype(np.float64), minlength=size).astype(np.int64)
        for code in range(size):
            keywords: list[str] = []
            n_text = int(cluster_text[code])
            if n_text and vocabulary and keywords_per_code:
                start, end = counts.indptr[code], counts.indptr[code + 1]
                word_ids, shared = counts.indices[start:end], counts.data[start:end]
                support = shared / n_text
                eligible = (support > background[word_ids]) & (shared >= min(2, n_text))
                if eligible.any():
                    ids, sup = word_ids[eligible], support[eligible]
                    score = sup * np.log(sup / background[ids])
                    ranked = sorted(zip(-score, [vocabulary[i] for i in ids]))[:keywords_per_code]
                    keywords = [word for _, word in ranked]
            out[code_token(level, code)] = {
                "level": level,
                "code": code,
                "items": int(cluster_items[code]),
                "keywords": keywords,
                "description": _describe(keywords, np.nonzero(level_codes == code)[0], titles),
            }
    return out


def _describe(keywords: list[str], members: np.ndarray, titles: list[str]) -> str:
    if not keywords:
        return ""
    head = keywords[:3]
    about = head[0] if len(head) == 1 else ", ".join(head[:-1]) + " and " + head[-1]
    best, best_hits = "", 0
    for row in members.tolist():
        title = titles[row]
        hits = len(set(_WORD.findall(title.lower())) & set(keywords))
        if hits > best_hits:
            best, best_hits = title, hits
    example = f', e.g. "{best[:80].strip()}"' if best else ""
    return f"Items about {about}{example}"


def read_code_descriptions(path: str | os.PathLike[str], vocabulary: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Read and check ``code_descriptions.json`` (token -> {level, code, items, keywords, description})."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected an object mapping code tokens to descriptions, got {type(data).__name__}")
    known = set(vocabulary)
    for token, entry in data.items():
        if token not in known:
            raise InputError(f"{path}: key {token!r} is not a code token of the item codes in use")
        if not isinstance(entry, dict) or not isinstance(entry.get("description", ""), str):
            raise InputError(f"{path}: {token}: expected an object with a string 'description'")
        if "keywords" in entry and not (
            isinstance(entry["keywords"], list) and all(isinstance(k, str) for k in entry["keywords"])
        ):
            raise InputError(f"{path}: {token}: 'keywords' must be a list of strings")
    return data
