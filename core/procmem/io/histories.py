r"""Shell histories: bash, zsh and fish history files read into timed commands, then sessions.

Each parser reads a file line by line (memory stays bounded by ``max_line_bytes``) and returns
:class:`HistoryEntry` records in file order. :func:`split_sessions` cuts them into
:class:`~procmem.types.SessionRecord` sessions at pauses. The formats, as the shells write them:

======= =============================================================================
bash    one command per line; with ``HISTTIMEFORMAT`` set, a ``#1700000000`` line (epoch
        seconds) precedes each command, and the lines up to the next stamp are one
        multi-line command (bash's own reading rule, ``lib/readline/histfile.c``)
zsh     ``: 1700000000:0;command`` with ``EXTENDED_HISTORY`` (start, elapsed seconds), else
        plain lines; a line ending in ``\`` continues on the next one; bytes 0x83-0xA2
        and NUL are *metafied* (``0x83``, then the byte XOR 0x20; ``Src/utils.c``)
fish    ``- cmd: git status`` then indented ``when: 1700000000`` and ``paths:`` lines;
        ``\n`` and ``\\`` are the only escapes (``src/history_file.cpp``)
======= =============================================================================

Robustness rules, shared by every reader here:

* Bytes are decoded as UTF-8 with ``errors="replace"``: an undecodable byte becomes U+FFFD.
  ``surrogateescape`` would keep the bytes, but a lone surrogate cannot be encoded to UTF-8
  again, so such a command would crash later in the JSON writer or the SQLite store.
* A file with a NUL byte in its first 8 KiB, or whose first 8 KiB are mostly control bytes or
  invalid UTF-8, is refused with :class:`~procmem.errors.ImportFormatError` naming it.
* Lines longer than ``max_line_bytes`` (default 64 KiB) are skipped and counted, never loaded
  whole. NUL bytes later in a file (left by a crash) are removed from the line.
* A last line without a newline is kept but reported (the file may have been cut while being
  written); a cut ``zsh`` header or a continuation cut by the end of the file is dropped.

Fish history is parsed with a line parser, not a YAML library: fish writes it without YAML
quoting, so ``- cmd: echo # hi`` or ``- cmd: 'x`` would be misread (a comment, an unclosed
quote) or rejected by a YAML parser, while fish's own reader is line-based too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field

from procmem.errors import ConfigurationError, ImportFormatError
from procmem.types import SessionRecord

__all__ = [
    "FORMATS",
    "MAX_LINE_BYTES",
    "UNTIMED_CHUNK",
    "HistoryEntry",
    "HistoryFormat",
    "default_history_paths",
    "detect_format",
    "parse_bash_history",
    "parse_fish_history",
    "parse_zsh_history",
    "split_sessions",
]

logger = logging.getLogger("procmem.io")

HistoryFormat = Literal["bash", "zsh", "fish", "jsonl"]
FORMATS: tuple[str, ...] = ("bash", "zsh", "fish", "jsonl")

MAX_LINE_BYTES = 64 * 1024
"""Longest history line read, in bytes (64 KiB); longer lines are skipped and counted."""

UNTIMED_CHUNK = 50
"""Commands per session when a history has no timestamps.

