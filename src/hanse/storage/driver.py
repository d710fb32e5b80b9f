"""Statements compiled once per dialect and run on the driver's own cursor: the hot path's holds
and settlements.

Through `Connection.execute`, each of a metered request's five statements paid SQLAlchemy's
per-execution work (an execution context, parameter processing, a result object): several times
SQLite's own time to run them, and the largest part of a worker's CPU after the HTTP layers
(docs/benchmarks.md). Here a statement is compiled once per dialect, with its bind processors, and
executed on the DBAPI cursor of the connection the unit runs on, inside that connection's
transaction: the same SQL and the same parameter conversions as SQLAlchemy would send.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

_Compiled = tuple[str, list[str], list[Callable[[Any], Any] | None]]


class DriverStatement:
    """A Core statement run as the driver's SQL. An INSERT without values (`insert=True`) sets
    the columns its parameters name, as `Connection.execute` would."""

    def __init__(self, statement: ClauseElement, insert: bool = False) -> None:
        self._statement = statement
        self._insert = insert
        self._compiled: dict[tuple[str, tuple[str, ...]], _Compiled] = {}

    def rowcount(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Rows the statement changed."""
        cursor = self._execute(conn, params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def scalar(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """The first column of the one row the statement returns."""
        cursor = self._execute(conn, params)
        try:
            [value] = cursor.fetchone()
            return value
        finally:
            cursor.close()

    def _execute(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        sql, names, processors = self._compile(conn.dialect, tuple(params) if self._insert else ())
        values = [
            params[name] if process is None else process(params[name])
            for name, process in zip(names, processors, strict=True)
        ]
        cursor = conn.connection.cursor()
        cursor.execute(sql, values)
        return cursor

    def _compile(self, dialect: Dialect, columns: tuple[str, ...]) -> _Compiled:
        found = self._compiled.get((dialect.name, columns))
        if found is None:
            compiled = self._statement.compile(dialect=dialect, column_keys=list(columns) or None)
            assert isinstance(compiled, SQLCompiler)
            # SQLite's qmark and asyncpg's $n: the parameters go as a list, in this order.
            assert compiled.positional, f"{dialect.name}: a positional paramstyle is expected"
            names = list(compiled.positiontup or ())
            processors: list[Callable[[Any], Any] | None] = []
            for name in names:  # SQLAlchemy's own conversions, as its execute applies them
                process = compiled._bind_processors.get(name)
                assert process is None or callable(process), "no tuple-typed parameters here"
                processors.append(process)
            found = (compiled.string, names, processors)
            self._compiled[(dialect.name, columns)] = found
        return found
