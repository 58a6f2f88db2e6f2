"""``worldstate serve``: a game-server process of the mesh with ``/metrics``, ``/healthz``,
``/readyz`` and a clean hand-off on SIGTERM (see `worldstate.serve._server`)."""

from worldstate.serve._http import HttpEndpoint, Response
from worldstate.serve._logging import JsonFormatter, configure_logging
from worldstate.serve._server import ServerProcess, ServeSettings, run_server

__all__ = [
    "HttpEndpoint",
    "JsonFormatter",
    "Response",
    "ServeSettings",
    "ServerProcess",
    "configure_logging",
    "run_server",
]
