"""Export of the learned workflow graph."""

import networkx as nx
import pytest

from procmem.errors import ConfigurationError
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


def test_pictures_draw_dollar_signs_verbatim(tmp_path):
    # Two "$" in a label made matplotlib parse the text between them as TeX: garbled, or a
    # ParseSyntaxException for "$SRC_{x $DST".
    g = _graph([("cp $SRC_{x $DST", "echo $HOME $PATH", 2)])
    assert write_graph(g, tmp_path / "g.svg") == 2
    svg = (tmp_path / "g.svg").read_text()
    assert "cp $SRC_{x $DST" in svg and "echo $HOME $PATH" in svg
    assert write_graph(g, tmp_path / "g.png") == 2


def test_mermaid_labels_escape_markup():
    # Mermaid renders labels as HTML: "<PATH>" was taken for a tag and vanished.
    text = to_mermaid(_graph([('cd <PATH>', 'echo "a" # b & c', 1)]))
    assert 'n0["cd #lt;PATH#gt;"]' in text
    assert 'n1["echo #quot;a#quot; #35; b #amp; c"]' in text


def test_dot_keeps_actions_without_edges(tmp_path):
    g = _graph(EDGES)
    g.add_node("for f in *; do echo $f; done")  # a self-contained action, followed by nothing kept
    n = write_graph(g, tmp_path / "g.dot")
    dot = (tmp_path / "g.dot").read_text()
    assert n == g.number_of_nodes() == 6
    assert '"for f in *; do echo $f; done"' in dot


def test_unknown_format_creates_nothing(tmp_path):
    target = tmp_path / "new" / "graph.txt"
    with pytest.raises(ConfigurationError, match="unknown graph format '.txt'"):
        write_graph(_graph(EDGES), target)
    assert not (tmp_path / "new").exists()
