"""Sessions JSONL (the shared evaluation format) and the one import entry point, load_history.

One session per line (``/work/shared/data/README.md``)::

    {"session_id": "s1", "user_id": "u1", "group": "g", "actions": ["git add .", "git commit"],
     "outcome": "success", "instructions": ["commit the fix"],
     "timestamps": ["2024-05-01T10:00:00Z", "2024-05-01T10:00:09Z"]}

``actions`` is required; the other keys are optional and unknown keys are ignored. A
:class:`~procmem.types.SessionRecord` takes ``task = " ".join(instructions)``; a ``turn`` list
(one instruction index per action, as in multi-turn agent logs) is kept with the instructions, so
each action is learned and predicted with its own turn's instruction. Errors name the
file, the line and the field: ``sessions.jsonl:12: field 'actions': must not be empty``.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from procmem.errors import ConfigurationError, ImportFormatError
from procmem.io.histories import (
    FORMATS,
    MAX_LINE_BYTES,
    UNTIMED_CHUNK,
    HistoryFormat,
    _check_max_line_bytes,
    _check_text,
    _decode,
    _parse_file,
    _raw_lines,
    _read_head,
    _Report,
    _sniff,
    _source,
    _stable_id,
    split_sessions,
)
from procmem.types import SessionRecord

__all__ = [
    "MAX_JSONL_LINE_BYTES",
    "ImportResult",
    "SessionReader",
    "load_history",
    "read_sessions_jsonl",
    "write_sessions_jsonl",
]

MAX_JSONL_LINE_BYTES = 16 * 1024 * 1024
"""Longest sessions JSONL line read, in bytes (16 MiB).

