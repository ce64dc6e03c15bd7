"""Importers: shell histories (bash, zsh, fish) and sessions JSONL, read into sessions.

Start with :func:`load_history`, what ``procmem learn PATH`` calls::

    from procmem.io import default_history_paths, load_history

    for path in default_history_paths():
        result = load_history(path)        # format detected, sessions cut at 30-minute pauses
        print(path, result.format, len(result.sessions), result.skipped_lines)
"""

from procmem.io.histories import (
    FORMATS,
    MAX_LINE_BYTES,
    UNTIMED_CHUNK,
    HistoryEntry,
    HistoryFormat,
    default_history_paths,
    detect_format,
    parse_bash_history,
    parse_fish_history,
    parse_zsh_history,
    split_sessions,
)
from procmem.io.sessions import (
    MAX_JSONL_LINE_BYTES,
    ImportResult,
    SessionReader,
    load_history,
    read_sessions_jsonl,
    write_sessions_jsonl,
)

__all__ = [
    "FORMATS",
    "MAX_JSONL_LINE_BYTES",
    "MAX_LINE_BYTES",
    "UNTIMED_CHUNK",
    "HistoryEntry",
    "HistoryFormat",
    "ImportResult",
    "SessionReader",
    "default_history_paths",
    "detect_format",
    "load_history",
    "parse_bash_history",
    "parse_fish_history",
    "parse_zsh_history",
    "read_sessions_jsonl",
    "split_sessions",
    "write_sessions_jsonl",
]
