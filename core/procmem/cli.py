"""The ``procmem`` command line: learn from shell histories and agent logs, predict, inspect.

Built on Typer and Rich. Every command takes ``--db`` (the SQLite file; default under the
platform data dir) and ``--namespace``.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

try:
    import typer
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("the procmem CLI needs Typer and Rich: pip install 'procmem[cli]'") from exc

from procmem.errors import ProcMemError

__all__ = ["app", "main"]

app = typer.Typer(
    name="procmem",
    help="Procedural memory for agents and shells: learn workflows, predict next actions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
eval_app = typer.Typer(help="Evaluate next-action prediction or retrieval on a dataset.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")

console = Console()
err_console = Console(stderr=True)

DbOption = typer.Option(None, "--db", help="SQLite file (default: procmem.sqlite3 in the platform data dir).",
                        envvar="PROCMEM_DB")
NsOption = typer.Option("default", "--namespace", "-n", help="Whose memory (an agent or user id).")
EmbedderOption = typer.Option("minilm", "--embedder", help="minilm (all-MiniLM-L6-v2, default) or hashing.",
                              envvar="PROCMEM_EMBEDDER")


def _embedder(name: str, *, allow_none: bool = False) -> Any:
    """The embedder named on the command line; None for ``none`` where ``allow_none``."""
    if allow_none and name == "none":
        return None
    if name == "hashing":
        from procmem.embeddings import HashingEmbedder

        return HashingEmbedder()
    if name in ("minilm", "default", "sentence-transformers"):
        from procmem.memory import _default_embedder

        return _default_embedder()
    choices = "minilm, hashing or none" if allow_none else "minilm or hashing"
    raise typer.BadParameter(f"unknown embedder {name!r}; use {choices}", param_hint="--embedder")


def _memory(db: Path | None, namespace: str, embedder: str, *, read_only: bool = False) -> Any:
    """Open the memory; a command that only reads refuses a ``--db`` file that does not exist.

    (A mistyped path would otherwise become a new, empty store that answers with nothing.)
    """
    from procmem.memory import ProceduralMemory

    if read_only and db is not None and not db.exists():
        _fail(f"no procmem store at {db}: `procmem learn --db {db}` creates one")
    return ProceduralMemory(path=db, embedder=_embedder(embedder), namespace=namespace)


def _fail(message: str, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


@app.command()
def learn(
    paths: list[Path] = typer.Argument(None, help="History or sessions JSONL files; default: your shell history."),
    fmt: str = typer.Option(None, "--format", help="bash, zsh, fish or jsonl (default: detected)."),
    gap: float = typer.Option(1800.0, help="Pause in seconds that starts a new session (shell histories)."),
    db: Path = DbOption,
    namespace: str = NsOption,
    embedder: str = EmbedderOption,
) -> None:
    """Learn sessions from shell histories (bash, zsh, fish) or sessions JSONL files."""
    from procmem.io import default_history_paths, load_history

    if not paths:
        paths = default_history_paths()
        if not paths:
            _fail("no shell history found ($HISTFILE, ~/.bash_history, ~/.zsh_history, fish_history); "
                  "pass a file: procmem learn PATH")
        console.print("Learning from your shell history: " + escape(", ".join(str(p) for p in paths)))
    memory = _memory(db, namespace, embedder)
    total_new = 0
    for path in paths:
        try:
            result = load_history(path, format=fmt, gap=gap)
        except (ProcMemError, OSError) as exc:
            _fail(str(exc) if str(path) in str(exc) else f"{path}: {exc}")  # named once
        sessions = [s.model_copy(update={"namespace": namespace}) for s in result.sessions]
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=True,
                      disable=len(sessions) < 200) as progress:
            task = progress.add_task(f"learning {path.name}", total=len(sessions))
            new = memory.learn_sessions(sessions, progress=lambda n, t=task: progress.update(t, completed=n))
        total_new += new
        console.print(f"{escape(str(path))}: {result.format}, {result.entries} actions, {len(sessions)} sessions "
                      f"({new} new), {result.skipped_lines} lines skipped")
        if not result.entries:
            err_console.print(f"[yellow]warning:[/] {escape(str(path))} has no actions: nothing learned from it")
        for w in result.warnings[:5]:
            err_console.print(f"[yellow]warning:[/] {escape(w)}")
    stats = memory.stats()
    console.print(f"[green]Learned {total_new} new sessions.[/] Memory holds {stats['sessions']} sessions and "
                  f"{stats['learned_workflows']} learned workflows in {escape(str(stats['path']))}")


def _latest_context(n: int = 5) -> list[str]:
    from procmem.io import default_history_paths, load_history

    for path in default_history_paths():
        try:
            sessions = load_history(path).sessions
        except (ProcMemError, OSError):
            continue
        if sessions:
            return sessions[-1].actions[-n:]
    return []


def _print_predictions(preds: list[Any], context: list[str]) -> None:
    table = Table(title="after: " + escape(" ⟶ ".join(context[-3:])) if context else "next action")
    table.add_column("#", justify="right")
    table.add_column("next action", style="bold")
    table.add_column("confidence", justify="right")
    table.add_column("reason")
    table.add_column("then")
    for i, p in enumerate(preds, 1):
        table.add_row(str(i), escape(p.action), f"{p.confidence:.1%}", escape(p.reason),
                      escape(", ".join(p.suggestions[:2])))
    console.print(table)


@app.command()
def predict(
    actions: list[str] = typer.Argument(None, help="The latest actions, oldest first; default: your latest commands."),
    task: str = typer.Option(None, help="What you are trying to do (helps for unseen contexts)."),
    top_k: int = typer.Option(3, "--top-k", "-k", min=1, max=50, help="How many predictions."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    db: Path = DbOption,
    namespace: str = NsOption,
    embedder: str = EmbedderOption,
) -> None:
    """Predict the next actions, with confidence and reason."""
    from procmem.io import default_history_paths

    context = list(actions or []) or _latest_context()
    if not context and not task:
        how = "pass the latest actions (procmem predict 'git pull' 'make build') or --task"
        if not default_history_paths():
            _fail("no shell history found ($HISTFILE, ~/.bash_history, ~/.zsh_history, fish_history) to take "
                  f"your latest commands from: {how}, or set HISTFILE to a history file")
        _fail(f"no context: your shell history has no commands; {how}")
    memory = _memory(db, namespace, embedder, read_only=True)
    if memory.stats()["sessions"] == 0:
        _fail("nothing learned yet: run `procmem learn` first")
    preds = memory.predict_next_action(context, task=task, top_k=top_k)
    if as_json:
        console.print_json(json.dumps([p.model_dump() for p in preds]))
    elif not preds:
        console.print("No prediction: this context was never seen.")
    else:
        _print_predictions(preds, context)


@app.command()
def patterns(
    min_count: int = typer.Option(2, min=1, help="Only patterns seen at least this often."),
    limit: int = typer.Option(20, min=1, help="How many to show."),
    db: Path = DbOption,
    namespace: str = NsOption,
    embedder: str = EmbedderOption,
) -> None:
    """Show the learned action patterns with counts and success rates."""
    memory = _memory(db, namespace, embedder, read_only=True)
    rows = memory.patterns(min_count=min_count, limit=limit)
    table = Table(title=f"learned patterns (seen >= {min_count} times)")
    for col in ("pattern", "count", "success rate"):
        table.add_column(col)
    for r in rows:
        text = " ⟶ ".join(r["steps"])
        # The observed rate of the sessions whose outcome is known (shell histories record none).
        known = r["successes"] + r["failures"]
        rate = f"{r['successes'] / known:.0%} of {known}" if known else "unknown"
        table.add_row(escape(text), str(r["count"]), rate)
    console.print(table)


@app.command()
def workflows(
    db: Path = DbOption,
    namespace: str = NsOption,
    embedder: str = EmbedderOption,
    show_all: bool = typer.Option(False, "--all", help="Include demoted workflows."),
) -> None:
    """Show the workflows mined from your sessions (recurring, successful sequences)."""
    from procmem.learning import outcome_summary

    memory = _memory(db, namespace, embedder, read_only=True)
    learned = memory.list(kind="workflow", tags=["learned"])
    shown = [w for w in learned if show_all or w.metadata.get("status") == "promoted"]
    if not shown:
        console.print("No learned workflow yet: a sequence must recur in several successful sessions.")
        return
    shown.sort(key=lambda w: (-w.metadata.get("support", 0), -len(w.steps)))
    for w in shown:
        meta = w.metadata
        outcome = outcome_summary(meta.get("successes", 0), meta.get("failures", 0), meta.get("unknown", 0))
        console.print(f"[bold]{escape(w.id)}[/] v{w.version} \\[{meta.get('status')}] seen in {meta.get('support')} "
                      f"sessions, {outcome}")
        for i, s in enumerate(w.steps, 1):
            console.print(f"   {i}. {escape(s.action)}")


@app.command()
def stats(db: Path = DbOption, namespace: str = NsOption, embedder: str = EmbedderOption) -> None:
    """Show what the memory holds."""
    memory = _memory(db, namespace, embedder, read_only=True)
    console.print_json(json.dumps(memory.stats(), default=str))


@app.command()
def search(
    query: str = typer.Argument(..., help="What you need a procedure for."),
    k: int = typer.Option(5, "-k", min=1, max=100),
    kind: str = typer.Option(None, help="skill, workflow, tool or persona."),
    db: Path = DbOption,
    namespace: str = NsOption,
    embedder: str = EmbedderOption,
) -> None:
    """Search stored procedures (dense + BM25 + past experience)."""
    memory = _memory(db, namespace, embedder, read_only=True)
    table = Table(title=f"procedures for: {escape(query)}")
    for col in ("score", "kind", "name", "why"):
        table.add_column(col)
    for r in memory.search(query, k=k, kinds=[kind] if kind else None):
        table.add_row(f"{r.score:.3f}", r.procedure.kind.value, escape(r.procedure.name), escape(r.reason))
    console.print(table)


@app.command()
def graph(
    output: Path = typer.Option(..., "--output", "-o", help="File to write: .png, .svg, .dot or .mmd/.mermaid."),
    max_nodes: int = typer.Option(30, help="Keep the most frequent actions only."),
    db: Path = DbOption,
    namespace: str = NsOption,
    embedder: str = EmbedderOption,
) -> None:
    """Draw the learned workflow graph (PNG or SVG picture; DOT or Mermaid text)."""
    from procmem.graphs import write_graph

    memory = _memory(db, namespace, embedder, read_only=True)
    g = memory.workflow_graph()
    if g.number_of_nodes() == 0:
        _fail("the graph is empty: run `procmem learn` first")
    try:
        n = write_graph(g, output, max_nodes=max_nodes)
    except ProcMemError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror or exc}")
    console.print(f"Wrote {escape(str(output))} ({n} actions).")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind; anything but loopback needs --api-key."),
    port: int = typer.Option(8002, min=1, max=65535),
    api_key: str = typer.Option(None, envvar="PROCMEM_API_KEY", help="Required X-API-Key header value."),
    workers: int = typer.Option(1, min=1, help="Worker processes sharing the store."),
    data_dir: Path = typer.Option(None, help="Directory for /save and /load files."),
    db: Path = DbOption,
    namespace: str = NsOption,
    embedder: str = EmbedderOption,
) -> None:
    """Run the HTTP service (FastAPI on uvicorn)."""
    try:
        from procmem.server import serve as run_server
    except ImportError as exc:
        _fail(f"{exc}. Install the server extra: pip install 'procmem[server]'")
    try:
        run_server(host=host, port=port, api_key=api_key, workers=workers, data_dir=data_dir, db=db,
                   embedder=embedder, namespace=namespace)
    except ProcMemError as exc:
        _fail(str(exc))


@eval_app.command("next-action")
def eval_next_action(
    data: Path = typer.Argument(..., exists=True, dir_okay=False, help="Sessions JSONL file."),
    scope: str = typer.Option("user", help="One model per session, user, group, or global."),
    output: Path = typer.Option(None, help="Write one JSON line of top-10 predictions per target."),
    peers: str = typer.Option("", help="Comma-separated peers run in the same run: markov1,ipam,ppm5."),
    embedder: str = typer.Option("minilm", "--embedder", help="For task text: minilm, hashing or none."),
) -> None:
    """Prequential next-action evaluation (protocol of the sessions data README)."""
    from procmem.evaluation import evaluate_next_action
    from procmem.prediction import NextActionPredictor

    emb = _embedder(embedder, allow_none=True)
    peer_names = [p.strip() for p in peers.split(",") if p.strip()]
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task("sessions", total=None)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                report = evaluate_next_action(
                    data, scope=scope, peers=peer_names, output=output,
                    model_factory=lambda: NextActionPredictor(embedder=emb),
                    progress=lambda done, total: progress.update(task, completed=done, total=total),
                )
        except (ProcMemError, OSError) as exc:
            _fail(str(exc))
    for w in (w for w in caught if issubclass(w.category, UserWarning)):
        err_console.print(f"[yellow]warning:[/] {escape(str(w.message))}")
    table = Table(title=f"{escape(data.name)}: {report.sessions} sessions, {report.targets} targets, scope {scope}")
    table.add_column("model", no_wrap=True, min_width=9)
    for col in ("top-1", "top-3", "MRR@10", "prog. top-1", "prog. top-3", "ECE", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    for m in report.models:
        table.add_row(m.name, f"{m.top1:.3f}", f"{m.top3:.3f}", f"{m.mrr10:.3f}", f"{m.program_top1:.3f}",
                      f"{m.program_top3:.3f}", "" if m.ece is None else f"{m.ece:.3f}",
                      f"{m.latency_p50_ms:.2f}", f"{m.latency_p99_ms:.2f}")
    console.print(table)


@eval_app.command("retrieval")
def eval_retrieval(
    tools: Path = typer.Option(..., exists=True, dir_okay=False, help="tools.jsonl: {name, description}."),
    queries: Path = typer.Option(..., exists=True, dir_okay=False, help="queries.jsonl: {query, tools}."),
    usages: Path = typer.Option(None, exists=True, dir_okay=False, help="usages.jsonl: {query, tool, success}."),
    output: Path = typer.Option(None, help="Write one JSON line of top-10 tool names per query."),
    embedder: str = EmbedderOption,
) -> None:
    """Tool retrieval evaluation: hit@1, recall@5, recall@10, MRR@10, latency."""
    from procmem import evaluation_retrieval as er

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task("queries", total=None)
        try:
            report = er.evaluate_retrieval(
                er.read_tools_jsonl(tools), er.read_queries_jsonl(queries),
                usages=er.read_usages_jsonl(usages) if usages else (), embedder=_embedder(embedder), output=output,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        except (ProcMemError, OSError) as exc:
            _fail(str(exc))
    console.print_json(report.model_dump_json())


def main() -> None:
    """Entry point of the ``procmem`` console script."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except ProcMemError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
