"""Capture the SQL a store runs, as statements compiled for CockroachDB.

`SqlCapture` listens to an engine's ``before_execute`` event, so it sees the SQLAlchemy
statement objects (not driver text): whatever SQL the code builds — today's or a rewritten
strong path's — is captured while a workload runs on PostgreSQL, then compiled with the
``cockroachdb`` dialect (sqlalchemy-cockroachdb) and normalised so that the text depends on
the statement's shape only: bound parameters stay placeholders, and a multi-row VALUES list
of any length is shown with one row.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.ddl import ExecutableDDLElement

__all__ = ["FORBIDDEN", "SqlCapture", "cockroach_dialect", "normalise"]

_TABLE = re.compile(r"\bws_[a-z_]+\b")
_MULTI = re.compile(r"_m\d+\b")
_ROWS = re.compile(r"(VALUES \([^()]*\))(?:, \([^()]*\))+")

FORBIDDEN = {
    "UPSERT": re.compile(r"\bUPSERT\b", re.I),
    "advisory lock": re.compile(r"pg_(try_)?advisory", re.I),
    "LISTEN/NOTIFY": re.compile(r"^\s*(LISTEN|NOTIFY|UNLISTEN)\b", re.I),
    "sequence": re.compile(r"\b(SERIAL|BIGSERIAL|SEQUENCE|nextval)\b", re.I),
}
"""Constructs outside the CockroachDB/PostgreSQL subset the store promises (DESIGN.md)."""


def cockroach_dialect() -> Dialect:
    from sqlalchemy_cockroachdb.psycopg import CockroachDBDialect_psycopg

    d: Dialect = CockroachDBDialect_psycopg()
    return d


def normalise(sql: str) -> str:
    """One line per clause as compiled, param names and row counts made shape-only."""
    text = _MULTI.sub("_m", sql)
    text = _ROWS.sub(r"\1", text)
    lines = [ln.rstrip() for ln in text.strip().splitlines()]
    return "\n".join(ln for ln in lines if ln.strip())


class SqlCapture:
    """Statements (compiled for CockroachDB) run on the engines it is attached to."""

    def __init__(self) -> None:
        self.dialect = cockroach_dialect()
        self.statements: set[str] = set()
        self.failures: list[str] = []
        self._engines: list[Any] = []

    def attach(self, engine: AsyncEngine) -> None:
        event.listen(engine.sync_engine, "before_execute", self._seen)
        self._engines.append(engine.sync_engine)

    def detach(self) -> None:
        for e in self._engines:
            event.remove(e, "before_execute", self._seen)
        self._engines.clear()

    def _seen(self, conn: Any, clause: Any, multiparams: Any, params: Any, options: Any) -> None:
        if not isinstance(clause, (ClauseElement, ExecutableDDLElement)):
            return
        try:
            sql = str(clause.compile(dialect=self.dialect))
        except Exception as e:  # a statement CockroachDB's dialect cannot compile
            self.failures.append(f"{type(e).__name__}: {e} in {clause!r:.200}")
            return
        self.statements.add(normalise(sql))

    def by_table(self, tables: Iterable[str]) -> dict[str, list[str]]:
        """Statements whose first ``ws_`` table is one of ``tables``, grouped by it."""
        wanted = set(tables)
        out: dict[str, list[str]] = {}
        for sql in self.statements:
            m = _TABLE.search(sql)
            if m is not None and m.group(0) in wanted:
                out.setdefault(m.group(0), []).append(sql)
        return {t: sorted(v) for t, v in sorted(out.items())}
