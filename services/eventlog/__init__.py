"""The event log behind an interface: embedded LMDB (one machine) or NATS JetStream (scale out)."""
