"""`vitrine demo`: generate the synthetic demo store and load it into running services.

`--dry-run` only generates it and prints statistics (no server needed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

NAME = "demo"
HELP = "generate the demo store (products, shoppers, events, segments, offers) and load it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", choices=("demo", "load"), default="demo",
                        help="size preset: demo (10k products, 5k shoppers) or load (100k, 1M)")
    parser.add_argument("--products", type=int, default=None, help="number of products (overrides the preset)")
    parser.add_argument("--shoppers", type=int, default=None, help="number of shoppers (overrides the preset)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 42)")
    parser.add_argument("--days", type=int, default=None, help="days of history, ending now")
    parser.add_argument("--now-ms", type=int, default=None, help="end of the history (default: now)")
    parser.add_argument("--currency", choices=("EUR", "BRL"), default=None)
    parser.add_argument("--gateway", default=os.environ.get("VITRINE_GATEWAY_ADDRESS", ""),
                        help="gateway address (Identify across shards; Track when no --profile is given)")
    parser.add_argument("--profile", default=os.environ.get("VITRINE_PROFILE_ADDRESSES", "127.0.0.1:50052"),
                        help="profile shard addresses, comma-separated, in shard order ('' = via --gateway)")
    parser.add_argument("--segmentation", default=os.environ.get("VITRINE_SEGMENTATION_ADDRESS", "127.0.0.1:50053"),
                        help="segmentation address ('' = skip segments and offers)")
    parser.add_argument("--recommendation",
                        default=os.environ.get("VITRINE_RECOMMENDATION_ADDRESS", "127.0.0.1:50054"),
                        help="recommendation address ('' = skip products, Observe and Train)")
    parser.add_argument("--token", default=os.environ.get("VITRINE_AUTH_TOKEN", ""), help="bearer token")
    parser.add_argument("--no-train", action="store_true", help="do not train the recommendation model")
    parser.add_argument("--batch-size", type=int, default=None, help="events per profile flush (sent as TrackBatch)")
    parser.add_argument("--dry-run", action="store_true", help="only generate and print statistics")
    parser.add_argument("--json", action="store_true", help="with --dry-run: statistics as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _config(args: argparse.Namespace):
    from vitrine.demo.config import DemoConfig

    return DemoConfig.preset(args.scale, n_products=args.products, n_shoppers=args.shoppers, seed=args.seed,
                             days=args.days, now_ms=args.now_ms, currency=args.currency).resolved()


def _print_stats(stats: dict) -> None:
    cfg, cat = stats["config"], stats["catalog"]
    print(f"demo store ({cfg['scale']}): seed {cfg['seed']}, {cfg['days']} days ending at {cfg['now_ms']}")
    print(f"products {cat['products']:,} in {cat['categories']} categories ({cat['currency']}), "
          f"out of stock {cat['out_of_stock_share']:.1%}")
    print(f"  {'category':<20} {'products':>8} {'p10':>9} {'median':>9} {'p90':>9}")
    for name, row in cat["price_by_category"].items():
        print(f"  {name:<20} {row['products']:>8,} {row['p10']:>9.2f} {row['median']:>9.2f} {row['p90']:>9.2f}")
    print(f"shoppers {stats['shoppers']:,}: registered {stats['registered_from_start']:,}, "
          f"logged in mid-history {stats['logged_in_mid_history']:,}, anonymous {stats['anonymous']:,}, "
          f"purchasers {stats['purchasers']:,}")
    print(f"visits {stats['visits']:,}, orders {stats['orders']:,}, events {stats['events']:,} "
          f"({stats['events_per_second']:,} events/s generated, {stats['generation_seconds']}s)")
    print("events by type: " + ", ".join(f"{k} {v:,}" for k, v in stats["events_by_type"].items()))
    for key in ("device_mix", "country_mix", "source_mix"):
        print(f"{key.replace('_', ' ')}: " + ", ".join(f"{k} {v:.1%}" for k, v in stats[key].items()))
    print("utm campaigns (first visit): " + ", ".join(f"{k} {v:,}" for k, v in stats["utm_campaigns"].items()))
    print(f"consecutive product views in the same category: {stats['consecutive_views_same_category']:.1%}")


def run(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
    except ValueError as err:
        print(f"vitrine demo: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        from vitrine.demo.stats import dataset_stats

        progress = None if args.quiet else (lambda line: print(f"[demo] {line}", file=sys.stderr, flush=True))
        stats = dataset_stats(config, progress)
        if args.json:
            print(json.dumps(stats, indent=2, ensure_ascii=False))
        else:
            _print_stats(stats)
        return 0

    from vitrine.demo.loader import EVENT_BATCH, load_demo

    profiles = [a.strip() for a in args.profile.split(",") if a.strip()]
    try:
        report = asyncio.run(load_demo(
            config,
            profile_addresses=profiles or None,
            gateway_address=args.gateway or None,
            segmentation_address=args.segmentation or None,
            recommendation_address=args.recommendation or None,
            auth_token=args.token,
            progress=not args.quiet,
            train=not args.no_train,
            batch_size=args.batch_size or EVENT_BATCH,
        ))
    except (TimeoutError, RuntimeError) as err:
        print(f"vitrine demo: {err}", file=sys.stderr)
        return 1
    print(report.summary())
    for message in report.errors[:10]:
        print(f"  error: {message}", file=sys.stderr)
    return 1 if report.errors else 0
