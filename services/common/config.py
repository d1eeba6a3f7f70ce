"""Typed configuration read once from command-line flags and environment variables.

Each service declares a frozen dataclass that extends `ServerConfig`. Every field
becomes a flag `--field-name` and can be set by the environment as
`VITRINE_<SERVICE>_<FIELD>` (service-specific) or `VITRINE_<FIELD>` (shared by all
services, e.g. VITRINE_AUTH_TOKEN). Precedence: flag > service env > shared env > default.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

C = TypeVar("C", bound="ServerConfig")


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Settings every gRPC service has."""

    host: str = dataclasses.field(default="127.0.0.1", metadata={"help": "address to bind ([::] in containers)"})
    port: int = dataclasses.field(default=0, metadata={"help": "gRPC port (0 = pick a free one)"})
    metrics_port: int = dataclasses.field(
        default=-1, metadata={"help": "Prometheus /metrics HTTP port (-1 = off, 0 = any free port)"}
    )
    log_level: str = dataclasses.field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING or ERROR"})
    grace_seconds: float = dataclasses.field(
        default=5.0, metadata={"help": "how long in-flight RPCs may finish after SIGTERM"}
    )
    auth_token: str = dataclasses.field(
        default="", metadata={"help": "shared bearer token; when set, every RPC but health must carry it"}
    )
    tls_cert_file: str = dataclasses.field(default="", metadata={"help": "PEM certificate: serve TLS"})
    tls_key_file: str = dataclasses.field(default="", metadata={"help": "PEM private key for --tls-cert-file"})
    tls_ca_file: str = dataclasses.field(
        default="", metadata={"help": "PEM CA bundle: verify peers (clients and backends)"}
    )
    max_message_mb: int = dataclasses.field(default=16, metadata={"help": "largest gRPC message, MiB"})
    max_concurrent_rpcs: int = dataclasses.field(
        default=0, metadata={"help": "refuse RPCs beyond this many in flight with RESOURCE_EXHAUSTED (0 = no cap)"}
    )


def _field_type(cls: type, field: dataclasses.Field[Any]) -> type:
    hints = typing.get_type_hints(cls)
    hint = hints[field.name]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0]
    return hint


def _parse_value(kind: type, raw: str, name: str) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{name}: expected a boolean, got {raw!r}")
    if typing.get_origin(kind) is tuple or kind is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    try:
        return kind(raw)
    except ValueError as exc:
        raise ValueError(f"{name}: expected {kind.__name__}, got {raw!r}") from exc


def env_names(service: str, field_name: str) -> tuple[str, str]:
    upper = field_name.upper()
    return f"VITRINE_{service.upper()}_{upper}", f"VITRINE_{upper}"


def load_config(
    cls: type[C],
    service: str,
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    description: str | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> C:
    """Build `cls` from flags, then environment, then `defaults`, then the dataclass defaults."""
    env = os.environ if env is None else env
    defaults = defaults or {}
    parser = argparse.ArgumentParser(prog=f"vitrine serve {service}", description=description)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        kind = _field_type(cls, field)
        default = defaults.get(field.name, field.default)
        if default is dataclasses.MISSING and callable(field.default_factory):
            default = field.default_factory()
        for env_name in env_names(service, field.name):
            if env_name in env:
                default = _parse_value(kind, env[env_name], env_name)
                break
        values[field.name] = default
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata.get("help", "")
        env_help = "env " + " or ".join(env_names(service, field.name))
        if kind is bool:
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{help_text} ({env_help}; default {default})")
        else:
            parser.add_argument(flag, dest=field.name, default=None, metavar=field.name.upper(),
                                help=f"{help_text} ({env_help}; default {default!r})")
    parsed = parser.parse_args(list(argv) if argv is not None else [])
    for field in dataclasses.fields(cls):
        raw = getattr(parsed, field.name)
        if raw is None:
            continue
        kind = _field_type(cls, field)
        values[field.name] = raw if isinstance(raw, bool) else _parse_value(kind, raw, "--" + field.name)
    return cls(**values)
