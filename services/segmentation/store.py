"""Segment, offer and experiment definitions on LMDB: one named database each, id -> serialized protobuf.

Blocking (LMDB commits fsync); the engine calls it through asyncio.to_thread.
"""

from __future__ import annotations

from pathlib import Path

import lmdb

from services.segmentation.config import LMDB_MAP_SIZE
from vitrine.v1 import segment_pb2


class DefinitionStore:
    def __init__(self, path: Path, map_size: int = LMDB_MAP_SIZE) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(str(path), map_size=map_size, max_dbs=3, subdir=True)
        self._segments = self._env.open_db(b"segments")
        self._offers = self._env.open_db(b"offers")
        self._experiments = self._env.open_db(b"experiments")

    def close(self) -> None:
        self._env.close()

    def load(self) -> tuple[list[segment_pb2.Segment], list[segment_pb2.Offer]]:
        with self._env.begin() as txn:
            segments = [segment_pb2.Segment.FromString(v) for _, v in txn.cursor(self._segments)]
            offers = [segment_pb2.Offer.FromString(v) for _, v in txn.cursor(self._offers)]
        return segments, offers

    def put_segment(self, segment: segment_pb2.Segment) -> None:
        with self._env.begin(write=True) as txn:
            txn.put(segment.segment_id.encode(), segment.SerializeToString(), db=self._segments)

    def delete_segment(self, segment_id: str) -> bool:
        with self._env.begin(write=True) as txn:
            return bool(txn.delete(segment_id.encode(), db=self._segments))

    def put_offer(self, offer: segment_pb2.Offer) -> None:
        with self._env.begin(write=True) as txn:
            txn.put(offer.offer_id.encode(), offer.SerializeToString(), db=self._offers)

    def delete_offer(self, offer_id: str) -> bool:
        with self._env.begin(write=True) as txn:
            return bool(txn.delete(offer_id.encode(), db=self._offers))

    def load_experiments(self) -> list[segment_pb2.Experiment]:
        with self._env.begin() as txn:
            return [segment_pb2.Experiment.FromString(v) for _, v in txn.cursor(self._experiments)]

    def put_experiment(self, experiment: segment_pb2.Experiment) -> None:
        with self._env.begin(write=True) as txn:
            txn.put(experiment.experiment_id.encode(), experiment.SerializeToString(), db=self._experiments)

    def delete_experiment(self, experiment_id: str) -> bool:
        with self._env.begin(write=True) as txn:
            return bool(txn.delete(experiment_id.encode(), db=self._experiments))
