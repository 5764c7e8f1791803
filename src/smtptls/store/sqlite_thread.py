"""What the SQLite stores share: one connection on one dedicated worker thread.

The event loop never blocks on the database and the connection is never shared between
threads. A subclass names itself (``what``, used in error messages), sets up a new
connection in ``_prepare`` (pragmas, schema) and may check its options in
``_validate`` before anything is opened.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self, TypeVar

from smtptls.errors import StoreError

T = TypeVar("T")

__all__ = ["SqliteThreadStore"]


class SqliteThreadStore:
    what = "store"
    thread_name = "sqlite"

    def __init__(self, path: str | Path, *, busy_timeout: float = 10.0) -> None:
        self.path = str(path)
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Pragmas and schema of a new connection (runs on the worker thread)."""

    def _validate(self) -> None:
        """Raise StoreError for bad options, before anything is opened."""

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None or self._executor is None:
            raise StoreError(f"{self.what} is not open")
        conn = self._conn

        def run() -> T:
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    try:
                        conn.rollback()
                    except sqlite3.Error:
                        pass
                raise StoreError(f"sqlite {self.what} {self.path}: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    async def open(self) -> None:
        if self._conn is not None:
            return
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create directory for {self.path}: {exc}") from exc
        self._validate()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.thread_name)

        def connect() -> sqlite3.Connection:
            try:
                conn = sqlite3.connect(self.path, timeout=self.busy_timeout,
                                       check_same_thread=False, isolation_level=None)
                self._prepare(conn)
                return conn
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open sqlite {self.what} {self.path}: {exc}") from exc

        try:
            self._conn = await asyncio.get_running_loop().run_in_executor(self._executor,
                                                                          connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        conn, executor = self._conn, self._executor
        self._conn, self._executor = None, None
        if conn is not None and executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        if executor is not None:
            executor.shutdown(wait=True)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self._call(lambda conn: conn.execute(sql, tuple(params)).fetchall())