Without timestamps no pause can be seen, so the stream is cut every 50 commands. Each cut loses
one transition of 50 (2 %) for next-action learning, while a chunk stays short enough that the
learner does not treat hours of unrelated work as one workflow; shell workflows (build, test,
commit; deploy) are a handful of commands, so most fit whole in a chunk. Schonlau et al.'s
masquerade data (2001) cut untimed command streams into blocks of 100 for the same reason.
"""

_HEAD_BYTES = 8192
_SKIP_BYTES = 1 << 16
_MAX_WARNINGS = 20
# C0 control bytes that never occur in text (tab, newline, CR, FF, VT, BS and ESC do) and DEL.
_CONTROL = frozenset([*range(0x00, 0x08), *range(0x0E, 0x1B), *range(0x1C, 0x20), 0x7F])
_BOM = b"\xef\xbb\xbf"

_Lines = Iterable[tuple[int, bytes]]  # (line number, bytes without the newline)

_BASH_STAMP = re.compile(r"#(\d+)\s*")
_ZSH_HEADER = re.compile(r":\s*(\d+):(\d+);")
_ZSH_CUT_HEADER = re.compile(r":\s*\d*(?::\d*)?")
_ZSH_META = 0x83
_ZSH_METAFIED = re.compile(rb"\x83[\x20\xa3-\xc2]")


class HistoryEntry(BaseModel):
    """One command read from a shell history.

    Attributes:
        command: The command as typed; a multi-line command keeps its newlines.
        timestamp: When it was started, UTC; None when the history has no timestamps.
        source: Absolute path of the history file.
        line: One-based line number where the command starts in the file.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: str
    timestamp: datetime | None = None
    source: str
    line: int = Field(ge=1)


@dataclass
class _Report:
    """What a reader skipped and why; becomes ImportResult.skipped_lines and .warnings."""

    path: str
    skipped: int = 0
    warnings: list[str] = field(default_factory=list)
    huge: list[int] = field(default_factory=list)
    nul_lines: int = 0
    bad_stamps: list[int] = field(default_factory=list)
    unterminated: int | None = None

    @property
    def total_skipped(self) -> int:
        return self.skipped + len(self.huge)

    def warn(self, message: str) -> None:
        if len(self.warnings) < _MAX_WARNINGS:
            self.warnings.append(message)
        elif len(self.warnings) == _MAX_WARNINGS:
            self.warnings.append(f"{self.path}: further warnings not shown")

    def finish(self, max_line_bytes: int, *, log: bool = False) -> None:
        """Turn the counters into summary warnings (one per kind); log them if asked."""
        if self.huge:
            self.warn(
                f"{self.path}: skipped {len(self.huge)} line(s) longer than {max_line_bytes} "
                f"bytes (first at line {self.huge[0]})"
            )
        if self.nul_lines:
            self.warn(f"{self.path}: removed NUL bytes from {self.nul_lines} line(s)")
        if self.bad_stamps:
            self.warn(
                f"{self.path}: {len(self.bad_stamps)} timestamp(s) unreadable or out of range; "
                f"commands kept without time (first at line {self.bad_stamps[0]})"
            )
        if self.unterminated is not None:
            self.warn(
                f"{self.path}:{self.unterminated}: last line has no newline; the file may have "
                "been cut while being written"
            )
        if log:
            for message in self.warnings:
                logger.warning(message)


# --------------------------------------------------------------------------- reading bytes


def _source(path: str | os.PathLike[str]) -> Path:
    return Path(path).expanduser().resolve()


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_max_line_bytes(max_line_bytes: int) -> int:
    if not _positive_int(max_line_bytes):
        raise ConfigurationError(
            f"max_line_bytes must be a positive number of bytes, got {max_line_bytes!r}"
        )
    return max_line_bytes


def _read_head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(_HEAD_BYTES)


def _replacements(data: bytes) -> int:
    """Number of bytes of ``data`` that are not valid UTF-8 (U+FFFD after decoding)."""
    return data.decode("utf-8", "replace").count("\ufffd") - data.count("\ufffd".encode())


