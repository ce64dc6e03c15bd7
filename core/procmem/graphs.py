"""Export of the learned workflow graph: PNG/SVG pictures, DOT and Mermaid text."""

from __future__ import annotations

import os
import re
from pathlib import Path

import networkx as nx

from procmem.errors import ConfigurationError

__all__ = ["top_subgraph", "to_mermaid", "write_graph"]

_FORMATS = (".png", ".svg", ".dot", ".mmd", ".mermaid")
_MERMAID_ENTITIES = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "&": "#amp;"}


def top_subgraph(graph: nx.DiGraph, max_nodes: int = 30) -> nx.DiGraph:
    """Keep the ``max_nodes`` actions with the most transition weight, and their edges.

    The result holds its nodes and edges in sorted order (a subgraph view iterates in set
    order, which changes from run to run), so the files written from it are reproducible.
    """
    if max_nodes < 1:
        raise ConfigurationError(f"max_nodes must be >= 1, got {max_nodes!r}")
    weight = {n: graph.in_degree(n, weight="weight") + graph.out_degree(n, weight="weight") for n in graph}
    keep = sorted(weight, key=lambda n: (-weight[n], str(n)))[:max_nodes]
    sub = nx.DiGraph()
    sub.add_nodes_from(sorted(((n, graph.nodes[n]) for n in keep), key=lambda x: str(x[0])))
    sub.add_edges_from(_sorted_edges(graph.subgraph(keep)))
    return sub


def _sorted_edges(graph: nx.DiGraph) -> list[tuple]:
    """The edges ``(u, v, data)`` of a graph, sorted by their ends."""
    return sorted(graph.edges(data=True), key=lambda e: (str(e[0]), str(e[1])))


def to_mermaid(graph: nx.DiGraph) -> str:
    """Render a graph as a Mermaid ``flowchart LR`` with edge counts and success rates.

    Nodes and edges are written in sorted order: the same graph gives the same text.
    """
    nodes = sorted(graph.nodes, key=str)
    ids = {n: f"n{i}" for i, n in enumerate(nodes)}

    def label(text: str) -> str:
        # Mermaid renders labels as HTML: "<PATH>" would be taken for a tag and dropped, so
        # the characters it reads as markup are written as its entity codes (#35; is "#").
        text = re.sub(r"\s+", " ", str(text))[:60]
        return '"' + re.sub(r'[#"<>&]', lambda m: _MERMAID_ENTITIES[m.group()], text) + '"'

    lines = ["flowchart LR"]
    lines += [f"    {ids[n]}[{label(n)}]" for n in nodes]
    for u, v, d in _sorted_edges(graph):
        sr = d.get("success_rate")
        text = f"{int(d.get('weight', 0))}" + ("" if sr is None else f" / {sr:.0%}")
        lines.append(f"    {ids[u]} -->|{text}| {ids[v]}")
    return "\n".join(lines) + "\n"


def write_graph(graph: nx.DiGraph, path: str | os.PathLike[str], *, max_nodes: int = 30) -> int:
    """Write the graph to ``path``; the format follows the suffix (.png, .svg, .dot, .mmd).

    Pictures are drawn with networkx and matplotlib (edge width by count, colour by success
    rate); DOT is written by ``networkx.nx_pydot`` (needs pydot).

    Returns:
        Number of actions drawn.

    Raises:
        ConfigurationError: Unknown suffix, or a needed library is missing.
    """
    path = Path(path)
    sub = top_subgraph(graph, max_nodes)
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        raise ConfigurationError(f"unknown graph format {suffix!r}: use .png, .svg, .dot, .mmd or .mermaid")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".mmd", ".mermaid"):
        path.write_text(to_mermaid(sub), encoding="utf-8")
    elif suffix == ".dot":
        try:
            from networkx.drawing.nx_pydot import to_pydot
        except ImportError as exc:  # pragma: no cover
            raise ConfigurationError("DOT export needs pydot: pip install 'procmem[cli]'") from exc
        def quoted(action: object) -> str:  # a DOT string: backslashes and quotes escaped
            return '"' + str(action).replace("\\", "\\\\").replace('"', '\\"') + '"'

        clean = nx.DiGraph()
        clean.add_nodes_from(quoted(n) for n in sub)  # actions with no kept edge too
        for u, v, d in sub.edges(data=True):
            clean.add_edge(quoted(u), quoted(v), label=f'"{int(d.get("weight", 0))}"')
        path.write_text(to_pydot(clean).to_string(), encoding="utf-8")
    elif suffix in (".png", ".svg"):
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:  # pragma: no cover
            raise ConfigurationError("pictures need matplotlib: pip install 'procmem[cli]'") from exc
        fig, ax = plt.subplots(figsize=(14, 10))
        pos = nx.spring_layout(sub, seed=7, k=1.2)
        weights = [d.get("weight", 1) for _, _, d in sub.edges(data=True)]
        top = max(weights, default=1)
        colors = [d.get("success_rate", 0.5) if d.get("success_rate") is not None else 0.5
                  for _, _, d in sub.edges(data=True)]
        nx.draw_networkx_nodes(sub, pos, ax=ax, node_color="#dbe9f6", edgecolors="#3b6ea5", node_size=900)
        # "$" escaped: matplotlib reads the text between two of them as TeX math ("echo $A $B").
        labels = {n: str(n)[:28].replace("$", r"\$") for n in sub}
        nx.draw_networkx_labels(sub, pos, ax=ax, labels=labels, font_size=8)
        nx.draw_networkx_edges(sub, pos, ax=ax, width=[0.5 + 4 * w / top for w in weights], edge_color=colors,
                               edge_cmap=plt.cm.RdYlGn, edge_vmin=0.0, edge_vmax=1.0, arrows=True,
                               arrowsize=12, connectionstyle="arc3,rad=0.08", node_size=900)
        ax.set_title("procmem: learned workflow graph (width = count, colour = success rate)")
        ax.axis("off")
        fig.tight_layout()
        fig.savefig(path, format=suffix[1:], dpi=110)
        plt.close(fig)
    return sub.number_of_nodes()
