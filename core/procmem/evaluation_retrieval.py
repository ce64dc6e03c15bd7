"""Evaluate tool retrieval: load tools, learn past usages, answer queries, report top-k metrics.

The data format is the one in ``shared/data/README.md`` (MetaTool / ToolE, Huang et al., ICLR
2024):

* tools: ``{"name": str, "description": str}`` per line;
* usages (optional): ``{"query": str, "tool": str, "success": bool (default true)}`` per line;
* queries: ``{"query": str, "tools": [gold names]}`` per line (``"tool": str`` is accepted too).

Metrics: hit@1 (the first result is a gold tool), recall@5 and recall@10 (share of the gold
tools in the top 5 / top 10), MRR@10 (mean reciprocal rank of the first gold tool within the top
10, 0 when absent), and per-query search latency percentiles in milliseconds (embedding the
query included).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from procmem.errors import ImportFormatError, ValidationError
from procmem.retrieval import HybridRetriever, RetrievalConfig
from procmem.types import Procedure, ProcedureKind

__all__ = [
    "RetrievalReport",
    "evaluate_retrieval",
    "read_queries_jsonl",
    "read_tools_jsonl",
    "read_usages_jsonl",
]


class RetrievalReport(BaseModel):
    """What :func:`evaluate_retrieval` measured.

    Attributes:
        queries: Number of queries answered.
        tools: Number of tools loaded.
        usages: Number of past usages learned.
        k: Length of each ranking.
        hit_at_1: Share of queries whose first result is a gold tool, in [0, 1].
        recall_at_5: Mean share of gold tools found in the top 5, in [0, 1].
        recall_at_10: Mean share of gold tools found in the top 10, in [0, 1].
        mrr_at_10: Mean reciprocal rank of the first gold tool within the top 10, in [0, 1].
        latency_p50_ms: Median search latency, milliseconds.
        latency_p95_ms: 95th percentile search latency, milliseconds.
        latency_p99_ms: 99th percentile search latency, milliseconds.
        learn_seconds: Wall time of loading tools and learning usages, seconds.
        unknown_gold: Gold names that are not among the tools (such queries can still hit on
            their other gold tools).
    """

    model_config = ConfigDict(extra="forbid")

    queries: int
    tools: int
    usages: int
    k: int
    hit_at_1: float
    recall_at_5: float
    recall_at_10: float
    mrr_at_10: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    learn_seconds: float
    unknown_gold: int = 0


# ---------------------------------------------------------------------- loaders
def _read_jsonl(path: str | Path) -> Iterable[tuple[int, dict[str, Any]]]:
    p = Path(path)
    try:
        fh = p.open(encoding="utf-8")
    except OSError as exc:
        raise ImportFormatError(f"cannot read {str(p)!r}: {exc}", field="path", value=str(p)) from exc
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ImportFormatError(f"{p}:{lineno}: not valid JSON ({exc.msg})", field="line",
                                        value=line[:200]) from exc
            if not isinstance(obj, dict):
                raise ImportFormatError(f"{p}:{lineno}: expected a JSON object, got {type(obj).__name__}",
                                        field="line", value=obj)
            yield lineno, obj


def _text(p: Path | str, lineno: int, obj: Mapping[str, Any], key: str, *, allow_empty: bool = False) -> str:
    v = obj.get(key)
    if not isinstance(v, str) or (not allow_empty and not v.strip()):
        raise ImportFormatError(f"{p}:{lineno}: {key!r} must be a non-empty string, got {v!r}", field=key, value=v)
    return v


def read_tools_jsonl(path: str | Path) -> list[dict[str, str]]:
    """Read tools, one ``{"name", "description"}`` object per line.

    Args:
        path: The JSONL file.

    Returns:
        ``[{"name": str, "description": str}, ...]`` in file order.

    Raises:
        ImportFormatError: Unreadable file, bad JSON, a missing field, a duplicate name or no
            tool at all (the message names the file and line).
    """
    out: list[dict[str, str]] = []
    seen: dict[str, int] = {}
    for lineno, obj in _read_jsonl(path):
        name = _text(path, lineno, obj, "name")
        desc = obj.get("description", "")
        if not isinstance(desc, str):
            raise ImportFormatError(f"{path}:{lineno}: 'description' must be a string, got {desc!r}",
                                    field="description", value=desc)
        if name in seen:
            raise ImportFormatError(f"{path}:{lineno}: duplicate tool name {name!r} (first on line {seen[name]})",
                                    field="name", value=name)
        seen[name] = lineno
        out.append({"name": name, "description": desc})
    if not out:
        raise ImportFormatError(f"{path}: no tools found", field="path", value=str(path))
    return out


def read_usages_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read past usages, one ``{"query", "tool", "success"}`` object per line.

    Args:
        path: The JSONL file; ``success`` is optional (default true).

    Returns:
        ``[{"query": str, "tool": str, "success": bool}, ...]`` in file order.

    Raises:
        ImportFormatError: Unreadable file, bad JSON or a missing / mistyped field (names the
            file and line).
    """
    out: list[dict[str, Any]] = []
    for lineno, obj in _read_jsonl(path):
        query = _text(path, lineno, obj, "query")
        tool = _text(path, lineno, obj, "tool")
        success = obj.get("success", True)
        if not isinstance(success, bool):
            raise ImportFormatError(f"{path}:{lineno}: 'success' must be true or false, got {success!r}",
                                    field="success", value=success)
        out.append({"query": query, "tool": tool, "success": success})
    return out