def _check_text(path: Path, head: bytes) -> None:
    """Refuse binary files: NUL in the head, or a head that is mostly not text.

    Raises:
        ImportFormatError: The file looks binary.
    """
    nul = head.find(b"\x00")
    if nul >= 0:
        raise ImportFormatError(
            f"{path}: binary file (NUL byte at offset {nul}); expected a shell history or a "
            "sessions JSONL file",
            field="content",
            value=head[max(0, nul - 8) : nul + 8],
        )
    if not head:
        return
    controls = sum(1 for b in head if b in _CONTROL) / len(head)
    sample = _unmetafy(head) if _ZSH_METAFIED.search(head) else head
    invalid = _replacements(sample) / len(head)
    # Legacy 8-bit text (latin-1, cp1251) is invalid UTF-8 but has no control bytes; random or
    # compressed data has both (about 11 % control bytes, half its bytes invalid).
    if controls > 0.10 or (controls > 0.02 and invalid > 0.30):
        raise ImportFormatError(
            f"{path}: binary file ({controls:.0%} control bytes, {invalid:.0%} invalid UTF-8 "
            f"in the first {len(head)} bytes); expected a shell history or a sessions JSONL file",
            field="content",
            value=head[:16],
        )


def _open_checked(path: Path) -> BinaryIO:
    """Open ``path`` for binary reading after refusing binary content."""
    _check_text(path, _read_head(path))
    return path.open("rb")


def _raw_lines(f: BinaryIO, max_line_bytes: int, report: _Report) -> Iterator[tuple[int, bytes]]:
    r"""Yield ``(line_number, content)`` of each line, without its ``\n`` or ``\r\n``.

    Lines longer than ``max_line_bytes`` are read in bounded pieces and dropped (their numbers
    go to ``report.huge``). An unterminated last line is yielded and noted in
    ``report.unterminated``. NUL bytes are removed (and counted).
    """
    lineno = 0
    while True:
        chunk = f.readline(max_line_bytes + 1)
        if not chunk:
            return
        lineno += 1
        terminated = chunk.endswith(b"\n")
        if not terminated and len(chunk) > max_line_bytes:
            while True:  # drop the rest of the huge line without holding it
                rest = f.readline(_SKIP_BYTES)
                if not rest or rest.endswith(b"\n"):
                    break
            report.huge.append(lineno)
            continue
        content = chunk[:-1] if terminated else chunk
        if content.endswith(b"\r"):
            content = content[:-1]
        if lineno == 1 and content.startswith(_BOM):
            content = content[len(_BOM) :]
        if b"\x00" in content:
            content = content.replace(b"\x00", b"")
            report.nul_lines += 1
        if not terminated:
            report.unterminated = lineno
        yield lineno, content


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _unmetafy(raw: bytes) -> bytes:
    """Undo zsh's metafication: ``0x83 c`` stands for the byte ``c ^ 0x20``."""
    if _ZSH_META not in raw:
        return raw
    out = bytearray()
    it = iter(raw)
    for b in it:
        if b == _ZSH_META:
            nxt = next(it, None)
            if nxt is None:  # cut after the Meta byte
                break
            out.append(nxt ^ 0x20)
        else:
            out.append(b)
    return bytes(out)


def _decode_zsh(raw: bytes) -> str:
    """Decode a zsh history line, unmetafying it unless that breaks valid UTF-8."""
    if _ZSH_META not in raw:
        return _decode(raw)
    unmeta = _unmetafy(raw)
    for candidate in (unmeta, raw):  # a file written by another tool is not metafied
        try:
            return candidate.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return _decode(unmeta)


def _epoch(text: str, lineno: int, report: _Report) -> datetime | None:
    """Epoch seconds to a UTC datetime; None for 0 (unknown) and out-of-range values."""
    try:
        seconds = int(text)
    except ValueError:
        report.bad_stamps.append(lineno)
        return None
    if seconds <= 0:
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        report.bad_stamps.append(lineno)
        return None


# --------------------------------------------------------------------------- parsers


