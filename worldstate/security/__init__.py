"""Transport security helpers shared by the bus, cache and store adapters: secrets out of
every printed URL (`redact_url`) and TLS settings carried in URLs (`TlsOptions`). The
signing of bus messages lives in `worldstate.bus.SignedBus`; see ``docs/security.md``."""

from worldstate.security._redact import MASK, SECRET_PARAMS, redact_url
from worldstate.security._tls import TLS_PARAMS, TlsOptions, describe_tls_error

__all__ = ["MASK", "SECRET_PARAMS", "TLS_PARAMS", "TlsOptions", "describe_tls_error", "redact_url"]
