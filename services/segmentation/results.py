"""Experiment results folded from the event log (ProfileService.FollowEvents), kept in LMDB.

Each exposed shopper (the feed's `canonical_user_id`, the profile after aliases) is one *unit*
per experiment: its variant (that of its first exposure), first exposure time, whether it
bought since, its revenue, clicks on the experiment's slot and add-to-carts. Per experiment
and variant the sums the statistics need are kept beside them (users, converters, revenue and
revenue squared, clicks, add-to-carts), so a report is O(variants). A batch of feed items and
the cursor (the last seq applied) are written in ONE LMDB write transaction: after a crash the
follower resumes from the stored cursor and no item is counted twice or lost.

Items of the feed:
* EXPOSURE event: each `Event.exposures` entry of a known experiment and variant, inside the
  experiment's window, makes the unit exposed (first exposure wins; a later exposure to another
  variant marks the unit *mixed*, counted under its first variant).
* PURCHASE / ADD_TO_CART / PRODUCT_VIEW after the unit's first exposure and before the end:
  revenue (price x quantity, 0 counting 1) and conversion; add-to-carts; a PRODUCT_VIEW or
  ADD_TO_CART with `slot_id` equal to the experiment's slot is a click on a recommended item.
* Identity (an anonymous visitor merged into a customer at login): the visitor's unit moves to
  the customer; when both were exposed they become one unit under the earlier exposure.
* Erasure: the per-shopper records of the erased ids are deleted; the variant sums keep their
  anonymous contribution.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import struct
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import lmdb

from scoring.stats.report import Report, VariantCounts, build_report
from services.segmentation import config as cfg
from services.segmentation.experiments import ExperimentSet, active
from vitrine.v1 import common_pb2, profile_pb2, segment_pb2

log = logging.getLogger(__name__)

_UNIT = struct.Struct("<qBdII")   # first exposure ms, flags, revenue, clicks, add-to-carts; then the variant id
_CONVERTED = 1
_MIXED = 2
_CURSOR = b"cursor:"   # + the source (one log per profile shard, each with its own seqs)
_ITEMS = b"items"


@dataclasses.dataclass
class _Unit:
    variant_id: str
    first_ms: int
    flags: int = 0
    revenue: float = 0.0
    clicks: int = 0
    add_to_carts: int = 0

    def pack(self) -> bytes:
        return _UNIT.pack(self.first_ms, self.flags, self.revenue, self.clicks, self.add_to_carts) + \
            self.variant_id.encode()

    @classmethod
    def unpack(cls, raw: bytes | memoryview) -> _Unit:
        first_ms, flags, revenue, clicks, atc = _UNIT.unpack_from(raw)
        return cls(bytes(raw[_UNIT.size:]).decode(), first_ms, flags, revenue, clicks, atc)


@dataclasses.dataclass
class _Sums:
    users: int = 0
    converters: int = 0
    revenue: float = 0.0
    revenue_sq: float = 0.0
    clicks: int = 0
    add_to_carts: int = 0


@dataclasses.dataclass
class _Experiment:
    variants: dict[str, _Sums] = dataclasses.field(default_factory=dict)
    mixed: int = 0

    def add(self, unit: _Unit, sign: int) -> None:
        """Add (sign 1) or take back (sign -1) one unit's whole contribution."""
        s = self.variants.setdefault(unit.variant_id, _Sums())
        s.users += sign
        s.converters += sign * (unit.flags & _CONVERTED)
        s.revenue += sign * unit.revenue
        s.revenue_sq += sign * unit.revenue * unit.revenue
        s.clicks += sign * unit.clicks
        s.add_to_carts += sign * unit.add_to_carts
        self.mixed += sign * ((unit.flags & _MIXED) >> 1)

    def dump(self) -> bytes:
        return json.dumps({"mixed": self.mixed,
                           "variants": {k: dataclasses.astuple(v) for k, v in self.variants.items()}}).encode()

    @classmethod
    def load(cls, raw: bytes) -> _Experiment:
        data = json.loads(raw)
        return cls({k: _Sums(*v) for k, v in data["variants"].items()}, data["mixed"])


@dataclasses.dataclass(frozen=True)
class Results:
    report: Report
    mixed_users: int
    items_seen: int


def _key(experiment_id: str, unit_id: str) -> bytes:
    return experiment_id.encode() + b"\x00" + unit_id.encode()