def _parse_bash(lines: _Lines, source: str, report: _Report) -> list[HistoryEntry]:
    entries: list[HistoryEntry] = []
    parts: list[str] = []  # lines of the stamped command being read
    start = 0
    when: datetime | None = None
    stamp_seen = False  # a "#<epoch>" line was read and its command has not started yet

    def flush() -> None:
        if parts:
            entries.append(HistoryEntry(command="\n".join(parts), timestamp=when, source=source,
                                        line=start))
            parts.clear()

    for lineno, raw in lines:
        text = _decode(raw)
        m = _BASH_STAMP.fullmatch(text)
        if m:
            flush()
            when, stamp_seen = _epoch(m.group(1), lineno, report), True
        elif stamp_seen:
            parts.append(text)
            start, stamp_seen = lineno, False
        elif parts:  # a further line of a stamped multi-line command
            parts.append(text)
        else:  # before the first stamp: one line, one command
            entries.append(HistoryEntry(command=text, timestamp=None, source=source, line=lineno))
    flush()
    return entries


def _parse_zsh(lines: _Lines, source: str, report: _Report) -> list[HistoryEntry]:
    entries: list[HistoryEntry] = []
    parts: list[str] = []
    start = 0
    when: datetime | None = None
    headers = 0  # lines with a zsh extended-history header
    stamps: list[int] = []  # lines that are bash "#<epoch>" timestamps instead
    for lineno, raw in lines:
        text = _decode_zsh(raw)
        if not parts:
            start, when = lineno, None
            m = _ZSH_HEADER.match(text)
            if m:
                headers += 1
                when = _epoch(m.group(1), lineno, report)
                text = text[m.end() :]
            elif _BASH_STAMP.fullmatch(text):
                stamps.append(lineno)
            elif report.unterminated == lineno and _ZSH_CUT_HEADER.fullmatch(text):
                report.skipped += 1
                report.warn(f"{source}:{lineno}: dropped a history line cut inside its header")
                continue
        if text.endswith("\\"):  # zsh's readhistline: the backslash stands for a newline
            parts.append(text[:-1])
            continue
        parts.append(text)
        entries.append(HistoryEntry(command="\n".join(parts), timestamp=when, source=source,
                                    line=start))
        parts = []
    if parts:
        report.skipped += len(parts)
        report.warn(f"{source}:{start}: dropped a multi-line command cut by the end of the file")
    if stamps and len(stamps) >= headers:
        # As many bash timestamps as zsh headers, or more (the rule format detection uses):
        # read as zsh, every timestamp would become a command.
        raise ImportFormatError(
            f"{source}:{stamps[0]}: {len(stamps)} line(s) of the form '#<epoch>' are bash timestamps "
            "(HISTTIMEFORMAT), not zsh history: read the file as bash (format='bash', "
            "procmem learn --format bash)",
            field="format", value="zsh",
        )
    if stamps:
        report.warn(f"{source}:{stamps[0]}: {len(stamps)} line(s) look like bash timestamps ('#<epoch>'); "
                    "kept as commands")
    return entries


def _fish_unescape(value: str) -> str:
    r"""Undo fish's history escapes: ``\\`` is a backslash, ``\n`` a newline; others stay."""
    if "\\" not in value:
        return value
    out: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value) and value[i + 1] in "\\n":
            out.append("\\" if value[i + 1] == "\\" else "\n")
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _parse_fish(lines: _Lines, source: str, report: _Report) -> list[HistoryEntry]:
    entries: list[HistoryEntry] = []
    current: list = []  # [command, line, timestamp] of the record being read

    def flush() -> None:
        if current:
            entries.append(HistoryEntry(command=current[0], line=current[1], timestamp=current[2],
                                        source=source))
            current.clear()

    for lineno, raw in lines:
        text = _decode(raw)
        if text.startswith("- cmd:"):
            flush()
            current.extend([_fish_unescape(text[6:].lstrip(" ")), lineno, None])
        elif text[:1] in (" ", "\t"):
            key, sep, value = text.strip().partition(":")
            if current and sep and key == "when":
                current[2] = _epoch(value.strip(), lineno, report)
            # "paths:" and its "- path" items are ignored
        elif text.strip():
            report.skipped += 1
            report.warn(f"{source}:{lineno}: not a fish history line, skipped")
    flush()
    return entries


