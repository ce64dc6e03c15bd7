"""Export of the learned workflow graph."""

import networkx as nx

from procmem.graphs import to_mermaid, write_graph

EDGES = [("git pull", "make build", 3), ("make build", "make test", 2), ("make test", "git push", 2),
         ("git pull", "ls", 1)]


def _graph(edges):
    g = nx.DiGraph()
    for u, v, w in edges:
        g.add_edge(u, v, weight=w, success_rate=None)
    return g


def test_text_exports_do_not_depend_on_insertion_order(tmp_path):
    a, b = _graph(EDGES), _graph(list(reversed(EDGES)))
    assert list(a.nodes) != list(b.nodes)
    assert to_mermaid(a) == to_mermaid(b)
    for suffix in ("mmd", "dot"):
        write_graph(a, tmp_path / f"a.{suffix}")
        write_graph(b, tmp_path / f"b.{suffix}")
        assert (tmp_path / f"a.{suffix}").read_text() == (tmp_path / f"b.{suffix}").read_text()