class ExperimentResults:
    """The aggregator: `apply(items)` folds a batch of LoggedEvents; `results(id)` reports."""

    def __init__(self, path: Path, experiments: Callable[[], ExperimentSet],
                 map_size: int = cfg.RESULTS_MAP_SIZE) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(str(path), map_size=map_size, max_dbs=3, subdir=True)
        self._units = self._env.open_db(b"units")
        self._sums = self._env.open_db(b"sums")
        self._meta = self._env.open_db(b"meta")
        self._experiments = experiments
        self._lock = threading.Lock()   # apply and forget run in worker threads
        self._load()

    def close(self) -> None:
        self._env.close()

    def _load(self) -> None:
        with self._env.begin() as txn:
            self._state = {k.decode(): _Experiment.load(v) for k, v in txn.cursor(self._sums)}
            self._cursors = {bytes(k[len(_CURSOR):]).decode(): int(v) for k, v in txn.cursor(self._meta)
                             if bytes(k).startswith(_CURSOR)}
            raw = txn.get(_ITEMS, db=self._meta)
            self._items = int(raw) if raw else 0

    def cursor(self, source: str = "") -> int:
        """The last seq applied from `source` (0 = none): follow it from cursor + 1."""
        return self._cursors.get(source, 0)

    def apply(self, items: Sequence[profile_pb2.LoggedEvent], source: str = "") -> int:
        """Fold the items of `source` with seq above its cursor, in one transaction with the new
        cursor. Returns how many were applied (items at or below the cursor are a replay: skipped)."""
        with self._lock:
            done = self._cursors.get(source, 0)
            fresh = [i for i in items if i.seq > done]
            if not fresh:
                return 0
            experiments = self._experiments()
            touched: set[str] = set()
            try:
                with self._env.begin(write=True) as txn:
                    for item in fresh:
                        self._apply_one(txn, item, experiments, touched)
                    for experiment_id in touched:
                        txn.put(experiment_id.encode(), self._state[experiment_id].dump(), db=self._sums)
                    last = fresh[-1].seq
                    txn.put(_CURSOR + source.encode(), str(last).encode(), db=self._meta)
                    txn.put(_ITEMS, str(self._items + len(fresh)).encode(), db=self._meta)
            except BaseException:
                self._load()   # the transaction was aborted: memory back to what LMDB holds
                raise
            self._cursors[source] = last
            self._items += len(fresh)
            return len(fresh)

    def _apply_one(self, txn: lmdb.Transaction, item: profile_pb2.LoggedEvent, experiments: ExperimentSet,
                   touched: set[str]) -> None:
        kind = item.WhichOneof("item")
        if kind == "event":
            event = item.event
            unit_id = item.canonical_user_id or event.user_id
            if not unit_id:
                return
            if event.type == common_pb2.EXPOSURE:
                self._exposure(txn, unit_id, event, experiments, touched)
            elif event.type in (common_pb2.PURCHASE, common_pb2.ADD_TO_CART) or (
                    event.type == common_pb2.PRODUCT_VIEW and event.slot_id):
                # a view counts only as a click from a placement: the many plain views cost no lookup
                self._outcome(txn, unit_id, event, experiments, touched)
        elif kind == "identity":
            self._merge(txn, item.identity.anonymous_id, item.identity.customer_id, touched)
        elif kind == "erasure":
            for user_id in (item.erasure.user_id, *item.erasure.aliases):
                for experiment_id in self._state:
                    txn.delete(_key(experiment_id, user_id), db=self._units)

    def _exposure(self, txn: lmdb.Transaction, unit_id: str, event: common_pb2.Event,
                  experiments: ExperimentSet, touched: set[str]) -> None:
        for exposure in event.exposures:
            definition = experiments.by_id.get(exposure.experiment_id)
            if definition is None or not active(definition.starts_ms, definition.ends_ms, event.timestamp_ms):
                continue
            if exposure.variant_id not in {v.variant_id for v in definition.variants}:
                continue
            key = _key(exposure.experiment_id, unit_id)
            raw = txn.get(key, db=self._units)
            state = self._state.setdefault(exposure.experiment_id, _Experiment())
            if raw is None:
                unit = _Unit(exposure.variant_id, event.timestamp_ms)
                state.add(unit, 1)
            else:
                unit = _Unit.unpack(raw)
                if unit.variant_id == exposure.variant_id or unit.flags & _MIXED:
                    continue
                state.add(unit, -1)
                unit.flags |= _MIXED
                state.add(unit, 1)
            txn.put(key, unit.pack(), db=self._units)
            touched.add(exposure.experiment_id)

    def _outcome(self, txn: lmdb.Transaction, unit_id: str, event: common_pb2.Event,
                 experiments: ExperimentSet, touched: set[str]) -> None:
        t = event.timestamp_ms
        for experiment_id, state in self._state.items():
            definition = experiments.by_id.get(experiment_id)
            if definition is None or (definition.ends_ms and t >= definition.ends_ms):
                continue
            key = _key(experiment_id, unit_id)
            raw = txn.get(key, db=self._units)
            if raw is None:
                continue
            unit = _Unit.unpack(raw)
            if t < unit.first_ms:
                continue
            state.add(unit, -1)
            if event.type == common_pb2.PURCHASE:
                unit.revenue += event.price * (event.quantity or 1)
                unit.flags |= _CONVERTED
            elif event.type == common_pb2.ADD_TO_CART:
                unit.add_to_carts += 1
            if event.type != common_pb2.PURCHASE and event.slot_id and event.slot_id == definition.slot_id:
                unit.clicks += 1
            state.add(unit, 1)
            txn.put(key, unit.pack(), db=self._units)
            touched.add(experiment_id)

    def _merge(self, txn: lmdb.Transaction, anonymous_id: str, customer_id: str, touched: set[str]) -> None:
        if not anonymous_id or not customer_id or anonymous_id == customer_id:
            return
        for experiment_id, state in self._state.items():
            anon_key = _key(experiment_id, anonymous_id)
            raw = txn.get(anon_key, db=self._units)
            if raw is None:
                continue
            anon = _Unit.unpack(raw)
            cust_key = _key(experiment_id, customer_id)
            raw_c = txn.get(cust_key, db=self._units)
            state.add(anon, -1)
            if raw_c is None:
                merged = anon
            else:
                cust = _Unit.unpack(raw_c)
                state.add(cust, -1)
                first, other = (anon, cust) if anon.first_ms <= cust.first_ms else (cust, anon)
                merged = _Unit(first.variant_id, first.first_ms, first.flags | other.flags,
                               first.revenue + other.revenue, first.clicks + other.clicks,
                               first.add_to_carts + other.add_to_carts)
                if first.variant_id != other.variant_id:
                    merged.flags |= _MIXED
            state.add(merged, 1)
            txn.delete(anon_key, db=self._units)
            txn.put(cust_key, merged.pack(), db=self._units)
            touched.add(experiment_id)

    def forget(self, experiment_id: str) -> None:
        """Drop everything about an experiment (after DeleteExperiment)."""
        prefix = experiment_id.encode() + b"\x00"
        with self._lock, self._env.begin(write=True) as txn:
            cursor = txn.cursor(self._units)
            if cursor.set_range(prefix):
                while cursor.key().startswith(prefix):
                    if not cursor.delete():
                        break
            txn.delete(experiment_id.encode(), db=self._sums)
            self._state.pop(experiment_id, None)

    def unit_variant(self, experiment_id: str, unit_id: str) -> str:
        """The variant a unit is counted under ("" when not exposed); for tests and support."""
        with self._env.begin() as txn:
            raw = txn.get(_key(experiment_id, unit_id), db=self._units)
        return _Unit.unpack(raw).variant_id if raw else ""

    def results(self, experiment: segment_pb2.Experiment, confidence: float = cfg.RESULTS_CONFIDENCE) -> Results:
        """The report of the experiment's current variants (a variant nobody saw shows zeros)."""
        state = self._state.get(experiment.experiment_id, _Experiment())
        counts = []
        for v in experiment.variants:
            s = state.variants.get(v.variant_id, _Sums())
            counts.append(VariantCounts(v.variant_id, float(v.weight), s.users, s.converters, s.revenue,
                                        max(s.revenue_sq, 0.0), s.clicks, s.add_to_carts))
        report = build_report(counts, confidence, cfg.SRM_P_THRESHOLD)
        return Results(report, state.mixed, self._items)


def apply_all(results: ExperimentResults, items: Iterable[profile_pb2.LoggedEvent],
              batch: int = cfg.FOLLOW_BATCH_ITEMS) -> None:
    """Feed an iterable of items in transactions of `batch` (tests and replays)."""
    chunk: list[profile_pb2.LoggedEvent] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= batch:
            results.apply(chunk)
            chunk = []
    if chunk:
        results.apply(chunk)