_PARSERS = {"bash": _parse_bash, "zsh": _parse_zsh, "fish": _parse_fish}


def _parse_file(
    path: str | os.PathLike[str], fmt: str, max_line_bytes: int, *, log: bool = False
) -> tuple[list[HistoryEntry], _Report]:
    """Parse a history file in a known format; return its entries and what was skipped.

    ``log`` sends the warnings to the ``procmem.io`` logger too, for callers that only get the
    entries back.
    """
    _check_max_line_bytes(max_line_bytes)
    source = _source(path)
    report = _Report(path=str(source))
    with _open_checked(source) as f:
        entries = _PARSERS[fmt](_raw_lines(f, max_line_bytes, report), str(source), report)
    report.finish(max_line_bytes, log=log)
    return entries, report


def parse_bash_history(
    path: str | os.PathLike[str], *, max_line_bytes: int = MAX_LINE_BYTES
) -> list[HistoryEntry]:
    """Read a bash history file (``~/.bash_history``), plain or with ``HISTTIMEFORMAT`` stamps.

    Without stamps every line is a command (bash writes a multi-line command on one line with
    ``cmdhist``, or as separate lines with ``lithist``, where they cannot be told apart). With
    stamps, the lines from one ``#<epoch seconds>`` line to the next are one command. Skipped
    lines are logged on the ``procmem.io`` logger.

    Args:
        path: The history file.
        max_line_bytes: Lines longer than this many bytes are skipped and counted.

    Returns:
        The commands in file order.

    Raises:
        ImportFormatError: The file is binary.
        ConfigurationError: ``max_line_bytes`` is not a positive integer.
        OSError: The file cannot be read.
    """
    return _parse_file(path, "bash", max_line_bytes, log=True)[0]


def parse_zsh_history(
    path: str | os.PathLike[str], *, max_line_bytes: int = MAX_LINE_BYTES
) -> list[HistoryEntry]:
    """Read a zsh history file, extended (``: <epoch>:<elapsed>;cmd``) or plain.

    A line ending in a backslash continues on the next line (the backslash becomes a newline,
    as zsh reads it); metafied bytes are decoded. A continuation cut by the end of the file is
    dropped. Skipped lines are logged on the ``procmem.io`` logger.

    Args:
        path: The history file (``$ZDOTDIR/.zsh_history``, ``~/.zsh_history``, ``~/.zhistory``).
        max_line_bytes: Lines longer than this many bytes are skipped and counted.

    Returns:
        The commands in file order; plain lines have no timestamp.

    Raises:
        ImportFormatError: The file is binary, or it is a bash history with timestamps: it has
            as many bash ``#<epoch>`` lines as zsh headers, or more (fewer are kept as commands,
            with a warning).
        ConfigurationError: ``max_line_bytes`` is not a positive integer.
        OSError: The file cannot be read.
    """
    return _parse_file(path, "zsh", max_line_bytes, log=True)[0]


def parse_fish_history(
    path: str | os.PathLike[str], *, max_line_bytes: int = MAX_LINE_BYTES
) -> list[HistoryEntry]:
    r"""Read a fish history file (``~/.local/share/fish/fish_history``).

    Records are ``- cmd: <command>`` lines followed by indented ``when: <epoch seconds>`` and
    ``paths:`` lines; ``\n`` and ``\\`` in the command are unescaped as fish does. Lines of
    no record are skipped and counted; a record without ``when`` has no timestamp.

    Args:
        path: The history file.
        max_line_bytes: Lines longer than this many bytes are skipped and counted.

    Returns:
        The commands in file order.

    Raises:
        ImportFormatError: The file is binary.
        ConfigurationError: ``max_line_bytes`` is not a positive integer.
        OSError: The file cannot be read.
    """
    return _parse_file(path, "fish", max_line_bytes, log=True)[0]


