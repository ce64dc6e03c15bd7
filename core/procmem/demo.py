"""``make demo``: learn from your shell history (or ``--data PATH``), predict, mine, draw.

Writes its memory and the graph picture to ``./demo-out/`` so your real memory is untouched.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from procmem.errors import ProcMemError


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, action="append", help="History or sessions JSONL file(s).")
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="Output directory.")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.markup import escape

    from procmem.cli import _print_predictions
    from procmem.graphs import write_graph
    from procmem.io import default_history_paths, load_history
    from procmem.learning import outcome_summary
    from procmem.memory import ProceduralMemory

    console = Console()
    paths = args.data or default_history_paths()
    if not paths:
        console.print(
            "[yellow]No shell history found[/] ($HISTFILE, ~/.bash_history, ~/.zsh_history, fish_history).\n"
            "Point the demo at one:  make demo DATA=~/.bash_history\n"
            "or at the shared data:  make demo DATA=../shared/data/kypo/sessions.jsonl"
        )
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    db = args.out / "demo.sqlite3"
    for stale in args.out.glob("demo.sqlite3*"):
        stale.unlink()
    memory = ProceduralMemory(path=db)
    last_context: list[str] = []
    for path in paths:
        try:
            result = load_history(path)
        except (ProcMemError, OSError) as exc:
            console.print(f"[red]cannot read {escape(str(path))}:[/] {escape(str(exc))}")
            continue
        start = time.perf_counter()
        memory.learn_sessions(result.sessions)
        took = time.perf_counter() - start
        console.print(f"Learned [bold]{escape(str(path))}[/] ({result.format}): {result.entries} actions in "
                      f"{len(result.sessions)} sessions, {took:.1f} s")
        if result.sessions:
            last_context = result.sessions[-1].actions[-3:]
    if not last_context:
        console.print("Nothing to learn from those files.")
        return 0
    preds = memory.predict_next_action(last_context[:-1] or last_context, top_k=5)
    console.print("\n[bold]Predictions for your latest context[/]")
    _print_predictions(preds, last_context[:-1] or last_context)
    learned = [w for w in memory.list(kind="workflow", tags=["learned"]) if w.metadata.get("status") == "promoted"]
    learned.sort(key=lambda w: -w.metadata.get("support", 0))
    console.print(f"\n[bold]{len(learned)} mined workflows[/] (showing up to 5)")
    for w in learned[:5]:
        meta = w.metadata
        outcome = outcome_summary(meta["successes"], meta["failures"], meta.get("unknown", 0))
        console.print(f"  seen in {meta['support']} sessions, {outcome}: "
                      + escape(" ⟶ ".join(s.action for s in w.steps)))
    picture = args.out / "workflow-graph.png"
    write_graph(memory.workflow_graph(), picture, max_nodes=25)
    console.print(f"\nWorkflow graph: {escape(str(picture))}   memory: {escape(str(db))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
