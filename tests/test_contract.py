"""Every service, RPC, message, field and enum value that ../shared/API.md names exists
in the generated contract, and the generated code matches the protos (no stale copy)."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool

from vitrine.v1 import common_pb2, gateway_pb2, profile_pb2, recommend_pb2, segment_pb2  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
POOL = descriptor_pool.Default()

MESSAGES: dict[str, set[str]] = {
    "Utm": {"source", "medium", "campaign", "term", "content"},
    "Context": {"device_type", "os", "browser", "screen_width", "screen_height", "country", "region", "city",
                "language", "currency", "traffic_source", "referrer", "utm"},
    "Event": {"event_id", "user_id", "session_id", "type", "timestamp_ms", "product_id", "category", "query",
              "price", "quantity", "order_id", "coupon", "context"},
    "Product": {"product_id", "title", "category", "brand", "price", "currency", "stock", "tags", "embedding",
                "attributes"},
    "TrackRequest": {"event"},
    "TrackResponse": {"applied"},
    "TrackSummary": {"accepted", "duplicates", "rejected", "errors"},
    "GetProfileRequest": {"user_id"},
    "IdentifyRequest": {"anonymous_id", "customer_id", "traits"},
    "SetConsentRequest": {"user_id", "consent"},
    "DeleteProfileRequest": {"user_id"},
    "DeleteProfileResponse": {"deleted"},
    "ExportProfileRequest": {"user_id"},
    "ExportProfileResponse": {"json"},
    "Profile": {"user_id", "customer_id", "registered", "first_seen_ms", "last_seen_ms", "visit_count",
                "event_count", "recently_viewed", "category_affinity", "purchase_count", "total_spend",
                "avg_order_value", "avg_session_spend", "last_purchase_ms", "purchased_product_ids", "cart", "rfm",
                "email_opens", "email_clicks", "first_context", "last_context", "consent", "traits"},
    "CartItem": {"product_id", "quantity", "price"},
    "Rfm": {"recency_days", "frequency", "monetary", "r_score", "f_score", "m_score"},
    "Consent": {"personalization", "marketing", "updated_ms"},
    "Segment": {"segment_id", "name", "description", "rule", "priority"},
    "EvaluateRequest": {"profile", "context"},
    "EvaluateResponse": {"segment_ids", "offers"},
    "EstimateSizeRequest": {"segment_id", "rule"},
    "EstimateSizeResponse": {"matching", "total"},
    "Offer": {"offer_id", "title", "body", "slot", "coupon_code", "segment_ids", "priority", "starts_ms", "ends_ms",
              "payload"},
    "StockUpdate": {"product_id", "stock", "price"},
    "UpsertSummary": {"upserted", "rejected", "errors"},
    "TrainRequest": set(),
    "TrainResponse": {"model_version", "items", "interactions"},
    "RecommendRequest": {"strategy", "k", "product_id", "cart_product_ids", "user", "constraints", "context"},
    "UserSignals": {"user_id", "recent_product_ids", "purchased_product_ids", "category_affinity", "budget"},
    "Constraints": {"include_out_of_stock", "max_price", "min_price", "exclude_product_ids", "include_categories",
                    "exclude_categories", "max_per_category", "exclude_purchased"},
    "RecommendResponse": {"items", "strategy_used", "fallback", "model_version"},
    "ScoredProduct": {"product_id", "score", "title", "category", "price", "reason"},
    "ObserveSummary": set(),
    "PersonalizeRequest": {"user_id", "session_id", "context", "page_type", "product_id", "cart_product_ids",
                           "placements"},
    "Placement": {"slot_id", "strategy", "k", "constraints"},
    "PersonalizeResponse": {"segment_ids", "placements", "offers", "personalized", "fallback_reason"},
    "PlacementResult": {"slot_id", "items", "strategy_used", "fallback"},
}

SERVICES: dict[str, set[str]] = {
    "ProfileService": {"Track", "TrackStream", "GetProfile", "Identify", "SetConsent", "DeleteProfile",
                       "ExportProfile", "ScanProfiles", "ScanEvents"},
    "SegmentService": {"PutSegment", "GetSegment", "ListSegments", "DeleteSegment", "Evaluate", "EstimateSize",
                       "PutOffer", "ListOffers", "DeleteOffer"},
    "RecommendService": {"UpsertProducts", "UpdateInventory", "Observe", "Train", "Recommend"},
    "PersonalizationService": {"Track", "Personalize"},
}

STREAMING = {  # method: (client streaming, server streaming)
    "ProfileService.TrackStream": (True, False),
    "ProfileService.ScanProfiles": (False, True),
    "ProfileService.ScanEvents": (False, True),
    "RecommendService.UpsertProducts": (True, False),
    "RecommendService.UpdateInventory": (True, False),
    "RecommendService.Observe": (True, False),
}

ENUMS: dict[str, list[str]] = {
    "EventType": ["EVENT_TYPE_UNSPECIFIED", "PAGE_VIEW", "PRODUCT_VIEW", "CATEGORY_VIEW", "SEARCH", "ADD_TO_CART",
                  "REMOVE_FROM_CART", "CHECKOUT", "PURCHASE", "COUPON_APPLIED", "EMAIL_OPEN", "EMAIL_CLICK"],
    "Strategy": ["STRATEGY_UNSPECIFIED", "FOR_YOU", "SIMILAR", "BOUGHT_TOGETHER", "UP_SELL", "RECENTLY_VIEWED",
                 "TRENDING", "CART_COMPLEMENTS"],
}


@pytest.mark.parametrize("message", sorted(MESSAGES))
def test_message_has_contract_fields(message: str) -> None:
    descriptor = POOL.FindMessageTypeByName(f"vitrine.v1.{message}")
    missing = MESSAGES[message] - set(descriptor.fields_by_name)
    assert not missing, f"{message} lacks {sorted(missing)}"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_has_contract_rpcs(service: str) -> None:
    descriptor = POOL.FindServiceByName(f"vitrine.v1.{service}")
    missing = SERVICES[service] - set(descriptor.methods_by_name)
    assert not missing, f"{service} lacks {sorted(missing)}"


@pytest.mark.parametrize("method", sorted(STREAMING))
def test_streaming_shape(method: str) -> None:
    service, name = method.split(".")
    descriptor = POOL.FindServiceByName(f"vitrine.v1.{service}").methods_by_name[name]
    assert (descriptor.client_streaming, descriptor.server_streaming) == STREAMING[method]


@pytest.mark.parametrize("enum", sorted(ENUMS))
def test_enum_values_in_contract_order(enum: str) -> None:
    descriptor = POOL.FindEnumTypeByName(f"vitrine.v1.{enum}")
    assert [v.name for v in descriptor.values][: len(ENUMS[enum])] == ENUMS[enum]
    assert descriptor.values_by_name[ENUMS[enum][0]].number == 0


def test_proto_files_live_under_the_package_path() -> None:
    for name in ("common", "profile", "segment", "recommend", "gateway"):
        assert (ROOT / "protos" / "vitrine" / "v1" / f"{name}.proto").is_file()


def test_generated_code_is_current(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "tools" / "gen_protos.py"), "--out", str(tmp_path)], check=True)
    generated = sorted(p.name for p in (tmp_path / "vitrine" / "v1").glob("*_pb2*"))
    assert generated, "protoc produced nothing"
    for name in generated:
        assert filecmp.cmp(tmp_path / "vitrine" / "v1" / name, ROOT / "vitrine" / "v1" / name, shallow=False), (
            f"vitrine/v1/{name} is stale: run `make gen`"
        )
