"""Action normalisation: concrete actions to templates with placeholders, and back.

Seed 001 (OmniMemory procedural engine) normalises commands before learning workflows, replacing
paths, URLs and numbers by placeholders so that ``cat /etc/passwd`` and ``cat /etc/shadow`` are
the same step. Here the extracted values are kept too, so a predicted template can be turned
back into a concrete, runnable action by :func:`fill_template`, with values taken from the
session's recent history or from the task text (a quoted filename in the instruction).

Placeholders, in the order they are tried:

======== =====================================================================
``<URL>`` ``scheme://...`` or ``www....``
``<IP>``  IPv4 address, optional ``/prefix`` or ``:port``
``<STR>`` contents of a quoted string (the quotes stay in the template); a quoted path, file
          name or number keeps its finer type (``'<FILE>'``)
``<HEX>`` hexadecimal hash of 7 or more digits, containing a digit and a letter
``<PATH>`` a token containing ``/`` (``/etc/passwd``, ``./run.sh``, ``top-secret/``)
``<FILE>`` ``name.ext`` with a short alphabetic extension (``notes.txt``)
``<NUM>`` an integer or decimal number standing alone
======== =====================================================================
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

__all__ = [
    "PLACEHOLDERS",
    "NormalizedAction",
    "collapse_whitespace",
    "extract_task_values",
    "fill_template",
    "normalize_action",
    "placeholders_of",
    "template_pieces",
    "program",
]

PLACEHOLDERS = ("<URL>", "<IP>", "<STR>", "<HEX>", "<PATH>", "<FILE>", "<NUM>")

_BOUND_L = r"(?<![\w.\-/:@])"
_BOUND_R = r"(?![\w\-/])"

_URL = r"(?:[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"]+|www\.[^\s'\"]+)"
_IP = r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2}|:\d{1,5})?(?![\w.])"
_QUOTED = r"'(?P<sq>[^'\n]*)'|\"(?P<dq>[^\"\n]*)\""
_HEX = r"(?<![\w])(?=[0-9a-fA-F]*[0-9])(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{7,}(?![\w])"
_PATH = r"(?<![\w\-=@])[\w.\-~*]*/[\w.\-~*/]*"
_FILE = r"(?<![\w\-./])[\w\-]+(?:\.[\w\-]+)*\.[A-Za-z][A-Za-z0-9]{0,5}(?![\w/(])"
_NUM = r"(?<![\w.\-])-?\d+(?:\.\d+)?(?![\w.])|(?<![\w.])\d+(?:\.\d+)?(?=[.,)\]\s]|$)(?![\w])"

_TOKEN = re.compile(
    rf"(?P<URL>{_URL})|(?P<IP>{_IP})|(?P<Q>{_QUOTED})|(?P<HEX>{_HEX})|(?P<PATH>{_PATH})"
    rf"|(?P<FILE>{_FILE})|(?P<NUM>{_NUM})"
)
_INNER = re.compile(rf"^(?:(?P<URL>{_URL})|(?P<IP>{_IP})|(?P<PATH>{_PATH})|(?P<FILE>{_FILE})|(?P<NUM>{_NUM}))$")
_PLACEHOLDER = re.compile(r"<(?:URL|IP|STR|HEX|PATH|FILE|NUM)>")
_WS = re.compile(r"\s+")
_TRIGGER = re.compile(r"[\d/.'\"]")
_QUOTED_IN_TEXT = re.compile(r"(?<![A-Za-z0-9])'([^'\n]{1,200})'(?![A-Za-z0-9])|\"([^\"\n]{1,200})\"")
_VALUE_IN_TEXT = re.compile(
    rf"(?P<URL>{_URL})|(?P<IP>{_IP})|(?P<PATH>{_PATH})|(?P<FILE>{_FILE})|(?P<NUM>{_NUM})"
)


class NormalizedAction(NamedTuple):
    """An action split into its template and the values its placeholders stand for.

    Attributes:
        template: The action with values replaced by placeholders, e.g. ``"cat <PATH>"``.
        values: ``(placeholder, value)`` pairs in order of appearance, e.g.
            ``(("<PATH>", "/etc/passwd"),)``.
    """

    template: str
    values: tuple[tuple[str, str], ...]


def collapse_whitespace(action: str) -> str:
    """Return ``action`` stripped, with each run of white space collapsed to one space."""
    # str.split() splits on exactly the characters regex \s matches in a str pattern (both use
    # str.isspace) and drops leading and trailing white space: the same as _WS.sub(" ", action).strip().
    return " ".join(action.split())


def _inner_kind(text: str) -> str:
    m = _INNER.match(text)
    if m is None:
        return "<STR>"
    return f"<{m.lastgroup}>"


_CACHE: dict[str, NormalizedAction] = {}
_CACHE_MAX = 200_000
# Words of actions without quotes -> their template and values (see _by_words). Plain tuples,
# which the garbage collector stops tracking, unlike NormalizedAction.
_WORDS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {}


def normalize_action(action: str) -> NormalizedAction:
    """Normalise one action into a template and its extracted values (seed 001).

    The result is cached, so normalising a repeated action costs a dictionary look-up.

    Args:
        action: A concrete action (command line or function call).

    Returns:
        The template and the ``(placeholder, value)`` pairs; ``fill_template(template,
        values=...)`` with these values gives back the white-space-collapsed action.

    Example:
        >>> normalize_action("scp notes.txt root@10.0.0.2:/tmp").template
        'scp <FILE> root@<IP>:<PATH>'
    """
    hit = _CACHE.get(action)
    if hit is not None:
        return hit
    text = collapse_whitespace(action)
    if "'" in text or '"' in text:
        result = NormalizedAction(*_scan(text))
    else:
        result = NormalizedAction(*_by_words(text))
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[action] = result
    return result


def _by_words(text: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Normalise a white-space-collapsed text without quotes word by word (each word cached).

    Only a quoted string can contain a space, and the look-arounds at a value's edges treat
    a space as they treat the start or the end of the text, so without quotes the text's
    values are those of its words, in order. Words repeat across actions (``-p``,
    ``root@10.0.0.2``, a file name), so this scans much less text than :func:`_scan` would.
    """
    templates: list[str] = []
    values: list[tuple[str, str]] = []
    for word in text.split(" "):
        scanned = _WORDS.get(word)
        if scanned is None:
            if _TRIGGER.search(word) is None:
                # Every value contains a digit, "/", "." or a quote (a URL's "://" or "www."
                # too): without one there is nothing to replace.
                scanned = (word, ())
            else:
                scanned = _scan(word)
            if len(_WORDS) >= _CACHE_MAX:
                _WORDS.clear()
            _WORDS[word] = scanned
        templates.append(scanned[0])
        values.extend(scanned[1])
    return " ".join(templates), tuple(values)