def read_queries_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read evaluation queries, one ``{"query", "tools": [gold names]}`` object per line.

    A single gold tool may be given as ``"tool": name`` instead (so a usages file can serve).

    Args:
        path: The JSONL file.

    Returns:
        ``[{"query": str, "tools": [str, ...]}, ...]`` in file order.

    Raises:
        ImportFormatError: Unreadable file, bad JSON, a missing query or gold list, or no query
            at all (names the file and line).
    """
    out: list[dict[str, Any]] = []
    for lineno, obj in _read_jsonl(path):
        query = _text(path, lineno, obj, "query")
        if "tools" in obj:
            gold = obj["tools"]
            if not isinstance(gold, list) or not gold or not all(isinstance(g, str) and g for g in gold):
                raise ImportFormatError(f"{path}:{lineno}: 'tools' must be a non-empty list of names, got {gold!r}",
                                        field="tools", value=gold)
        elif "tool" in obj:
            gold = [_text(path, lineno, obj, "tool")]
        else:
            raise ImportFormatError(f"{path}:{lineno}: missing 'tools' (the gold tool names)", field="tools",
                                    value=None)
        out.append({"query": query, "tools": list(gold)})
    if not out:
        raise ImportFormatError(f"{path}: no queries found", field="path", value=str(path))
    return out


# ---------------------------------------------------------------------- evaluation
def _as_tool(i: int, t: Any) -> tuple[str, str]:
    if isinstance(t, Procedure):
        return t.name, t.description
    if isinstance(t, Mapping) and isinstance(t.get("name"), str) and t["name"].strip():
        desc = t.get("description", "")
        if not isinstance(desc, str):
            raise ValidationError(f"tools[{i}].description must be a str, got {desc!r}", field="description",
                                  value=desc)
        return t["name"], desc
    raise ValidationError(f"tools[{i}] must be a Procedure or a mapping with a 'name', got {t!r}", field="tools",
                          value=t)


def _percentile(xs: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q)) if xs else 0.0


def evaluate_retrieval(
    tools: Sequence[Mapping[str, Any] | Procedure],
    queries: Sequence[Mapping[str, Any]],
    *,
    usages: Iterable[Mapping[str, Any]] = (),
    retriever: Any = None,
    embedder: Any = None,
    config: RetrievalConfig | None = None,
    namespace: str = "default",
    output: str | Path | None = None,
    k: int = 10,
    progress: Callable[[int, int], None] | None = None,
) -> RetrievalReport:
    """Load tools, learn past usages, answer every query and report top-k metrics.

    Tools become ``Procedure(kind="tool", name, description)`` embedded with
    :func:`procmem.retrieval.embed_procedures`; usages are learned with ``record_usages`` (tool
    name mapped to the new id); each query is answered with ``search(k=k, touch=False)`` so the
    evaluation does not change access counts.

    Args:
        tools: ``{"name", "description"}`` mappings (or procedures); names must be unique.
        queries: ``{"query", "tools": [gold names]}`` mappings.
        usages: ``{"query", "tool", "success"}`` mappings to learn before answering.
        retriever: A :class:`HybridRetriever`, or an object with a ``retriever`` attribute (a
            ``ProceduralMemory``), whose store receives the tools. Default: a new retriever on a
            private :class:`~procmem.stores.InMemoryStore`.
        embedder: Embedder of the default retriever (default all-MiniLM-L6-v2); ignored when
            ``retriever`` is given.
        config: Retrieval options of the default retriever; ignored when ``retriever`` is given.
        namespace: Namespace the tools and usages are written to and searched in.
        output: When given, a JSONL file written with one line per query,
            ``{"query_index": i, "tools": [top-k names]}``.
        k: Length of each ranking; at least 10 so recall@10 and MRR@10 are defined.
        progress: Called as ``progress(queries_done, queries_total)`` after each query.

    Returns:
        The :class:`RetrievalReport`.

    Raises:
        ValidationError: A malformed tool, query or usage, a duplicate tool name, a usage naming
            an unknown tool, or ``k < 10`` (the message names the field and value).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 10:
        raise ValidationError(f"k must be an int >= 10 (recall@10 needs 10 results), got {k!r}", field="k", value=k)
    if not tools:
        raise ValidationError("tools must not be empty", field="tools", value=tools)
    if retriever is None:
        from procmem.stores.memory import InMemoryStore

        if embedder is None:
            from procmem.embeddings.sentence_transformers import SentenceTransformerEmbedder

            embedder = SentenceTransformerEmbedder()
        retriever = HybridRetriever(InMemoryStore(), embedder, config=config)
    elif not isinstance(retriever, HybridRetriever):
        inner = getattr(retriever, "retriever", None)
        if not isinstance(inner, HybridRetriever):
            raise ValidationError(
                f"retriever must be a HybridRetriever or have a .retriever attribute, got {type(retriever).__name__}",
                field="retriever", value=retriever,
            )
        retriever = inner

    t0 = time.perf_counter()
    procs: list[Procedure] = []
    name_to_id: dict[str, str] = {}
    for i, t in enumerate(tools):
        name, desc = _as_tool(i, t)
        if name in name_to_id:
            raise ValidationError(f"tools[{i}]: duplicate tool name {name!r}", field="name", value=name)
        p = Procedure(kind=ProcedureKind.TOOL, name=name, description=desc, namespace=namespace)
        name_to_id[name] = p.id
        procs.append(p)
    retriever.add_procedures(procs, note="evaluation")
    id_to_name = {v: k_ for k_, v in name_to_id.items()}

    items = []
    for i, u in enumerate(usages):
        if not isinstance(u, Mapping):
            raise ValidationError(f"usages[{i}] must be a mapping, got {u!r}", field="usages", value=u)
        tool = u.get("tool")
        if tool not in name_to_id:
            raise ValidationError(f"usages[{i}]: unknown tool {tool!r}", field="tool", value=tool)
        items.append((u.get("query"), name_to_id[tool], u.get("success", True), namespace))
    n_usages = retriever.record_usages(items)
    learn_seconds = time.perf_counter() - t0

    hits1: list[float] = []
    rec5: list[float] = []
    rec10: list[float] = []
    rr: list[float] = []
    lat: list[float] = []
    unknown = 0
    lines: list[str] = []
    for i, q in enumerate(queries):
        if not isinstance(q, Mapping) or not isinstance(q.get("query"), str):
            raise ValidationError(f"queries[{i}] must be a mapping with a 'query' string, got {q!r}",
                                  field="query", value=q)
        gold = q.get("tools")
        if gold is None and isinstance(q.get("tool"), str):
            gold = [q["tool"]]
        if not isinstance(gold, (list, tuple)) or not gold:
            raise ValidationError(f"queries[{i}].tools must be a non-empty list of names, got {gold!r}",
                                  field="tools", value=gold)
        gold_set = set(gold)
        unknown += len(gold_set - name_to_id.keys())
        start = time.perf_counter()
        results = retriever.search(q["query"], k=k, namespace=namespace, touch=False)
        lat.append((time.perf_counter() - start) * 1000.0)
        names = [id_to_name.get(r.procedure.id, r.procedure.name) for r in results]
        hits1.append(1.0 if names[:1] and names[0] in gold_set else 0.0)
        rec5.append(len(gold_set & set(names[:5])) / len(gold_set))
        rec10.append(len(gold_set & set(names[:10])) / len(gold_set))
        first = next((j for j, n in enumerate(names[:10]) if n in gold_set), None)
        rr.append(0.0 if first is None else 1.0 / (first + 1))
        if output is not None:
            lines.append(json.dumps({"query_index": i, "tools": names}, ensure_ascii=False))
        if progress is not None:
            progress(i + 1, len(queries))
    if output is not None:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")

    def mean(xs: list[float]) -> float:
        return float(sum(xs) / len(xs)) if xs else math.nan

    return RetrievalReport(
        queries=len(hits1), tools=len(procs), usages=n_usages, k=k,
        hit_at_1=mean(hits1), recall_at_5=mean(rec5), recall_at_10=mean(rec10), mrr_at_10=mean(rr),
        latency_p50_ms=_percentile(lat, 50), latency_p95_ms=_percentile(lat, 95), latency_p99_ms=_percentile(lat, 99),
        learn_seconds=learn_seconds, unknown_gold=unknown,
    )
