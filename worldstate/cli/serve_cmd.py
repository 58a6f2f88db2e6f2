"""``worldstate serve``: run one game server of the mesh until SIGTERM (see
`worldstate.serve`). Every option also comes from the environment: ``--id`` from
``WORLDSTATE_SERVER_ID``, ``--store``/``--cache``/``--bus``/``--namespace`` from the matching
``WORLDSTATE_*`` Config variables, ``--metrics-port`` from ``WORLDSTATE_METRICS_PORT``,
``--metrics-host`` from ``WORLDSTATE_METRICS_HOST``, ``--log-format`` from
``WORLDSTATE_LOG_FORMAT``, ``--play`` from ``WORLDSTATE_PLAY``."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from worldstate.config import Config
from worldstate.serve._logging import FORMATS, configure_logging


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"worldstate: {name}={raw!r} is not an integer") from None


def add_runtime_options(p: argparse.ArgumentParser, *, default_port: int) -> None:
    """Options shared by the long-running commands (serve, coordinator)."""
    p.add_argument(
        "--metrics-port",
        type=int,
        default=_env_int("WORLDSTATE_METRICS_PORT", default_port),
        help=f"HTTP port of /metrics, /healthz, /readyz (0: any free port; default "
        f"$WORLDSTATE_METRICS_PORT or {default_port})",
    )
    p.add_argument(
        "--metrics-host",
        default=os.environ.get("WORLDSTATE_METRICS_HOST", "0.0.0.0"),
        help="address to listen on (default $WORLDSTATE_METRICS_HOST or 0.0.0.0)",
    )
    p.add_argument(
        "--log-format",
        choices=FORMATS,
        default=os.environ.get("WORLDSTATE_LOG_FORMAT", "console"),
        help="log lines as JSON objects or readable text (default $WORLDSTATE_LOG_FORMAT "
        "or console)",
    )


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run a game server of the mesh (owns the regions the coordinator assigns; "
        "/metrics, /healthz, /readyz; hands off on SIGTERM)",
        description="Run one game-server process of the mesh until SIGTERM/SIGINT, then "
        "hand its regions off (drain, snapshot, release) and exit 0.",
    )
    p.add_argument(
        "--id", dest="server_id", help="this server's id (default: $WORLDSTATE_SERVER_ID)"
    )
    p.add_argument("--store", help="store URL (default: $WORLDSTATE_STORE_URL)")
    p.add_argument(
        "--cache",
        help="cache URL, e.g. redis://cache:6379/0 (default: $WORLDSTATE_CACHE_URL or memory://)",
    )
    p.add_argument("--bus", help="bus URL, e.g. mqtt://broker:1883 (default: $WORLDSTATE_BUS_URL)")
    p.add_argument("--namespace", help="mesh namespace (default: $WORLDSTATE_NAMESPACE or ws)")
    add_runtime_options(p, default_port=9464)
    p.add_argument(
        "--play",
        type=int,
        default=_env_int("WORLDSTATE_PLAY", 0),
        metavar="N",
        help="also run N simulated players on the regions this server holds (default 0)",
    )
    p.add_argument(
        "--record-acks",
        metavar="FILE",
        help="append every strong op of --play acknowledged as committed to FILE (tests and "
        "load runs check none is lost)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=20.0,
        help="seconds the SIGTERM hand-off may take (default 20)",
    )


def config_from(args: argparse.Namespace, **more: Any) -> Config:
    overrides: dict[str, Any] = dict(more)
    for opt, field in (
        ("store", "store_url"),
        ("cache", "cache_url"),
        ("bus", "bus_url"),
        ("namespace", "namespace"),
        ("server_id", "server_id"),
    ):
        v = getattr(args, opt, None)
        if v:
            overrides[field] = v
    return Config.from_env(**overrides)


async def run(args: argparse.Namespace) -> int:
    from worldstate.serve import ServeSettings, run_server

    if args.play < 0 or args.drain_timeout <= 0 or not 0 <= args.metrics_port <= 65535:
        raise SystemExit(
            "worldstate serve: --play must be >= 0, --drain-timeout > 0, --metrics-port 0..65535"
        )
    if not (args.server_id or os.environ.get("WORLDSTATE_SERVER_ID")):
        raise SystemExit("worldstate serve: give --id ID or set WORLDSTATE_SERVER_ID")
    config = config_from(args)
    configure_logging(
        args.log_format,
        server_id=config.server_id,
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
    )
    settings = ServeSettings(
        config,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
        play=args.play,
        record_acks=args.record_acks,
        drain_timeout=args.drain_timeout,
    )
    return await run_server(settings)
