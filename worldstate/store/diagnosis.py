"""First errors that say what is wrong: store failures that no retry will fix (a database
that does not exist, refused credentials, a store without the worldstate schema), told
apart from transient ones (a busy or unreachable server), so they fail at once with a
message naming the fix instead of being retried into "overloaded or unreachable".

The drivers do not always carry a SQLSTATE for connection-time failures (psycopg reports
``FATAL: database "x" does not exist`` as an OperationalError without one), so the text is
matched too."""

from __future__ import annotations

import re

from sqlalchemy.engine import URL

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r'database "?([^"\s]+)"? does not exist', re.I),
        "the database {db} does not exist on {host} — create it (CREATE DATABASE {db}) "
        "or fix the database name in the store URL",
    ),
    (
        re.compile(
            r"password authentication failed|authentication failed|"
            r'role "?[^"\s]+"? does not exist|no pg_hba\.conf entry|'
            r"password must be|certificate .* not|SASL authentication",
            re.I,
        ),
        "the store at {host} refused the credentials of user {user!r} (unauthorised) — "
        "check the user name, password or certificate in the store URL",
    ),
    (
        re.compile(
            r'no such table|relation "?ws_[a-z_]+"? does not exist|'
            r'table "?ws_[a-z_]+"? does not exist',
            re.I,
        ),
        "no worldstate schema here ({where}) — run `worldstate migrate --store URL` "
        "(or start a server, which creates it)",
    ),
    (
        re.compile(r"unable to open database file", re.I),
        "cannot open the SQLite file {db} — check the path and its permissions",
    ),
)
PERMANENT_SQLSTATES = {
    "3D000": 0,  # invalid_catalog_name (database does not exist)
    "28000": 1,  # invalid_authorization_specification
    "28P01": 1,  # invalid_password
    "42P01": 2,  # undefined_table
}


def permanent_problem(err: BaseException, url: URL | None = None) -> str | None:
    """A clear message when ``err`` is a store failure retrying cannot fix, else None."""
    orig = getattr(err, "orig", None) or err
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    text = str(orig)
    template: str | None = None
    if code in PERMANENT_SQLSTATES:
        template = _PATTERNS[PERMANENT_SQLSTATES[str(code)]][1]
    else:
        for pattern, tmpl in _PATTERNS:
            if pattern.search(text):
                template = tmpl
                break
    if template is None:
        return None
    host = f"{url.host or 'localhost'}:{url.port or 'default port'}" if url else "the server"
    db = (url.database if url else None) or "?"
    where = url.render_as_string(hide_password=True) if url else "this store"
    user = (url.username if url else None) or "(none)"
    return template.format(db=db, host=host, where=where, user=user)
