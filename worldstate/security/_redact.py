"""Secrets out of every URL we print: logs, errors, ``stats()``, the CLI.

``redact_url("mqtt://gs:hunter2@broker:1883")`` → ``"mqtt://gs:***@broker:1883"``; query
parameters that carry secrets (``password``, ``sslpassword``, ``key_password``, ``token``)
become ``***`` too. Paths to key files are not secret and are kept (they help debugging).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SECRET_PARAMS = frozenset({"password", "sslpassword", "key_password", "token", "secret"})
MASK = "***"


def redact_url(url: object) -> str:
    """``url`` with its password and secret query parameters replaced by ``***``. Never
    raises: anything that is not a parsable URL comes back as a fixed placeholder if it
    might hold a password (it contains ``@``), else unchanged."""
    text = str(url)
    try:
        parts = urlsplit(text)
        password = parts.password
        port = parts.port
    except ValueError:
        return "<unparsable URL>" if "@" in text else text
    netloc = parts.netloc
    if password is not None:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if port is not None:
            host = f"{host}:{port}"
        netloc = f"{parts.username or ''}:{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in SECRET_PARAMS for k, _ in pairs):
            query = urlencode(
                [(k, MASK if k.lower() in SECRET_PARAMS else v) for k, v in pairs], safe="/*"
            )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


__all__ = ["MASK", "SECRET_PARAMS", "redact_url"]
