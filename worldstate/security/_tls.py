"""TLS settings carried in bus and cache URLs: ``?ca=FILE&cert=FILE&key=FILE``.

- ``ca``: PEM file of the certificate authorities to trust (default: the system's).
- ``cert`` and ``key``: this client's certificate chain and private key (PEM), for brokers
  and servers that require client certificates (both or neither).
- ``check_hostname``: ``true`` (default) or ``false``; turning it off is for test rigs only.

The parameters are accepted only with a TLS scheme (``mqtts://``, ``rediss://``): a CA on a
plain-text URL is a mistake that would otherwise silently send everything in clear.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

from worldstate.errors import ValidationError

TLS_PARAMS = frozenset({"ca", "cert", "key", "check_hostname"})


@dataclass(frozen=True, slots=True)
class TlsOptions:
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    check_hostname: bool = True

    @classmethod
    def from_query(cls, params: Mapping[str, str], *, tls: bool, what: str) -> TlsOptions:
        """Take the TLS parameters out of a URL's query (``what`` names the URL in errors)."""
        given = {k: v for k, v in params.items() if k in TLS_PARAMS}
        if given and not tls:
            raise ValidationError(
                f"{what}: {', '.join(sorted(given))} given on a plain-text URL; use the TLS "
                "scheme (mqtts://, rediss://)"
            )
        flag = given.get("check_hostname", "true").lower()
        if flag not in ("true", "false", "1", "0", "yes", "no"):
            raise ValidationError(f"{what}: check_hostname must be true or false, got {flag!r}")
        opts = cls(
            given.get("ca") or None,
            given.get("cert") or None,
            given.get("key") or None,
            flag in ("true", "1", "yes"),
        )
        if (opts.cert is None) != (opts.key is None):
            raise ValidationError(f"{what}: give both cert= and key= (or neither)")
        for name in ("ca", "cert", "key"):
            path = getattr(opts, name)
            if path is not None and not os.path.isfile(path):
                raise ValidationError(f"{what}: {name}={path!r} is not a readable file")
        return opts

    def context(self) -> ssl.SSLContext:
        """A client context: verify the server against ``ca`` (or the system CAs), check
        its host name unless turned off, present ``cert``/``key`` if given."""
        try:
            ctx = ssl.create_default_context(cafile=self.ca)
            ctx.check_hostname = self.check_hostname
            if self.cert is not None:
                ctx.load_cert_chain(self.cert, self.key)
        except (ssl.SSLError, OSError) as e:
            raise ValidationError(f"TLS settings cannot be loaded: {e}") from None
        return ctx


def describe_tls_error(exc: BaseException) -> str | None:
    """A plain sentence for a TLS failure anywhere in ``exc``'s causes, else None."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError):
            return (
                f"TLS certificate check failed ({cur.verify_message}): the server's "
                "certificate is not signed by the configured CA (ca=...) or names another host"
            )
        if isinstance(cur, ssl.SSLError):
            return f"TLS handshake failed ({cur.reason or cur}): check ca=, cert=, key="
        cur = cur.__cause__ or cur.__context__
    return None


__all__ = ["TLS_PARAMS", "TlsOptions", "describe_tls_error"]
