"""A small neutral schema and helpers shared by the rule-language tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from scoring.rules import ColumnBuilder, CompiledRule, FieldType, Schema, compile_program, compile_rule
from scoring.rules.plain import features, getters_for
from scoring.rules.reference import interpret
from scoring.units import DAY_MS as DAY

SCHEMA = Schema(
    fields={
        "visit_count": FieldType.NUMBER,
        "total_spend": FieldType.NUMBER,
        "registered": FieldType.BOOL,
        "customer_id": FieldType.STRING,
        "last_seen_ms": FieldType.TIMESTAMP,
        "last_purchase_ms": FieldType.TIMESTAMP,
        "recently_viewed": FieldType.STRING_LIST,
        "category_affinity": FieldType.NUMBER_MAP,
        "traits": FieldType.STRING_MAP,
        "rfm.r_score": FieldType.NUMBER,
        "rfm.m_score": FieldType.NUMBER,
        "context.device_type": FieldType.STRING,
        "context.utm.campaign": FieldType.STRING,
        "consent.marketing": FieldType.BOOL,
    },
    event_types=frozenset({"PURCHASE", "PAGE_VIEW", "ADD_TO_CART"}),
    max_event_days=365,
)
NOW = 1_763_900_000_000  # 2025-11-23T12:13:20Z
TODAY = NOW // DAY


def compile_(rule: str) -> CompiledRule:
    return compile_rule(rule, SCHEMA)


def matches(rule: str | CompiledRule, data: Mapping[str, Any], now: int = NOW) -> bool:
    """One rule through the program evaluator (the production path for one shopper)."""
    return program_matches([compile_(rule) if isinstance(rule, str) else rule], data, now) == [True]


def program_matches(rules: Sequence[CompiledRule], data: Mapping[str, Any], now: int = NOW) -> list[bool]:
    """Every rule in one program over plain data."""
    program = compile_program([r.expr for r in rules])
    hits = set(program.matching(features(program, data, now), now).tolist())
    return [i in hits for i in range(len(rules))]


def reference(rule: CompiledRule, data: Mapping[str, Any], now: int = NOW) -> bool:
    return bool(interpret(rule.tree, data, SCHEMA, now))


def vectorized(rule: CompiledRule, rows: Sequence[Mapping[str, Any]], now: int = NOW) -> np.ndarray:
    getters = getters_for(rule.accesses)
    builder = ColumnBuilder(rule.accesses)
    for data in rows:
        builder.append([getters[a.key](data, now) for a in rule.accesses])
    return rule.evaluate_columns(builder.finish(), now)


def message_matches(rules: Sequence[CompiledRule], profile: Any, context: Any, now: int = NOW) -> list[bool]:
    """Rules compiled against the service schema, in one program over Profile/Context messages."""
    from services.segmentation.fields import WireReader, reading_order

    program = compile_program([r.expr for r in rules],
                              reading_order(dict.fromkeys(a for r in rules for a in r.accesses)))
    hits = set(WireReader(program).matching(profile, context, now).tolist())
    return [i in hits for i in range(len(rules))]
