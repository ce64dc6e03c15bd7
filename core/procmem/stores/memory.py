"""A non-persistent store for tests, notebooks and short-lived agents."""

from __future__ import annotations

from procmem.stores.sqlite import SQLiteStore

__all__ = ["InMemoryStore"]


class InMemoryStore(SQLiteStore):
    """The SQLite store on a private in-memory database: same behaviour, nothing on disk.

    It shares all code with :class:`SQLiteStore` (FTS5 BM25, versions, transactions), so a
    program moved from one to the other behaves the same; its content is lost when it is closed.

    Args:
        max_versions: Versions kept per procedure (None keeps all).
    """

    def __init__(self, *, max_versions: int | None = None, embedding_model: str | None = None) -> None:
        super().__init__(":memory:", max_versions=max_versions, embedding_model=embedding_model)
