"""The synthetic demo store: a sports and outdoor shop with realistic shoppers and behaviour.

- `config.DemoConfig` (sizes, seed, window; `DemoConfig.preset("demo" | "load")`).
- `catalog.generate_products(n, seed)` / `catalog.build_catalog(...)`: products (protobuf / NumPy columns).
- `shoppers.iter_shoppers(config, catalog)`: shoppers with interests, budgets and contexts.
- `sessions.iter_events(config)`: protobuf Events, shopper by shopper, in time order (streaming);
  `sessions.iter_sessions(config)`: product-id sequences per visit; `sessions.time_split(config)`.
- `store.demo_segments()`, `store.demo_offers(now_ms)`: store-defined segments and offers.
- `loader.load_demo(config, ...)` (async) / `loader.load_demo_sync(...)`: load it all into running services.
- `stats.dataset_stats(config)`: what `vitrine demo --dry-run` prints.
"""