A JSONL line holds a whole session (the longest in the shared data is 49 KB for 5,000 actions),
so the history default of 64 KiB would be too small; longer lines are skipped and counted.
"""

OnError = Literal["raise", "skip"]


class ImportResult(BaseModel):
    """What :func:`load_history` read from one file.

    Attributes:
        source: Absolute path of the file.
        format: The format it was read as: ``"bash"``, ``"zsh"``, ``"fish"`` or ``"jsonl"``.
        sessions: The sessions, in file order.
        entries: Commands read (histories) or actions read (JSONL), before blank commands
            were dropped.
        skipped_lines: Lines not used: too long, malformed, or cut by the end of the file.
        warnings: Human-readable notes on what was skipped or repaired, each naming the file.
    """

    model_config = ConfigDict(extra="forbid")

    source: str
    format: HistoryFormat
    sessions: list[SessionRecord] = Field(default_factory=list)
    entries: int = Field(default=0, ge=0)
    skipped_lines: int = Field(default=0, ge=0)
    warnings: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------- reading


def _fail(
    path: str, lineno: int, field: str | None, what: str, value: Any = None
) -> ImportFormatError:
    where = f"field {field!r}: " if field else ""
    return ImportFormatError(f"{path}:{lineno}: {where}{what}", field=field, value=value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _optional_str(obj: dict[str, Any], key: str, path: str, lineno: int) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _fail(path, lineno, key, f"must be a string or null, got {_short(value)}", value)


def _parse_time(value: Any, field: str, path: str, lineno: int) -> datetime:
    """An ISO-8601 string (``Z`` allowed) or epoch seconds to an aware UTC datetime."""
    try:
        if isinstance(value, str):
            text = value.strip()
            if text.endswith(("Z", "z")):  # Python 3.10's fromisoformat refuses "Z"
                text = text[:-1] + "+00:00"
            when = datetime.fromisoformat(text)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and (
            math.isfinite(value)
        ):
            when = datetime.fromtimestamp(value, tz=timezone.utc)
        else:
            raise TypeError
        if when.tzinfo is None:  # naive times are taken as UTC, as everywhere in procmem
            return when.replace(tzinfo=timezone.utc)
        return when.astimezone(timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        raise _fail(
            path, lineno, field, f"must be an ISO-8601 time or epoch seconds, got {_short(value)}",
            value,
        ) from None


def _record(obj: Any, path: str, lineno: int) -> SessionRecord:
    """Validate one decoded JSON line into a SessionRecord.

    Raises:
        ImportFormatError: Naming the file, the line and the field.
    """
    if not isinstance(obj, dict):
        raise _fail(path, lineno, None, f"expected a JSON object, got {type(obj).__name__}")
    actions = obj.get("actions")
    if actions is None:
        raise _fail(path, lineno, "actions", "is missing")
    if not isinstance(actions, list):
        raise _fail(path, lineno, "actions", f"must be a list of strings, got {_short(actions)}",
                    actions)
    if not actions:
        raise _fail(path, lineno, "actions", "must not be empty", actions)
    for i, action in enumerate(actions):
        if not isinstance(action, str) or not action.strip():
            raise _fail(path, lineno, f"actions[{i}]",
                        f"must be a non-blank string, got {_short(action)}", action)
    session_id = obj.get("session_id")
    if session_id is None:
        session_id = _stable_id(path, f"line {lineno}", actions[0])
    elif not isinstance(session_id, str) or not session_id:
        raise _fail(path, lineno, "session_id",
                    f"must be a non-empty string, got {_short(session_id)}", session_id)
    instructions = obj.get("instructions")
    turn_list: list[str] | None = None
    if isinstance(instructions, str):
        task: str | None = instructions
    elif isinstance(instructions, list) and all(isinstance(t, str) for t in instructions):
        task = " ".join(instructions) if instructions else None
        turn_list = instructions or None
    elif instructions is None:
        task = _optional_str(obj, "task", path, lineno)
    else:
        raise _fail(path, lineno, "instructions",
                    f"must be a list of strings, got {_short(instructions)}", instructions)
    stamps = obj.get("timestamps")
    timestamps: list[datetime] | None = None
    if stamps is not None:
        if not isinstance(stamps, list):
            raise _fail(path, lineno, "timestamps", f"must be a list, got {_short(stamps)}", stamps)
        if len(stamps) != len(actions):
            raise _fail(path, lineno, "timestamps",
                        f"has {len(stamps)} items but actions has {len(actions)}", stamps)
        timestamps = [
            _parse_time(s, f"timestamps[{i}]", path, lineno) for i, s in enumerate(stamps)
        ]
    turns = obj.get("turn")
    if turns is not None:
        if not isinstance(turns, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in turns):
            raise _fail(path, lineno, "turn", f"must be a list of integers, got {_short(turns)}", turns)
        # Lengths and indices are checked by SessionRecord (its field ``turns``).
    fields: dict[str, Any] = {
        "session_id": session_id,
        "actions": actions,
        "outcome": obj.get("outcome"),
        "task": task,
        "instructions": turn_list if turns is not None else None,
        "turns": turns,
        "user_id": _optional_str(obj, "user_id", path, lineno),
        "group": _optional_str(obj, "group", path, lineno),
        "timestamps": timestamps,
    }
    namespace = _optional_str(obj, "namespace", path, lineno)
    if namespace is not None:
        fields["namespace"] = namespace
    try:
        return SessionRecord(**fields)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ())) or None
        if field == "turns":
            field = "turn"  # the file's name for it
        raise _fail(path, lineno, field, err.get("msg", str(exc)), err.get("input")) from None


class SessionReader(Iterator[SessionRecord]):
    """Iterator over the sessions of a sessions JSONL file that counts what it skipped.

    Made by :func:`read_sessions_jsonl`. Blank lines are ignored. A last line that has no newline
    and is not valid JSON was cut while being written: it is skipped with a warning even when
    ``on_error="raise"``.

    Attributes:
        path: Absolute path of the file.
        on_error: ``"raise"`` or ``"skip"``.
        lines: Lines read so far.
        skipped: Lines skipped so far (malformed, too long, or cut).
        warnings: One message per skipped line (the first few), each naming file and line.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        on_error: OnError = "raise",
        max_line_bytes: int = MAX_JSONL_LINE_BYTES,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ConfigurationError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.max_line_bytes = _check_max_line_bytes(max_line_bytes)
        self.path = _source(path)
        self.on_error = on_error
        self.lines = 0
        self.skipped = 0
        self.warnings: list[str] = []
        self._report = _Report(path=str(self.path))
        _check_text(self.path, _read_head(self.path))
        self._it = self._read()

    def __iter__(self) -> SessionReader:
        return self

    def __next__(self) -> SessionRecord:
        return next(self._it)

    def close(self) -> None:
        """Close the file before the end of the iteration."""
        self._it.close()

    def _sync(self) -> None:
        report = self._report
        self.skipped = report.total_skipped
        self.warnings = list(report.warnings)

    def _read(self) -> Iterator[SessionRecord]:
        path, report = str(self.path), self._report
        try:
            with self.path.open("rb") as f:
                for lineno, raw in _raw_lines(f, self.max_line_bytes, report):
                    self.lines = lineno
                    text = _decode(raw)
                    if not text.strip():
                        continue
                    try:
                        try:
                            obj = json.loads(text)
                        except (ValueError, RecursionError) as exc:
                            if report.unterminated == lineno:
                                report.skipped += 1
                                report.warn(f"{path}:{lineno}: last line is cut (no newline, "
                                            "not valid JSON); skipped")
                                continue
                            raise _fail(path, lineno, None, f"malformed JSON: {exc}") from None
                        record = _record(obj, path, lineno)
                    except ImportFormatError as exc:
                        if self.on_error == "raise":
                            raise
                        report.skipped += 1
                        report.warn(f"{exc}; skipped")
                        self._sync()
                        continue
                    self._sync()
                    yield record
        finally:
            report.unterminated = None  # a complete last JSON line without "\n" is not news
            report.finish(self.max_line_bytes)
            self._sync()


