"""A non-persistent store for tests, notebooks and short-lived agents."""

from __future__ import annotations

from procmem.stores._lexical import LEXICAL_MIN_ROWS
from procmem.stores._vectors import ANN_MIN_ROWS
from procmem.stores.sqlite import SQLiteStore

__all__ = ["InMemoryStore"]


class InMemoryStore(SQLiteStore):
    """The SQLite store on a private in-memory database: same behaviour, nothing on disk.

    It shares all code with :class:`SQLiteStore` (FTS5 BM25, versions, transactions), so a
    program moved from one to the other behaves the same; its content is lost when it is closed.

    Args:
        max_versions: Versions kept per procedure (None keeps all).
        embedding_model: Name of the model whose vectors this store holds (see
            :class:`SQLiteStore`).
        ann_min_rows: Vectors from which vector search goes through an HNSW graph (see
            :class:`SQLiteStore`); None always scans exactly.
        lexical_min_rows: Procedures from which lexical search goes through a tantivy index
            (see :class:`SQLiteStore`); None always uses FTS5.

    Raises:
        ConfigurationError: ``max_versions``, ``ann_min_rows`` or ``lexical_min_rows`` is not
            None or an int >= 1.
    """

    def __init__(
        self,
        *,
        max_versions: int | None = None,
        embedding_model: str | None = None,
        ann_min_rows: int | None = ANN_MIN_ROWS,
        lexical_min_rows: int | None = LEXICAL_MIN_ROWS,
    ) -> None:
        super().__init__(":memory:", max_versions=max_versions, embedding_model=embedding_model,
                         ann_min_rows=ann_min_rows, lexical_min_rows=lexical_min_rows)
