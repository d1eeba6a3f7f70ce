"""Trained models: item vectors + FAISS index + id map, versioned on disk, immutable in memory.

Layout under `<data_dir>/recommendation/models/`:

    <model_version>/vectors.npy   float32 (items, dim), unit rows
    <model_version>/ids.npy       product id of each row (unicode array)
    <model_version>/index.faiss   the FAISS index (rows = vectors' rows)
    <model_version>/index.json    index kind, efSearch, measured recall@10
    <model_version>/meta.json     version, items, interactions, dimensions, timings
    <model_version>/neighbours.npz  session item-item neighbours over catalog rows (scoring.session_knn)
    <model_version>/neighbour_ids.npy  product id of each of those rows (remapped at load)
    current                       the name of the model in use (replaced atomically)

A `Model` is never changed after it is built: `Train` loads the new one beside the old and
the service swaps one reference, so a request that already holds the old model finishes
with it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from scoring.index import VectorIndex
from scoring.session_knn import Neighbours, load_neighbours, save_neighbours
from services.recommendation.ranker_model import LearnedRanker, load_ranker

CURRENT_FILE = "current"
NEIGHBOUR_IDS_FILE = "neighbour_ids.npy"  # product id of each row of neighbours.npz


@dataclass(frozen=True)
class Model:
    version: str
    ids: np.ndarray            # product id per model row
    vectors: np.ndarray        # float32 (items, dim), unit rows
    index: VectorIndex
    catalog_rows: np.ndarray   # int64 catalog row per model row
    model_row: np.ndarray      # int64 model row per catalog row (-1 = not in the model)
    meta: dict[str, Any] = field(default_factory=dict)
    neighbours: Neighbours | None = None  # session item-item table over catalog rows (may be absent)
    # model row i is catalog row i for every i (the usual case): search results need no mapping
    same_rows: bool = False
    # the learned second stage saved beside the model (ranker_model.py); None = first stage only
    ranker: LearnedRanker | None = None

    @property
    def items(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def rows_for(self, catalog_rows: np.ndarray) -> np.ndarray:
        """Model rows of `catalog_rows` (-1 where unknown to this model)."""
        rows = np.asarray(catalog_rows, np.int64)
        if not rows.size:  # e.g. no purchases: skip the masks (each NumPy call costs ~1 us)
            return rows
        ok = (rows >= 0) & (rows < self.model_row.size)
        return np.where(ok, self.model_row[np.where(ok, rows, 0)], -1) if self.model_row.size else rows * 0 - 1


def new_version() -> str:
    """Sortable and unique: UTC time to the second plus a random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


class ModelStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def current_version(self) -> str | None:
        try:
            version = (self.directory / CURRENT_FILE).read_text().strip()
        except FileNotFoundError:
            return None
        return version if version and (self.directory / version).is_dir() else None

    def save(self, version: str, ids: np.ndarray, vectors: np.ndarray, index: VectorIndex,
             meta: dict[str, Any], neighbours: Neighbours | None = None,
             neighbour_ids: list[str] | None = None) -> Path:
        """Write a complete model directory (under a temporary name, then renamed)."""
        final = self.directory / version
        tmp = self.directory / f".{version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        np.save(tmp / "vectors.npy", np.ascontiguousarray(vectors, np.float32))
        np.save(tmp / "ids.npy", np.asarray(ids, dtype=str))
        index.save(tmp)
        if neighbours is not None and neighbour_ids is not None:
            save_neighbours(tmp, neighbours)
            np.save(tmp / NEIGHBOUR_IDS_FILE, np.asarray(neighbour_ids[: neighbours.n_items], dtype=str))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        os.replace(tmp, final)
        return final

    def set_current(self, version: str) -> None:
        tmp = self.directory / f".{CURRENT_FILE}.tmp"
        tmp.write_text(version + "\n")
        os.replace(tmp, self.directory / CURRENT_FILE)

    def load(self, version: str, row_of: dict[str, int], n_catalog: int) -> Model:
        directory = self.directory / version
        vectors = np.load(directory / "vectors.npy")
        ids = np.load(directory / "ids.npy")
        index = VectorIndex.load(directory)
        neighbours = load_neighbours(directory)
        if neighbours is not None:
            neighbours = remap_neighbours(neighbours, np.load(directory / NEIGHBOUR_IDS_FILE), row_of, n_catalog)
        meta = json.loads((directory / "meta.json").read_text())
        model = assemble(version, ids, vectors, index, row_of, n_catalog, meta, neighbours)
        ranker = load_ranker(directory, row_of, n_catalog) if neighbours is not None else None
        return replace(model, ranker=ranker) if ranker is not None else model

    def prune(self, keep: int) -> None:
        """Delete all but the newest `keep` model directories (never the current one)."""
        current = self.current_version()
        versions = sorted(p.name for p in self.directory.iterdir() if p.is_dir() and not p.name.startswith("."))
        for name in versions[:-keep] if keep > 0 else versions:
            if name != current:
                shutil.rmtree(self.directory / name, ignore_errors=True)


def assemble(version: str, ids: np.ndarray, vectors: np.ndarray, index: VectorIndex, row_of: dict[str, int],
             n_catalog: int, meta: dict[str, Any], neighbours: Neighbours | None = None) -> Model:
    """A `Model` whose rows are tied to the catalog's rows (ids unknown to the catalog map to -1)."""
    catalog_rows = np.fromiter((row_of.get(str(p), -1) for p in ids), np.int64, len(ids))
    model_row = np.full(max(n_catalog, int(catalog_rows.max(initial=-1)) + 1), -1, np.int64)
    known = catalog_rows >= 0
    model_row[catalog_rows[known]] = np.flatnonzero(known)
    same_rows = bool(np.array_equal(catalog_rows, np.arange(len(catalog_rows))))
    return Model(version, ids, vectors, index, catalog_rows, model_row, meta, neighbours, same_rows)


def remap_neighbours(table: Neighbours, table_ids: np.ndarray, row_of: dict[str, int], n_catalog: int) -> Neighbours:
    """The table re-indexed to the current catalog rows (rows are not stable across restarts)."""
    old_to_new = np.fromiter((row_of.get(str(p), -1) for p in table_ids), np.int64, len(table_ids))
    if np.array_equal(old_to_new, np.arange(len(table_ids))):
        return table
    m = sp.csr_matrix((table.weights, table.indices, table.indptr), shape=(table.n_items, table.n_items)).tocoo()
    ok = (old_to_new[m.row] >= 0) & (old_to_new[m.col] >= 0)
    n = max(n_catalog, int(old_to_new.max(initial=-1)) + 1)
    new = sp.csr_matrix((m.data[ok], (old_to_new[m.row[ok]], old_to_new[m.col[ok]])), shape=(n, n))
    return Neighbours(new.indptr.astype(np.int64), new.indices.astype(np.int32), new.data.astype(np.float32))
