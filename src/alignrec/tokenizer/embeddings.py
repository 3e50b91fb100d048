"""Behaviour item embeddings for the tokenizer: a collab run's export, a file, or ``spectral``.

``--embeddings`` accepts

- a collab run folder (``RUN/collab/dccf``) holding ``item_embeddings.safetensors`` +
  ``item_ids.json`` (read with :func:`alignrec.collab.load_item_embeddings`);
- a ``.safetensors`` file with a tensor ``item_embeddings`` (I, d) (row i = item_index i);
- ``spectral``: a quick behaviour-only embedding computed here, for when no collaborative
  model has been trained: the truncated SVD of the degree-normalised user x item matrix of
  the *training* sequences, X~ = D_u^{-1/2} X D_i^{-1/2} ~ U S V^T; item i gets the row
  V_i S^{1/2} (d = 32), L2-normalised (as in Ng-Jordan-Weiss spectral clustering, so that
  popularity does not dominate the geometry). Items with identical training interactions get
  identical rows, which no tokenizer can separate: they are reported as duplicate rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from alignrec.errors import InputError

SPECTRAL = "spectral"
DEFAULT_COLLAB_MODEL = "dccf"


def spectral_item_embeddings(dataset: Any, dim: int = 32, seed: int = 0) -> np.ndarray:
    """(I, dim) float32 spectral embedding of the training interactions of ``dataset``."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import svds

    sequences = dataset.training_sequences()
    num_items = dataset.num_items
    rows = np.concatenate([np.full(len(s), u, dtype=np.int64) for u, s in enumerate(sequences)] or [np.zeros(0, np.int64)])
    cols = np.concatenate(list(sequences) or [np.zeros(0, np.int64)]).astype(np.int64)
    matrix = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(sequences), num_items))
    matrix.data[:] = 1.0  # repeated interactions count once
    user_degree = np.asarray(matrix.sum(1)).ravel()
    item_degree = np.asarray(matrix.sum(0)).ravel()
    normalised = sp.diags(1.0 / np.sqrt(np.maximum(user_degree, 1.0))) @ matrix @ sp.diags(1.0 / np.sqrt(np.maximum(item_degree, 1.0)))
    k = min(dim, min(normalised.shape) - 1)
    if k < 1:
        raise InputError(f"{dataset}: too few users/items for a {dim}-d spectral embedding")
    start = np.random.default_rng(seed).standard_normal(min(normalised.shape))
    _, values, vt = svds(normalised.astype(np.float64), k=k, v0=start)
    order = np.argsort(-values)
    vectors = vt[order].T * np.sqrt(np.maximum(values[order], 0.0))  # (I, k)
    if k < dim:
        vectors = np.pad(vectors, ((0, 0), (0, dim - k)))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = np.where(norms > 0, vectors / np.maximum(norms, 1e-12), 0.0)
    # svds' signs are arbitrary; fix them so the result does not depend on the solver's path
    signs = np.sign(vectors[np.abs(vectors).argmax(0), np.arange(vectors.shape[1])])
    return (vectors * np.where(signs == 0, 1.0, signs)).astype(np.float32)


def load_behaviour_embeddings(spec: str | None, dataset: Any, run_dir: str | Path, seed: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """Behaviour embeddings (I, d) float32 aligned with ``dataset``'s item indices, and a
    description of where they came from (for the report and config.json)."""
    run_dir = Path(run_dir)
    if spec is None:
        default = run_dir / "collab" / DEFAULT_COLLAB_MODEL
        if not (default / "item_embeddings.safetensors").is_file():
            raise InputError(
                f"no --embeddings given and {default}/item_embeddings.safetensors does not exist; train one with "
                f"`alignrec collab train --data {run_dir} --model dccf`, pass a file/folder, or use --embeddings spectral"
            )
        spec = str(default)
    if spec == SPECTRAL:
        vectors = spectral_item_embeddings(dataset, seed=seed)
        return vectors, {"kind": "spectral", "dim": int(vectors.shape[1]), "source": "training sequences (SVD)"}
    path = Path(spec)
    if path.is_dir():
        from alignrec.collab import load_item_embeddings

        vectors, item_ids = load_item_embeddings(path)
        source = path / "item_embeddings.safetensors"
    elif path.is_file():
        vectors, item_ids = _read_embedding_file(path)
        source = path
    else:
        raise InputError(f"{spec}: not a collab run folder, a .safetensors file, or 'spectral'")
    if vectors.shape[0] != dataset.num_items:
        raise InputError(f"{source}: {vectors.shape[0]} embedding rows, but the data set has {dataset.num_items} items")
    if item_ids is not None and list(item_ids) != list(dataset.item_ids):
        mismatch = next(i for i, (a, b) in enumerate(zip(item_ids, dataset.item_ids)) if a != b)
        raise InputError(
            f"{source}: row {mismatch} is item {item_ids[mismatch]!r} but the data set's item_index {mismatch} is "
            f"{dataset.item_ids[mismatch]!r} (embeddings from another data set?)"
        )
    return np.ascontiguousarray(vectors, dtype=np.float32), {"kind": "file", "dim": int(vectors.shape[1]), "source": str(source)}


def _read_embedding_file(path: Path) -> tuple[np.ndarray, list[str] | None]:
    from alignrec.collab.export import ITEM_IDS_FILE, read_item_embeddings
    from alignrec.utils.io import read_json

    vectors = read_item_embeddings(path)
    ids_path = path.parent / ITEM_IDS_FILE
    item_ids = [str(i) for i in read_json(ids_path)] if ids_path.is_file() else None
    return vectors, item_ids


def duplicate_rows(vectors: np.ndarray, decimals: int = 6) -> int:
    """How many rows repeat an earlier row (after rounding): a floor for any collision rate."""
    if len(vectors) == 0:
        return 0
    return int(len(vectors) - len(np.unique(np.round(np.asarray(vectors, dtype=np.float64), decimals), axis=0)))
