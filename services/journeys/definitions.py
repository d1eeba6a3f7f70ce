"""Validation of journey definitions: a bad one is refused with a message the caller can act on."""

from __future__ import annotations

from services.common.errors import InvalidArgument
from services.journeys import config as C
from services.journeys.machines import COMMON_PARAMS, MACHINES
from vitrine.v1 import journey_pb2, recommend_pb2


def _has_control(value: str) -> bool:
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in value)


def check_id(value: str, field: str) -> None:
    if not value:
        raise InvalidArgument(f"{field} is required")
    if len(value) > C.MAX_ID_LENGTH:
        raise InvalidArgument(f"{field} is {len(value)} characters; at most {C.MAX_ID_LENGTH} are allowed")
    if _has_control(value):
        raise InvalidArgument(f"{field} must not contain control characters")


def validate_journey(journey: journey_pb2.Journey) -> None:
    check_id(journey.journey_id, "journey.journey_id")
    if len(journey.name) > C.MAX_NAME_LENGTH:
        raise InvalidArgument(f"journey.name is longer than {C.MAX_NAME_LENGTH} characters")
    if journey.kind not in MACHINES:
        names = ", ".join(journey_pb2.JourneyKind.Name(k) for k in MACHINES)
        raise InvalidArgument(f"journey.kind must be one of {names}")
    if not 0 <= journey.delay_ms <= C.MAX_DELAY_MS:
        raise InvalidArgument(f"journey.delay_ms must be between 0 and {C.MAX_DELAY_MS} (365 days)")
    if not 0 <= journey.k <= C.MAX_K:
        raise InvalidArgument(f"journey.k must be between 0 and {C.MAX_K} (0 = {C.DEFAULT_K})")
    if not 0 <= journey.reentry_days <= C.MAX_REENTRY_DAYS:
        raise InvalidArgument(f"journey.reentry_days must be between 0 and {C.MAX_REENTRY_DAYS}")
    if journey.strategy not in recommend_pb2.Strategy.values():
        raise InvalidArgument(f"journey.strategy {journey.strategy} is not a Strategy")
    if len(journey.segment_ids) > C.MAX_SEGMENT_IDS:
        raise InvalidArgument(f"journey.segment_ids has more than {C.MAX_SEGMENT_IDS} ids")
    for segment_id in journey.segment_ids:
        check_id(segment_id, "journey.segment_ids[]")
    if journey.offer_id:
        check_id(journey.offer_id, "journey.offer_id")
    if len(journey.params) > C.MAX_PARAMS:
        raise InvalidArgument(f"journey.params has more than {C.MAX_PARAMS} entries")
    allowed = set(COMMON_PARAMS) | set(MACHINES[journey.kind].param_names)
    for name, value in journey.params.items():
        if name not in allowed:
            raise InvalidArgument(f"journey.params[{name!r}] is not a setting of "
                                  f"{journey_pb2.JourneyKind.Name(journey.kind)}; known: {', '.join(sorted(allowed))}")
        if len(value) > C.MAX_PARAM_LENGTH:
            raise InvalidArgument(f"journey.params[{name!r}] is longer than {C.MAX_PARAM_LENGTH} characters")
        if name in ("channel",):
            continue
        if name.startswith("skip_"):
            if value not in ("true", "false"):
                raise InvalidArgument(f"journey.params[{name!r}] must be 'true' or 'false'")
            continue
        try:
            number = float(value)
        except ValueError:
            raise InvalidArgument(f"journey.params[{name!r}] must be a number, got {value!r}") from None
        if not number > 0 or number != number:
            raise InvalidArgument(f"journey.params[{name!r}] must be a positive number")
        if name == "min_drop" and number >= 1:
            raise InvalidArgument("journey.params['min_drop'] is a share of the price, between 0 and 1")
