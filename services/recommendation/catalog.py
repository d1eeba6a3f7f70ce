"""The product catalog: protobufs in LMDB, numbers in NumPy columns.

LMDB (`<data_dir>/recommendation/catalog.lmdb`, key = product id) holds each `Product` as
a serialized protobuf and is the system of record. At start every product is loaded into
columns indexed by a stable row number: `price` (float64), `stock` (int32) and `category`
(int32 id into `category_names`, -1 = none); titles and brands stay in lists, read only for
the k items a response returns. Rows are only ever appended, so a row number stays valid
for the life of the process (model id maps and signal counters rely on that).

Writers (`upsert`, `update_inventory`) commit to LMDB first (in a worker thread), then
change the columns on the event loop, so the next request sees the change and a crash
never leaves the columns ahead of the store. The same transaction appends every stock or
price change to the change log (`changes.py`, the named database "catalog changes" of the
same environment) that `FollowCatalog` serves.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import lmdb
import numpy as np

from services.recommendation.changes import ChangeLog, change_of
from services.recommendation.config import (
    LMDB_MAP_SIZE,
    MAX_ATTRIBUTES,
    MAX_EMBEDDING_DIMENSIONS,
    MAX_PRODUCT_ID_LENGTH,
    MAX_TAGS,
    MAX_TITLE_LENGTH,
)
from vitrine.v1 import common_pb2, recommend_pb2

INITIAL_CAPACITY = 1_024


@dataclass(frozen=True)
class StockChange:
    product_id: str
    stock: int
    price: float | None = None


def product_id_error(product_id: str) -> str | None:
    """Why `product_id` is not acceptable, or None."""
    if not product_id:
        return "product_id is empty"
    if len(product_id) > MAX_PRODUCT_ID_LENGTH:
        return f"product_id is longer than {MAX_PRODUCT_ID_LENGTH} characters"
    if any(ch.isspace() for ch in product_id):
        return "product_id contains whitespace (session files separate ids by spaces)"
    return None


def product_error(product: common_pb2.Product) -> str | None:
    """Why `product` cannot be stored, or None."""
    problem = product_id_error(product.product_id)
    if problem:
        return problem
    if not math.isfinite(product.price) or product.price < 0:
        return f"price must be a finite number >= 0, got {product.price}"
    if len(product.title) > MAX_TITLE_LENGTH:
        return f"title is longer than {MAX_TITLE_LENGTH} characters"
    if len(product.tags) > MAX_TAGS:
        return f"more than {MAX_TAGS} tags"
    if len(product.attributes) > MAX_ATTRIBUTES:
        return f"more than {MAX_ATTRIBUTES} attributes"
    if len(product.embedding) > MAX_EMBEDDING_DIMENSIONS:
        return f"embedding has more than {MAX_EMBEDDING_DIMENSIONS} dimensions"
    if product.embedding:
        e = np.asarray(product.embedding, np.float64)
        if not np.isfinite(e).all() or not e.any():
            return "embedding must be finite and not all zero"
    return None


def stock_change_error(change: StockChange) -> str | None:
    problem = product_id_error(change.product_id)
    if problem:
        return problem
    if change.price is not None and (not math.isfinite(change.price) or change.price < 0):
        return f"price must be a finite number >= 0, got {change.price}"
    return None


class Catalog:
    """Columns of every product, backed by LMDB. Not thread-safe: use from the event loop."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "catalog.lmdb"
        self.env: lmdb.Environment | None = None
        self.changes: ChangeLog | None = None
        self.ids: list[str] = []
        self.row_of: dict[str, int] = {}
        self.titles: list[str] = []
        self.brands: list[str] = []
        self.category_names: list[str] = []
        self.category_of: dict[str, int] = {}
        self._price = np.zeros(INITIAL_CAPACITY, np.float64)
        self._stock = np.zeros(INITIAL_CAPACITY, np.int32)
        self._category = np.full(INITIAL_CAPACITY, -1, np.int32)
        self.version = 0  # bumped on every change of rows or categories
        self._category_rows: dict[int, np.ndarray] = {}
        self._category_rows_version = -1

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        """Open LMDB and load every product into the columns (blocking: call off the loop)."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(self.path), map_size=LMDB_MAP_SIZE, subdir=True, max_dbs=4)
        self.changes = ChangeLog(self.env)
        with self.env.begin() as txn:
            products = [product for _, product in _stored_products(txn)]
        self._apply(products)

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None
            self.changes = None

    # -- reads -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    @property
    def price(self) -> np.ndarray:
        return self._price[: len(self.ids)]

    @property
    def stock(self) -> np.ndarray:
        return self._stock[: len(self.ids)]

    @property
    def category(self) -> np.ndarray:
        return self._category[: len(self.ids)]

    @property
    def n_categories(self) -> int:
        return len(self.category_names)

    def rows(self, product_ids: Sequence[str]) -> np.ndarray:
        """Rows of `product_ids` (int64), -1 for unknown ids."""
        get = self.row_of.get
        return np.fromiter((get(p, -1) for p in product_ids), np.int64, len(product_ids))

    def category_ids(self, names: Sequence[str]) -> np.ndarray:
        """Category ids of `names` (int32); unknown names get -2, which no product has."""
        get = self.category_of.get
        return np.fromiter((get(n, -2) for n in names), np.int32, len(names))

    def category_rows(self, category_id: int) -> np.ndarray:
        """Rows of every product in one category (cached until the catalog changes)."""
        if self._category_rows_version != self.version:
            cats = self.category
            order = np.argsort(cats, kind="stable")
            bounds = np.searchsorted(cats[order], np.arange(self.n_categories + 1))
            self._category_rows = {c: order[bounds[c]:bounds[c + 1]] for c in range(self.n_categories)}
            self._category_rows_version = self.version
        return self._category_rows.get(int(category_id), np.zeros(0, np.int64))

    def get(self, product_id: str) -> common_pb2.Product | None:
        """The stored product, with the current stock and price."""
        assert self.env is not None
        with self.env.begin() as txn:
            raw = txn.get(product_id.encode())
        if raw is None:
            return None
        product = common_pb2.Product()
        product.ParseFromString(raw)
        return product

    def embeddings(self, dim: int) -> dict[int, np.ndarray]:
        """Provided embeddings of exactly `dim` dimensions, by row (blocking: call off the loop)."""
        assert self.env is not None
        out: dict[int, np.ndarray] = {}
        with self.env.begin() as txn:
            for product_id, product in _stored_products(txn):
                if len(product.embedding) == dim:
                    row = self.row_of.get(product_id)
                    if row is not None:
                        out[row] = np.asarray(product.embedding, np.float32)
        return out

    # -- writes ------------------------------------------------------------------------------
    def write(self, products: Sequence[common_pb2.Product]) -> list[recommend_pb2.CatalogChange]:
        """Commit `products` and their stock/price changes to LMDB (blocking); returns the changes
        logged, with their seq. Call `apply` afterwards on the loop."""
        assert self.env is not None and self.changes is not None
        changed_ms = int(time.time() * 1000)
        logged = []
        with self.env.begin(write=True) as txn:
            for product in products:
                key = product.product_id.encode()
                raw = txn.get(key)
                previous = None
                if raw is not None:
                    previous = common_pb2.Product()
                    previous.ParseFromString(raw)
                change = change_of(previous, product, changed_ms)
                if change is not None:
                    logged.append(change)
                txn.put(key, product.SerializeToString())
            self.changes.append(txn, logged)
        return logged

    def apply(self, products: Sequence[common_pb2.Product]) -> None:
        """Make the columns reflect `products` (already committed)."""
        self._apply(products)

    def write_stock(self, changes: Sequence[StockChange]) -> list[recommend_pb2.CatalogChange]:
        """Commit stock/price changes to LMDB (blocking; unknown ids are skipped); returns the
        changes logged, with their seq (an update that moves nothing logs nothing)."""
        assert self.env is not None and self.changes is not None
        changed_ms = int(time.time() * 1000)
        logged = []
        with self.env.begin(write=True) as txn:
            for change in changes:
                raw = txn.get(change.product_id.encode())
                if raw is None:
                    continue
                previous = common_pb2.Product()
                previous.ParseFromString(raw)
                product = common_pb2.Product()
                product.CopyFrom(previous)
                product.stock = change.stock
                if change.price is not None:
                    product.price = change.price
                logged_change = change_of(previous, product, changed_ms)
                if logged_change is not None:
                    logged.append(logged_change)
                txn.put(change.product_id.encode(), product.SerializeToString())
            self.changes.append(txn, logged)
        return logged

    def apply_stock(self, changes: Sequence[StockChange]) -> None:
        for change in changes:
            row = self.row_of.get(change.product_id)
            if row is None:
                continue
            self._stock[row] = change.stock
            if change.price is not None:
                self._price[row] = change.price

    def _category_id(self, name: str) -> int:
        if not name:
            return -1
        cid = self.category_of.get(name)
        if cid is None:
            cid = self.category_of[name] = len(self.category_names)
            self.category_names.append(name)
        return cid

    def _grow(self, n: int) -> None:
        if n <= self._price.size:
            return
        size = max(n, 2 * self._price.size)
        for name, fill in (("_price", 0), ("_stock", 0), ("_category", -1)):
            old = getattr(self, name)
            new = np.full(size, fill, old.dtype)
            new[: old.size] = old
            setattr(self, name, new)

    def _apply(self, products: Sequence[common_pb2.Product]) -> None:
        self._grow(len(self.ids) + len(products))
        for product in products:
            row = self.row_of.get(product.product_id)
            if row is None:
                row = self.row_of[product.product_id] = len(self.ids)
                self.ids.append(product.product_id)
                self.titles.append(product.title)
                self.brands.append(product.brand)
            else:
                self.titles[row] = product.title
                self.brands[row] = product.brand
            self._price[row] = product.price
            self._stock[row] = product.stock
            self._category[row] = self._category_id(product.category)
        self.version += 1


def _is_database_record(key: bytes) -> bool:
    """Named databases are records of the main one; their names contain a space, product ids never."""
    return b" " in key


def _stored_products(txn: lmdb.Transaction) -> Iterator[tuple[str, common_pb2.Product]]:
    """Every product of the main database, with its id, skipping the named databases' records."""
    for raw_key, value in txn.cursor():
        key = bytes(raw_key)  # the same object: this environment hands out bytes, not buffers
        if _is_database_record(key):
            continue
        product = common_pb2.Product()
        product.ParseFromString(bytes(value))
        yield key.decode(), product
