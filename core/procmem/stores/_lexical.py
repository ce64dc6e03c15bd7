"""The embedded store's in-memory BM25 index for large stores (tantivy, the ``lexical`` extra).

SQLite's FTS5 ranks by scoring every row that holds any query word. A request in natural
language shares a word with most procedures of a large store, so at 100,000 procedures an FTS5
BM25 ranking costs tens of milliseconds (``benchmarks/scale.py``). From ``lexical_min_rows``
procedures, and when the optional ``tantivy`` package (the Python bindings of the Tantivy search
engine) is installed (``pip install procmem[lexical]``), the store keeps a second, derived index
of the same texts in memory. Its top-k search skips documents that cannot enter the top k
(block-max WAND: Ding & Suel, "Faster top-k document retrieval using block-max indexes",
SIGIR 2011), so the cost follows the answer, not the number of matching rows.

Scoring is BM25 (Robertson & Zaragoza 2009, ``k1`` 1.2, ``b`` 0.75) over one field in which the
name is written 4 times and the triggers and tags twice. This gives the same weighted term
frequencies as the FTS5 ranking ``bm25(procedures_fts, 4, 1, 2, 1, 2)``. It differs from FTS5 in
three ways: idf is Lucene's ``ln(1 + (N - n + 0.5) / (n + 0.5))``, always positive; a
document's length counts the repeated words; and words are stemmed by Snowball's English stemmer,
not Porter's. Both engines leave out query words found in at least half the procedures (see
:meth:`procmem.stores.SQLiteStore.lexical_search`). ``benchmarks/scale.py`` reports how much the
fused results differ from those of FTS5 and an exact vector scan.

The index is derived data, never stored, and SQLite stays the source of truth: the store builds
it on a background thread, FTS5 answers until it is ready, writes made meanwhile are replayed
into it when the build ends, and after that each write updates it too (applied at the next
search, one tantivy commit per burst of writes).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Any

_log = logging.getLogger("procmem")

#: Default number of procedures from which the store searches words through tantivy.
LEXICAL_MIN_ROWS = 10_000
#: How often the name, description, triggers, steps and tags are written into the one indexed
#: field: the column weights of the FTS5 ranking.
FIELD_REPEATS = (4, 1, 2, 1, 2)
_WRITER_HEAP = 32_000_000  # bytes of the tantivy writer's buffer (one thread)
_MAX_TOKEN = 40  # longer tokens are dropped (tantivy's default limit)
_missing_logged = False


def tantivy_available() -> bool:
    """Whether the optional ``tantivy`` package can be imported (logs once when it cannot)."""
    global _missing_logged
    try:
        import tantivy  # noqa: F401
    except ImportError:
        if not _missing_logged:
            _missing_logged = True
            _log.info("lexical search ranks with SQLite FTS5 at every size; "
                      "pip install 'procmem[lexical]' for a faster index of large stores")
        return False
    return True


#: One procedure's row for the index: (rowid, namespace, kind, tags, the five weighted texts).
LexicalRow = tuple[int, str, str, Sequence[str], Sequence[str]]


class LexicalIndex:
    """Procedures' words in an in-memory tantivy index, keyed by the store's rowid.

    Writes and commits are serialised by the index's own lock (the store also calls them under
    its write lock); searches may run from any thread.
    """

    def __init__(self) -> None:
        import tantivy

        self._tantivy = tantivy
        builder = tantivy.SchemaBuilder()
        builder.add_text_field("text", tokenizer_name="procmem", index_option="freq")
        # i64, not u64: the bindings turn a Python int into an i64 term, which never matches a u64 field.
        builder.add_integer_field("rowid", indexed=True, fast=True)
        for name in ("namespace", "kind", "tag"):
            builder.add_text_field(name, tokenizer_name="raw", index_option="basic")
        self._schema = builder.build()
        self._index = tantivy.Index(self._schema)
        self._analyzer = (
            tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
            .filter(tantivy.Filter.remove_long(_MAX_TOKEN))
            .filter(tantivy.Filter.lowercase())
            .filter(tantivy.Filter.stemmer("english"))
            .build()
        )
        self._index.register_tokenizer("procmem", self._analyzer)
        self._writer = self._index.writer(heap_size=_WRITER_HEAP, num_threads=1)
        self._dirty = False
        self._lock = threading.Lock()  # one commit at a time; searches read the reloaded searcher
        self._searcher: Any = None
        self._whole: tuple[Any, dict[str, bool]] = (None, {})  # see _holds_every_doc

    def upsert(self, rows: Iterable[LexicalRow], *, new: bool = False) -> None:
        """Add or replace procedures' rows (visible to searches after the next :meth:`commit`).

        Args:
            rows: The rows.
            new: The rowids are not in the index yet (a build): skip deleting older rows.
        """
        tantivy = self._tantivy
        with self._lock:
            for rowid, namespace, kind, tags, texts in rows:
                if not new:
                    self._writer.delete_documents_by_term("rowid", rowid)
                doc = tantivy.Document()
                doc.add_integer("rowid", rowid)
                doc.add_text("namespace", namespace)
                doc.add_text("kind", kind)
                for tag in tags:
                    doc.add_text("tag", tag)
                doc.add_text("text", " \n ".join(
                    text for text, times in zip(texts, FIELD_REPEATS, strict=True) for _ in range(times) if text
                ))
                self._writer.add_document(doc)
            self._dirty = True

    def remove(self, rowids: Iterable[int]) -> None:
        """Remove procedures by rowid (visible after the next :meth:`commit`)."""
        with self._lock:
            for rowid in rowids:
                self._writer.delete_documents_by_term("rowid", rowid)
            self._dirty = True

    def commit(self) -> None:
        """Make every write so far visible to searches (cheap when there was none)."""
        with self._lock:
            if self._dirty or self._searcher is None:
                self._writer.commit()
                self._index.reload()
                self._searcher = self._index.searcher()
                self._dirty = False

    def terms(self, text: str) -> list[str]:
        """The distinct index terms (lower-cased English stems) of ``text``, in order."""
        return list(dict.fromkeys(self._analyzer.analyze(text)))

    def doc_freq(self, term: str) -> int:
        """How many procedures hold ``term`` (a term from :meth:`terms`)."""
        return int(self._searcher_now().doc_freq("text", term))

    def __len__(self) -> int:
        return int(self._searcher_now().num_docs)

    def _searcher_now(self) -> Any:
        if self._dirty or self._searcher is None:
            self.commit()
        return self._searcher

    def _holds_every_doc(self, searcher: Any, namespace: str) -> bool:
        """Whether every live document of ``searcher`` is in ``namespace`` (kept per searcher).

        ``doc_freq`` also counts replaced and removed documents until a merge purges them, so it
        only rules the namespace out; the live documents are counted when it does not (0.8 ms at
        100,000 procedures, once per commit).
        """
        whole = self._whole
        if whole[0] is not searcher:
            whole = self._whole = (searcher, {})
        held = whole[1].get(namespace)
        if held is None:
            held = searcher.doc_freq("namespace", namespace) >= searcher.num_docs and searcher.search(
                self._tantivy.Query.term_query(self._schema, "namespace", namespace, index_option="basic"),
                limit=1, count=True,
            ).count == searcher.num_docs
            whole[1][namespace] = held
        return held

    def search(
        self,
        terms: Sequence[str],
        k: int,
        *,
        namespace: str | None = None,
        kinds: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
    ) -> list[tuple[int, float]]:
        """The ``k`` best procedures by BM25 for any of ``terms``, with the filters applied.

        Args:
            terms: Index terms (from :meth:`terms`).
            k: How many results at most.
            namespace: Only this namespace.
            kinds: Only these kinds (values of :class:`procmem.types.ProcedureKind`).
            tags: Only procedures with every one of these tags.

        Returns:
            ``(rowid, score)`` pairs, best first; a score is a BM25 sum (> 0).
        """
        if not terms or k < 1:
            return []
        tantivy = self._tantivy
        query_of = tantivy.Query
        schema = self._schema
        words = query_of.boolean_query(
            [(tantivy.Occur.Should, query_of.term_query(schema, "text", t, index_option="freq")) for t in terms]
        )
        searcher = self._searcher_now()
        filters = [query_of.term_query(schema, "tag", tag, index_option="basic") for tag in tags or ()]
        # A namespace that holds every procedure (a store with one namespace, the usual case)
        # filters nothing; the intersection would cost more than the search itself.
        if namespace is not None and not self._holds_every_doc(searcher, namespace):
            filters.append(query_of.term_query(schema, "namespace", namespace, index_option="basic"))
        if kinds:
            filters.append(query_of.term_set_query(schema, "kind", list(kinds)))
        query = words if not filters else query_of.boolean_query(
            [(tantivy.Occur.Must, words)] + [(tantivy.Occur.Must, query_of.const_score_query(f, 0.0)) for f in filters]
        )
        hits = searcher.search(query, limit=int(k), count=False).hits
        if not hits:
            return []
        rowids = searcher.fast_field_values("rowid", [address for _, address in hits])
        return [(int(r), float(score)) for (score, _), r in zip(hits, rowids, strict=True)]
