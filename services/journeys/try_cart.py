"""The walkthrough's shopper: `python -m services.journeys.try_cart --user c-walk --product p000001`
registers a customer (Identify) with marketing consent and tracks one add-to-cart on the profile
service, which the journeys service then sees on the feed."""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from services.common.channel import open_channel
from vitrine.v1 import common_pb2, profile_pb2, profile_pb2_grpc


async def run(args: argparse.Namespace) -> None:
    async with open_channel(args.profile_address, auth_token=args.auth_token) as channel:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        await stub.Identify(profile_pb2.IdentifyRequest(anonymous_id=f"v-{args.user}", customer_id=args.user,
                                                        traits={"email": args.email}), timeout=10)
        await stub.SetConsent(profile_pb2.SetConsentRequest(
            user_id=args.user, consent=common_pb2.Consent(personalization=True, marketing=True)), timeout=10)
        now = int(time.time() * 1000)
        response = await stub.Track(profile_pb2.TrackRequest(event=common_pb2.Event(
            event_id=f"try-cart-{args.user}-{now}", user_id=args.user, session_id=f"s-{now}",
            type=common_pb2.ADD_TO_CART, product_id=args.product, price=args.price, timestamp_ms=now)), timeout=10)
        print(f"{args.user} added {args.product} to the cart (log seq {response.seq})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--user", default="c-walk")
    parser.add_argument("--product", default="p000001")
    parser.add_argument("--price", type=float, default=0.0)
    parser.add_argument("--email", default="shopper@example.com")
    parser.add_argument("--profile-address", default=os.environ.get("VITRINE_PROFILE_ADDRESS", "127.0.0.1:50052"))
    parser.add_argument("--auth-token", default=os.environ.get("VITRINE_AUTH_TOKEN", ""))
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