def _scan(text: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Normalise a white-space-collapsed text with the token regex: its template and values."""
    out: list[str] = []
    values: list[tuple[str, str]] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        out.append(text[pos:m.start()])
        kind = m.lastgroup
        if kind == "Q":
            inner = m.group("sq") if m.group("sq") is not None else m.group("dq")
            quote = "'" if m.group("sq") is not None else '"'
            if inner == "":
                out.append(m.group(0))
            else:
                ph = _inner_kind(inner)
                out.append(f"{quote}{ph}{quote}")
                values.append((ph, inner))
        else:
            ph = f"<{kind}>"
            out.append(ph)
            values.append((ph, m.group(0)))
        pos = m.end()
    out.append(text[pos:])
    return "".join(out), tuple(values)


def placeholders_of(template: str) -> list[str]:
    """Return the placeholders of a template in order, e.g. ``["<FILE>", "<IP>"]``."""
    if "<" not in template:
        return []
    return _PLACEHOLDER.findall(template)


def template_pieces(template: str) -> list[str]:
    """Return the texts around a template's placeholders (one more than the placeholders).

    Example:
        >>> template_pieces("scp <FILE> <IP>:")
        ['scp ', ' ', ':']
    """
    return _PLACEHOLDER.split(template)


def program(action: str) -> str:
    """Return the program of an action: the function name before ``(``, else the first word.

    Args:
        action: A command line (``"git commit -m x"`` → ``"git"``) or a function call
            (``"cd(folder='x')"`` → ``"cd"``).

    Returns:
        The program name; ``""`` for a blank action.
    """
    if "(" not in action:  # fast path: the first word ("" for a blank action)
        words = action.split(None, 1)
        return words[0] if words else ""
    text = action.strip()
    if not text:
        return ""
    paren = text.find("(")
    space = text.find(" ")
    if paren > 0 and (space < 0 or paren < space):
        return text[:paren].strip()
    return text.split(None, 1)[0]


def extract_task_values(task: str | None) -> dict[str, list[str]]:
    """Find values in task text that can fill placeholders, in order of appearance.

    Quoted strings (``'final_report.pdf'``) come first, typed by their contents; then
    unquoted URLs, IPs, paths, file names and numbers. Results are cached per text.

    Args:
        task: The task or instruction text, or None.

    Returns:
        Placeholder → values in order of appearance, without duplicates (a fresh copy the
        caller may change). Quoted values are also listed under ``"<STR>"`` whatever their
        finer type.
    """
    if not task:
        return {}
    return {k: list(v) for k, v in _task_values(task).items()}


@functools.lru_cache(maxsize=4096)
def _task_values(task: str) -> dict[str, list[str]]:
    """Uncached :func:`extract_task_values` for a non-empty text."""
    found: dict[str, list[str]] = {}
    if not task:
        return found

    def add(ph: str, value: str) -> None:
        bucket = found.setdefault(ph, [])
        if value not in bucket:
            bucket.append(value)

    for m in _QUOTED_IN_TEXT.finditer(task):
        value = m.group(1) if m.group(1) is not None else m.group(2)
        if not value.strip():
            continue
        kind = _inner_kind(value)
        add(kind, value)
        if kind != "<STR>":
            add("<STR>", value)
    for m in _VALUE_IN_TEXT.finditer(task):
        value = m.group(0).rstrip(".,;:")
        if value:
            add(f"<{m.lastgroup}>", value)
    return found


def fill_template(
    template: str,
    *,
    history: Sequence[str] = (),
    task: str | None = None,
    values: Iterable[tuple[str, str]] | Mapping[str, Sequence[str]] | None = None,
) -> str | None:
    """Fill a template's placeholders to give a concrete action.

    Each placeholder takes, in order of preference: the next unused value given in ``values``;
    the most recent value of that placeholder type in ``history`` (the session's earlier
    actions, oldest first); a value of that type found in ``task`` (quoted values first).

    Args:
        template: A template such as ``"cat <FILE>"``; a template without placeholders is
            returned unchanged.
        history: The session's earlier concrete actions, oldest first.
        task: Task text to take values from (e.g. a quoted filename in the instruction).
        values: Explicit values: ``(placeholder, value)`` pairs used in order, or a mapping
            placeholder → values.

    Returns:
        The concrete action, or None when some placeholder has no value anywhere.

    Example:
        >>> fill_template("cat <FILE>", history=["ls", "vim notes.txt"])
        'cat notes.txt'
    """
    slots = placeholders_of(template)
    if not slots:
        return template
    explicit: dict[str, list[str]] = {}
    if values is not None:
        if isinstance(values, Mapping):
            explicit = {k: list(v) for k, v in values.items()}
        else:
            for ph, v in values:
                explicit.setdefault(ph, []).append(v)
    recent: dict[str, list[str]] = {}
    for action in reversed(history):
        for ph, v in normalize_action(action).values:
            bucket = recent.setdefault(ph, [])
            if v not in bucket:
                bucket.append(v)
    from_task = extract_task_values(task)
    used: dict[str, int] = {}
    parts = template_pieces(template)
    out = [parts[0]]
    for i, ph in enumerate(slots):
        value: str | None = None
        k = used.get(ph, 0)
        if explicit.get(ph) and k < len(explicit[ph]):
            value = explicit[ph][k]
        elif recent.get(ph):
            value = recent[ph][0]
        elif from_task.get(ph):
            value = from_task[ph][min(k, len(from_task[ph]) - 1)]
        if value is None:
            return None
        used[ph] = k + 1
        out.append(value)
        out.append(parts[i + 1])
    return "".join(out)
