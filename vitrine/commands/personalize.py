"""`vitrine personalize --user U [--page home]`: ask the gateway and print the answer as JSON."""

from __future__ import annotations

import argparse

import grpc
from google.protobuf import json_format

from services.common.channel import open_channel
from vitrine.commands._service_flags import add_service_flags
from vitrine.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

NAME = "personalize"
HELP = "what a shopper would see on a page (Personalize through the gateway), as JSON"
PAGES = ("home", "product", "category", "cart", "checkout", "search")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", required=True, help="shopper id (anonymous or customer)")
    parser.add_argument("--page", default="home", choices=PAGES, help="page type (default home)")
    parser.add_argument("--product", default="", help="product shown (product pages)")
    parser.add_argument("--category", default="", help="category (category and search pages)")
    parser.add_argument("--cart", default="", help="cart product ids, comma-separated")
    parser.add_argument("--device", default="", help="context.device_type (mobile, tablet, desktop)")
    parser.add_argument("--country", default="", help="context.country")
    parser.add_argument("--deadline-ms", type=int, default=0, help="budget (0 = gateway default)")
    add_service_flags(parser, "gateway address", "VITRINE_GATEWAY_ADDRESS", "127.0.0.1:50051")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer")


async def _ask(args: argparse.Namespace) -> gateway_pb2.PersonalizeResponse:
    request = gateway_pb2.PersonalizeRequest(
        user_id=args.user, page_type=args.page, product_id=args.product, category=args.category,
        cart_product_ids=[p for p in args.cart.split(",") if p], deadline_ms=args.deadline_ms,
        context=common_pb2.Context(device_type=args.device, country=args.country))
    async with open_channel(args.address, auth_token=args.auth_token) as channel:
        stub = gateway_pb2_grpc.PersonalizationServiceStub(channel)
        return await stub.Personalize(request, timeout=args.timeout)


def run(args: argparse.Namespace) -> int:
    import asyncio

    try:
        reply = asyncio.run(_ask(args))
    except grpc.aio.AioRpcError as err:
        print(f"{err.code().name}: {err.details()}")
        return 1
    print(json_format.MessageToJson(reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True))
    return 0