# --------------------------------------------------------------------------- detection


def _name_hint(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if "fish" in name:
        return "fish"
    if "zsh" in name or "zhistory" in name:
        return "zsh"
    if "bash" in name:
        return "bash"
    return None


def _sniff(path: Path, head: bytes) -> str:
    """Guess the format from the first bytes of a file, then from its name."""
    hint = _name_hint(path)
    texts = [_decode(raw).removesuffix("\r") for raw in head.split(b"\n")]
    texts[0] = texts[0].removeprefix("\ufeff")
    last_cut = len(head) >= _HEAD_BYTES  # the last line may continue past the head
    nonblank = [(i, t) for i, t in enumerate(texts) if t.strip()][:50]
    if not nonblank:
        return hint or "bash"
    index, first = nonblank[0]
    if first.lstrip().startswith("{"):
        if last_cut and index == len(texts) - 1:  # one JSON line longer than the head
            if first.lstrip().startswith('{"'):
                return "jsonl"
        else:
            try:
                if isinstance(json.loads(first), dict):
                    return "jsonl"
            except (ValueError, RecursionError):
                pass
        if hint == "jsonl":
            return "jsonl"
    if first.startswith("- cmd:"):
        return "fish"
    zsh = sum(1 for _, t in nonblank if _ZSH_HEADER.match(t))
    bash = sum(1 for _, t in nonblank if _BASH_STAMP.fullmatch(t))
    if zsh or bash:
        return "zsh" if zsh > bash else "bash"
    if hint:
        return hint
    if _ZSH_METAFIED.search(head) and _replacements(_unmetafy(head)) < _replacements(head):
        return "zsh"
    return "bash"


def detect_format(path: str | os.PathLike[str]) -> HistoryFormat:
    """Guess the format of a history or sessions file from its content, then its name.

    Content decides first: a JSON object on the first line is ``"jsonl"``; ``- cmd:`` is fish;
    ``: <epoch>:<elapsed>;`` lines are zsh; ``#<epoch>`` stamp lines are bash. Plain lines
    are ambiguous, so the file name decides (``fish_history``, ``.zsh_history``,
    ``.zhistory``, ``.bash_history``, ``*.jsonl``); then zsh's metafied bytes; else bash.

    Args:
        path: The file.

    Returns:
        One of ``"bash"``, ``"zsh"``, ``"fish"``, ``"jsonl"``.

    Raises:
        ImportFormatError: The file is binary.
        OSError: The file cannot be read.
    """
    source = _source(path)
    head = _read_head(source)
    _check_text(source, head)
    return _sniff(source, head)  # type: ignore[return-value]


# --------------------------------------------------------------------------- locations


def default_history_paths() -> list[Path]:
    """Return the current user's shell history files that exist, found as the shells find them.

    Order: ``$HISTFILE`` (when exported), bash ``~/.bash_history``, zsh
    ``$ZDOTDIR/.zsh_history`` (``~`` when ``ZDOTDIR`` is unset) and ``.zhistory`` there, fish
    ``$XDG_DATA_HOME/fish/fish_history`` (``~/.local/share`` when unset). Duplicates (the same
    file reached twice) are listed once.

    Returns:
        Existing history files, absolute.
    """
    env = os.environ
    home = Path.home()
    zdotdir = Path(env["ZDOTDIR"]).expanduser() if env.get("ZDOTDIR") else home
    xdg_data = env.get("XDG_DATA_HOME")
    data_home = Path(xdg_data).expanduser() if xdg_data and os.path.isabs(xdg_data) else (
        home / ".local" / "share"
    )  # the XDG spec ignores relative values
    candidates: list[Path] = []
    if env.get("HISTFILE"):
        candidates.append(Path(env["HISTFILE"]).expanduser())
    candidates += [
        home / ".bash_history",
        zdotdir / ".zsh_history",
        zdotdir / ".zhistory",
        data_home / "fish" / "fish_history",
    ]
    found: list[Path] = []
    seen: set[Path] = set()
    for candidate in candidates:
        if not candidate.is_file():
            continue
        resolved = candidate.resolve()
        if resolved not in seen:
            seen.add(resolved)
            found.append(resolved)
    return found


# --------------------------------------------------------------------------- sessions


def _stable_id(*parts: str) -> str:
    """A short id derived from ``parts`` only, so re-reading the same file gives the same ids."""
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return f"hist-{digest[:20]}"


def _session_id(first: HistoryEntry) -> str:
    if first.timestamp is not None:
        # Keyed by time and command, not line number: the shell trims old lines from the front
        # of its history file (HISTFILESIZE), which shifts every line number.
        return _stable_id(first.source, first.timestamp.isoformat(), first.command)
    return _stable_id(first.source, f"line {first.line}", first.command)


def split_sessions(
    entries: Iterable[HistoryEntry],
    *,
    gap: float = 1800.0,
    max_actions: int | None = None,
    untimed_chunk: int = UNTIMED_CHUNK,
) -> list[SessionRecord]:
    """Cut a history into sessions at pauses longer than ``gap`` seconds.

    Entries are kept in file order (concurrent shells append their blocks at exit, so sorting by
    time would interleave unrelated terminals). A new session starts when the time between two
    consecutive commands exceeds ``gap`` either way (a jump back in time is another terminal's
    block), when the source file changes, when timed and untimed entries meet, or after
    ``max_actions`` actions. Entries without a timestamp are cut every ``untimed_chunk``
    commands, since no pause can be seen (see :data:`UNTIMED_CHUNK`). Blank commands are dropped.

    Session ids are derived from the source path and the session's first command (its time, or
    its line number when untimed), so importing the same file again yields the same ids and the
    caller can skip sessions already learned. The last session of a live history can still grow;
    compare its action count to see that.

    Args:
        entries: Commands in file order, as the parsers return them.
        gap: Longest pause inside a session, in seconds; must be positive.
        max_actions: Most actions in one session; longer runs are cut into consecutive
            sessions. None for no limit.
        untimed_chunk: Actions per session for entries without timestamps.

    Returns:
        Sessions in order, with ``timestamps`` set when their commands are timed.

    Raises:
        ConfigurationError: ``gap``, ``max_actions`` or ``untimed_chunk`` is not positive.
    """
    if isinstance(gap, bool) or not isinstance(gap, (int, float)) or not math.isfinite(gap) or (
        gap <= 0
    ):
        raise ConfigurationError(f"gap must be a positive number of seconds, got {gap!r}")
    for name, value in (("max_actions", max_actions), ("untimed_chunk", untimed_chunk)):
        if value is not None and not _positive_int(value):
            raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
    sessions: list[SessionRecord] = []
    used: dict[str, int] = {}
    current: list[HistoryEntry] = []

    def flush() -> None:
        if not current:
            return
        sid = _session_id(current[0])
        n = used.get(sid, 0) + 1
        used[sid] = n
        timed = current[0].timestamp is not None
        sessions.append(SessionRecord(
            session_id=sid if n == 1 else f"{sid}-{n}",
            actions=[e.command for e in current],
            timestamps=[e.timestamp for e in current] if timed else None,  # type: ignore[misc]
        ))
        current.clear()

    for entry in entries:
        if not entry.command.strip():
            continue
        if current:
            prev = current[-1]
            timed = entry.timestamp is not None
            if (
                entry.source != prev.source
                or timed != (prev.timestamp is not None)
                or (timed and abs((entry.timestamp - prev.timestamp).total_seconds()) > gap)  # type: ignore[operator]
                or (not timed and len(current) >= untimed_chunk)
                or (max_actions is not None and len(current) >= max_actions)
            ):
                flush()
        current.append(entry)
    flush()
    return sessions
