"""Apply feed items (LoggedEvent from ProfileService.FollowEvents, CatalogChange from
RecommendService.FollowCatalog) to the journey store.

Each batch is one LMDB write transaction holding every state change, timer, watch and
counter it causes plus the feed's cursor, so after a crash the service resumes exactly after
the last batch it committed: from its own view every item is applied exactly once. Items
at or below the stored cursor (a follower that re-sent them after a reconnect) are skipped.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Iterable, Sequence

import lmdb

from services.journeys import config as C
from services.journeys.machines import (
    CANCEL,
    DEFAULT_STATE,
    ENTER,
    ET,
    IDLE,
    NONE,
    UPDATE,
    WAITING,
    JourneyState,
    Machine,
    Step,
)
from services.journeys.store import CATALOG_CURSOR, JourneyStore, ProductInfo, events_cursor
from vitrine.v1 import common_pb2, profile_pb2, recommend_pb2

log = logging.getLogger(__name__)
EMPTY_STATE = JourneyState().to_bytes()
ATTRIBUTED = frozenset({ET.EMAIL_OPEN, ET.EMAIL_CLICK, ET.PURCHASE})


class FeedApplier:
    """Owns no state but the machines of the current journey definitions."""

    def __init__(self, store: JourneyStore, attribution_ms: int) -> None:
        self.store = store
        self.attribution_ms = attribution_ms
        self.machines: dict[str, Machine] = {}
        self._by_type: dict[int, list[Machine]] = {}
        self._welcome: list[Machine] = []

    def set_machines(self, machines: Iterable[Machine]) -> None:
        self.machines = {m.journey.journey_id: m for m in machines if m.journey.enabled}
        by_type: dict[int, list[Machine]] = collections.defaultdict(list)
        for machine in self.machines.values():
            for event_type in machine.event_types:
                by_type[event_type].append(machine)
        self._by_type = dict(by_type)
        self._welcome = [m for m in self.machines.values() if type(m).on_identity is not Machine.on_identity]

    # Batches.
    def apply_events(self, items: Sequence[profile_pb2.LoggedEvent], source: int = 0) -> int:
        """Apply a batch of profile shard `source`'s feed in one transaction; returns how many were new."""
        if not items:
            return 0
        applied = 0
        name = events_cursor(source)
        with self.store.write() as txn:
            cursor = self.store.cursor_of(txn, name)
            for item in items:
                if item.seq < cursor:
                    continue
                self.apply_event(txn, item, source)
                cursor = item.seq + 1
                applied += 1
            self.store.set_cursor(txn, name, cursor)
        return applied

    def apply_catalog(self, items: Sequence[recommend_pb2.CatalogChange]) -> int:
        if not items:
            return 0
        applied = 0
        with self.store.write() as txn:
            cursor = self.store.cursor_of(txn, CATALOG_CURSOR)
            for change in items:
                if change.seq < cursor:
                    continue
                self.apply_change(txn, change)
                cursor = change.seq + 1
                applied += 1
            self.store.set_cursor(txn, CATALOG_CURSOR, cursor)
        return applied

    # One item.
    def apply_event(self, txn: lmdb.Transaction, item: profile_pb2.LoggedEvent, source: int = 0) -> None:
        which = item.WhichOneof("item")
        if which == "event":
            event = item.event
            user = item.canonical_user_id or event.user_id
            if event.type in ATTRIBUTED:
                self._attribute(txn, user, event)
            for machine in self._by_type.get(event.type, ()):
                self._drive(txn, machine, user, event, source)
        elif which == "identity":
            identity = item.identity
            for machine in self._welcome:
                state = self.store.state(txn, identity.customer_id, machine.journey.journey_id) or JourneyState()
                before = state.to_bytes()
                step = machine.on_identity(state, identity)
                state.source = source
                self._apply_step(txn, machine, identity.customer_id, state, before, step,
                                 identity.identified_ms)
        elif which == "erasure":
            for user in {item.erasure.user_id, *item.erasure.aliases}:
                if user:
                    self.erase(txn, user)

    def _drive(self, txn: lmdb.Transaction, machine: Machine, user: str, event: common_pb2.Event,
               source: int) -> None:
        journey_id = machine.journey.journey_id
        if machine.watches_catalog and event.product_id:
            if machine.unwatch(event):
                self.store.delete_watch(txn, event.product_id, journey_id, user)
            else:
                watch = machine.watch(event, self.store.product(txn, event.product_id))
                if watch is not None:
                    watch = dataclasses.replace(watch, source=source)
                    self.store.put_watch(txn, event.product_id, journey_id, user, watch)
        before = self.store.state_raw(txn, user, journey_id)
        state = JourneyState.from_bytes(before)
        step = machine.on_event(state, event)
        if step.action != NONE:
            state.source = source
        self._apply_step(txn, machine, user, state, before, step, event.timestamp_ms)

    def apply_change(self, txn: lmdb.Transaction, change: recommend_pb2.CatalogChange) -> None:
        self.store.put_product(txn, change.product_id, ProductInfo(change.stock, change.price))
        came_back = change.previous_stock <= 0 < change.stock and not change.created
        cheaper = 0 < change.price < change.previous_price
        if not (came_back or cheaper):
            return
        for journey_id, user, watch in self.store.watches_of(txn, change.product_id):
            machine = self.machines.get(journey_id)
            if machine is None or not machine.fresh(watch, change.changed_ms):
                self.store.delete_watch(txn, change.product_id, journey_id, user)
                continue
            before = self.store.state_raw(txn, user, journey_id)
            state = JourneyState.from_bytes(before)
            step = machine.on_catalog(state, change, watch)
            if step.action != NONE:
                state.source = watch.source
                self.store.delete_watch(txn, change.product_id, journey_id, user)
                self._apply_step(txn, machine, user, state, before, step, change.changed_ms)

    def _apply_step(self, txn: lmdb.Transaction, machine: Machine, user: str, state: JourneyState,
                    before: bytes, step: Step, at_ms: int) -> None:
        journey = machine.journey
        journey_id = journey.journey_id
        add = self.store.add_stat
        if step.action == ENTER and state.status != WAITING:
            if machine.reentry_at_entry and journey.reentry_days and state.last_sent_ms and \
                    at_ms - state.last_sent_ms < journey.reentry_days * C.DAY_MS:
                add(txn, journey_id, "suppressed")
                add(txn, journey_id, "suppressed:reentry")
                machine.reset(state)
            else:
                state.status = WAITING
                state.entry += 1
                state.entered_ms = at_ms
                state.due_ms = max(1, step.due_ms)
                self.store.set_timer(txn, user, journey_id, 0, state.due_ms)
                add(txn, journey_id, "entered")
                add(txn, journey_id, "pending")
        elif step.action in (ENTER, UPDATE) and state.status == WAITING:
            due = max(1, step.due_ms)
            if due != state.due_ms:
                self.store.set_timer(txn, user, journey_id, state.due_ms, due)
                state.due_ms = due
        elif step.action == CANCEL and state.status == WAITING:
            self.store.set_timer(txn, user, journey_id, state.due_ms, 0)
            state.status = IDLE
            state.due_ms = 0
            machine.reset(state)
            add(txn, journey_id, "cancelled")
            add(txn, journey_id, f"cancelled:{step.reason}")
            add(txn, journey_id, "pending", -1)
        if not before and state == DEFAULT_STATE:
            return                      # nothing to keep for a shopper this journey never saw
        after = state.to_bytes()
        if after != before and not (before == b"" and after == EMPTY_STATE):
            self.store.put_state(txn, user, journey_id, state)

    # Attribution and erasure.
    def _attribute(self, txn: lmdb.Transaction, user: str, event: common_pb2.Event) -> None:
        utm = event.context.utm
        message_id = event.campaign_id or utm.content or utm.campaign
        delivery = self.store.delivery(txn, message_id) if message_id else None
        if delivery is None and event.type == ET.PURCHASE:
            message_id = self.store.engaged_message(txn, user)
            delivery = self.store.delivery(txn, message_id) if message_id else None
        if delivery is None:
            return
        if not -C.ATTRIBUTION_SKEW_MS <= event.timestamp_ms - delivery.created_ms <= self.attribution_ms:
            return
        add = self.store.add_stat
        journey_id = delivery.journey_id
        if event.type in (ET.EMAIL_OPEN, ET.EMAIL_CLICK):
            if not delivery.opened:
                delivery.opened = True
                add(txn, journey_id, "opened")
            if event.type == ET.EMAIL_CLICK and not delivery.clicked:
                delivery.clicked = True
                add(txn, journey_id, "clicked")
            self.store.set_engaged_message(txn, user, message_id)
        else:
            if not delivery.converted:
                delivery.converted = True
                add(txn, journey_id, "converted")
            self.store.add_revenue(txn, journey_id, event.price * max(1, event.quantity))
        self.store.put_delivery(txn, message_id, delivery)

    def erase(self, txn: lmdb.Transaction, user: str) -> None:
        """Every trace of the shopper: journey states, timers, watches, messages, caps."""
        for journey_id, state in list(self.store.user_states(txn, user)):
            if state.status == WAITING:
                self.store.set_timer(txn, user, journey_id, state.due_ms, 0)
                self.store.add_stat(txn, journey_id, "pending", -1)
            txn.delete(user.encode() + b"\x00" + journey_id.encode(), db=self.store.db["states"])
        for journey_id, product_id in self.store.user_watches(txn, user):
            self.store.delete_watch(txn, product_id, journey_id, user)
        self.store.delete_user_messages(txn, user)
        self.store.delete_user_misc(txn, user)