def read_sessions_jsonl(
    path: str | os.PathLike[str],
    *,
    on_error: OnError = "raise",
    max_line_bytes: int = MAX_JSONL_LINE_BYTES,
) -> SessionReader:
    """Read a sessions JSONL file lazily, one :class:`~procmem.types.SessionRecord` per line.

    Args:
        path: The file.
        on_error: ``"raise"`` stops at the first malformed line; ``"skip"`` skips it and counts
            it in the reader's ``skipped`` and ``warnings``.
        max_line_bytes: Lines longer than this many bytes are skipped and counted.

    Returns:
        An iterator of sessions; its ``skipped`` and ``warnings`` are final once it is exhausted.

    Raises:
        ImportFormatError: The file is binary (at once), or, while iterating with
            ``on_error="raise"``, a line is not a JSON object, a field has the wrong type,
            ``actions`` is missing or empty, or a timestamp cannot be read. The message names
            the file, the line and the field; ``.field`` and ``.value`` hold them.
        ConfigurationError: ``on_error`` or ``max_line_bytes`` is invalid.
        OSError: The file cannot be read.
    """
    return SessionReader(path, on_error=on_error, max_line_bytes=max_line_bytes)


# --------------------------------------------------------------------------- writing


def _utc_iso(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat()


def _session_json(record: SessionRecord) -> str:
    obj: dict[str, Any] = {"session_id": record.session_id}
    if record.user_id is not None:
        obj["user_id"] = record.user_id
    if record.group is not None:
        obj["group"] = record.group
    obj["actions"] = record.actions
    if record.outcome is not None:
        obj["outcome"] = record.outcome
    if record.task is not None:
        obj["instructions"] = [record.task]
    if record.timestamps is not None:
        obj["timestamps"] = [_utc_iso(t) for t in record.timestamps]
    if record.namespace != "default":
        obj["namespace"] = record.namespace
    return json.dumps(obj, ensure_ascii=False)


def write_sessions_jsonl(records: Iterable[SessionRecord], path: str | os.PathLike[str]) -> int:
    """Write sessions to a JSONL file atomically, in the format :func:`read_sessions_jsonl` reads.

    The lines go to a temporary file in the same directory, which is synced and then renamed
    over ``path`` (``os.replace``), so readers see the old file or the new one, never a part.
    A replaced file keeps its permissions; a new file is created readable by its owner only
    (0600), like the shell histories its sessions may come from. ``task`` is written as a
    one-item ``instructions`` list, times as ISO-8601 UTC, ``namespace`` only when not default.

    Args:
        records: The sessions.
        path: The file to write; its directory must exist.

    Returns:
        The number of sessions written.

    Raises:
        OSError: The file cannot be written; ``path`` is then unchanged.
    """
    target = Path(path).expanduser()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for record in records:
                line = _session_json(record)
                try:
                    line.encode("utf-8")
                except UnicodeEncodeError:  # lone surrogates: keep them as \\ud800 escapes
                    line = json.dumps(json.loads(line), ensure_ascii=True)
                f.write(line + "\n")
                count += 1
            f.flush()
            os.fsync(f.fileno())
        with suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        os.replace(tmp, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    return count


# --------------------------------------------------------------------------- entry point


def load_history(
    path: str | os.PathLike[str],
    *,
    format: HistoryFormat | None = None,
    gap: float = 1800.0,
    max_actions: int | None = None,
    untimed_chunk: int = UNTIMED_CHUNK,
    max_line_bytes: int | None = None,
    on_error: OnError = "raise",
) -> ImportResult:
    """Read a shell history or sessions JSONL file into sessions (``procmem learn PATH``).

    The format is detected from the content and the file name unless given (see
    :func:`~procmem.io.histories.detect_format`). Shell histories are parsed into commands and cut
    into sessions at pauses longer than ``gap`` seconds (:func:`split_sessions`), with session
    ids stable across re-imports; unreadable lines are skipped and reported. A JSONL file already
    holds sessions: ``gap``, ``max_actions`` and ``untimed_chunk`` do not apply to it.

    Example:
        >>> result = load_history("~/.bash_history")  # doctest: +SKIP
        >>> len(result.sessions), result.format, result.skipped_lines  # doctest: +SKIP
        (42, 'bash', 0)

    Args:
        path: The file (``~`` is expanded).
        format: ``"bash"``, ``"zsh"``, ``"fish"`` or ``"jsonl"``; None to detect it.
        gap: Longest pause inside a session, in seconds (histories only).
        max_actions: Most actions in one session, or None (histories only).
        untimed_chunk: Actions per session when commands have no timestamps (histories only).
        max_line_bytes: Lines longer than this many bytes are skipped and counted; None for
            :data:`~procmem.io.histories.MAX_LINE_BYTES` (64 KiB) for histories and
            :data:`MAX_JSONL_LINE_BYTES` (16 MiB) for JSONL.
        on_error: For JSONL, ``"raise"`` at the first malformed line or ``"skip"`` it.
            Malformed history lines are always skipped: shells write what they write.

    Returns:
        The sessions, the format, the number of commands read, and what was skipped.

    Raises:
        ImportFormatError: The file is binary, or a JSONL line is malformed with
            ``on_error="raise"`` (naming file, line and field).
        ConfigurationError: An option is invalid.
        OSError: The file cannot be read.
    """
    if format is not None and format not in FORMATS:
        raise ConfigurationError(
            f"format must be one of {', '.join(FORMATS[:-1])} or {FORMATS[-1]}, got {format!r}"
        )
    source = _source(path)
    if format is None:
        head = _read_head(source)
        _check_text(source, head)
        format = _sniff(source, head)  # type: ignore[assignment]
    if format == "jsonl":
        reader = read_sessions_jsonl(
            source, on_error=on_error,
            max_line_bytes=MAX_JSONL_LINE_BYTES if max_line_bytes is None else max_line_bytes,
        )
        sessions = list(reader)
        return ImportResult(
            source=str(source), format="jsonl", sessions=sessions,
            entries=sum(len(s.actions) for s in sessions), skipped_lines=reader.skipped,
            warnings=reader.warnings,
        )
    if on_error not in ("raise", "skip"):
        raise ConfigurationError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    limit = MAX_LINE_BYTES if max_line_bytes is None else max_line_bytes
    split_options = {"gap": gap, "max_actions": max_actions, "untimed_chunk": untimed_chunk}
    split_sessions([], **split_options)  # check the options before reading the file
    entries, report = _parse_file(source, format, limit)
    return ImportResult(
        source=str(source), format=format, sessions=split_sessions(entries, **split_options),
        entries=len(entries), skipped_lines=report.total_skipped, warnings=report.warnings,
    )
