"""``worldstate probe``: GET one of a server's HTTP endpoints, exit 0 on 200 — the health
check of containers whose image has no curl (compose healthchecks, exec probes)."""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "probe",
        help="GET http://HOST:PORT/PATH of a serve/coordinator process; exit 0 on HTTP 200",
    )
    p.add_argument("path", nargs="?", default="/readyz", help="/readyz (default), /healthz...")
    p.add_argument("--port", type=int, default=9464, help="port (default 9464)")
    p.add_argument("--host", default="127.0.0.1", help="host (default 127.0.0.1)")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2)")


def run(args: argparse.Namespace) -> int:
    path = args.path if args.path.startswith("/") else "/" + args.path
    url = f"http://{args.host}:{args.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as r:
            body = r.read(2000).decode(errors="replace")
            status = int(r.status)
    except urllib.error.HTTPError as e:
        body, status = e.read(2000).decode(errors="replace"), int(e.code)
    except (OSError, urllib.error.URLError) as e:
        print(f"worldstate probe: {url}: no answer ({e})", file=sys.stderr)
        return 1
    print(f"{status} {body.strip()}")
    return 0 if status == 200 else 1
