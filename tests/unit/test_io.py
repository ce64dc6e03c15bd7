"""Importers: shell histories (bash, zsh, fish), sessionisation, sessions JSONL."""

from __future__ import annotations

import json
import logging
import os
import random
import stat
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import procmem.io as pio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from procmem.errors import ConfigurationError, ImportFormatError
from procmem.io import (
    HistoryEntry,
    ImportResult,
    default_history_paths,
    detect_format,
    load_history,
    parse_bash_history,
    parse_fish_history,
    parse_zsh_history,
    read_sessions_jsonl,
    split_sessions,
    write_sessions_jsonl,
)
from procmem.types import SessionRecord

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z
DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def metafy(text: str) -> bytes:
    """Encode as zsh writes its history: NUL and 0x83-0xA2 become 0x83, byte ^ 0x20."""
    out = bytearray()
    for b in text.encode():
        if b == 0 or 0x83 <= b <= 0xA2:
            out += bytes([0x83, b ^ 0x20])
        else:
            out.append(b)
    return bytes(out)


def test_public_api_is_pinned():
    assert set(pio.__all__) == {
        "FORMATS", "MAX_JSONL_LINE_BYTES", "MAX_LINE_BYTES", "UNTIMED_CHUNK", "HistoryEntry",
        "HistoryFormat", "ImportResult", "SessionReader", "default_history_paths",
        "detect_format", "load_history", "parse_bash_history", "parse_fish_history",
        "parse_zsh_history", "read_sessions_jsonl", "split_sessions", "write_sessions_jsonl",
    }


# --------------------------------------------------------------------------- bash


def test_bash_plain_one_command_per_line(tmp_path):
    path = write(tmp_path / ".bash_history", "cd ~/src/app\ngit pull --rebase\n\nmake test\n")
    entries = parse_bash_history(path)
    assert [e.command for e in entries] == ["cd ~/src/app", "git pull --rebase", "", "make test"]
    assert [e.line for e in entries] == [1, 2, 3, 4]
    assert all(e.timestamp is None for e in entries)
    assert entries[0].source == str(path.resolve())


def test_bash_histtimeformat_stamps_and_multiline(tmp_path):
    path = write(
        tmp_path / ".bash_history",
        f"#{T0}\ngit status\n#{T0 + 5}\nfor f in *.log; do\n  gzip \"$f\"\ndone\n"
        f"#{T0 + 9}\ngit commit -m 'rotate logs'\n",
    )
    entries = parse_bash_history(path)
    assert [e.command for e in entries] == [
        "git status", 'for f in *.log; do\n  gzip "$f"\ndone', "git commit -m 'rotate logs'",
    ]
    assert [e.timestamp for e in entries] == [utc(T0), utc(T0 + 5), utc(T0 + 9)]
    assert [e.line for e in entries] == [2, 4, 8]


def test_bash_lines_before_first_stamp_are_separate_untimed_commands(tmp_path):
    path = write(tmp_path / ".bash_history", f"ls\npwd\n#{T0}\nwhoami\n#{T0 + 1}\n")
    entries = parse_bash_history(path)
    assert [(e.command, e.timestamp) for e in entries] == [
        ("ls", None), ("pwd", None), ("whoami", utc(T0)),
    ]


def test_bash_out_of_range_stamp_keeps_command_without_time(tmp_path):
    path = write(tmp_path / ".bash_history", "#99999999999999999999\necho hi\n")
    result = load_history(path)
    assert result.sessions[0].actions == ["echo hi"]
    assert result.sessions[0].timestamps is None
    assert any("out of range" in w for w in result.warnings)


def test_crlf_and_utf8_bom_are_stripped(tmp_path):
    path = write(tmp_path / ".bash_history", b"\xef\xbb\xbfls -la\r\ncd /tmp\r\n")
    assert [e.command for e in parse_bash_history(path)] == ["ls -la", "cd /tmp"]


# --------------------------------------------------------------------------- zsh


def test_zsh_extended_with_multiline_and_metafied_bytes(tmp_path):
    data = (
        metafy(f": {T0}:0;git status\n")
        + metafy(f": {T0 + 4}:12;docker run --rm \\\n  -v $PWD:/src \\\n  builder make\n")
        + metafy(f": {T0 + 30}:0;git commit -m 'naïve → résumé 不'\n")
    )
    assert b"\x83" in data  # the sample really is metafied
    path = write(tmp_path / ".zsh_history", data)
    entries = parse_zsh_history(path)
    assert [e.command for e in entries] == [
        "git status",
        "docker run --rm \n  -v $PWD:/src \n  builder make",
        "git commit -m 'naïve → résumé 不'",
    ]
    assert [e.timestamp for e in entries] == [utc(T0), utc(T0 + 4), utc(T0 + 30)]
    assert [e.line for e in entries] == [1, 2, 5]


def test_zsh_plain_history_and_unmetafied_utf8(tmp_path):
    # "ă" is C4 83 in UTF-8: a file not written by zsh must not be "unmetafied" into garbage.
    path = write(tmp_path / ".zsh_history", "ls\necho ăbc\nvim ~/.zshrc\n")
    entries = parse_zsh_history(path)
    assert [e.command for e in entries] == ["ls", "echo ăbc", "vim ~/.zshrc"]
    assert all(e.timestamp is None for e in entries)


def test_zsh_parse_of_a_bash_history_with_timestamps_is_refused(tmp_path):
    path = write(tmp_path / "history", f"#{T0}\nls\n#{T0 + 5}\ngit status\n")
    with pytest.raises(ImportFormatError, match="format='bash'") as err:
        parse_zsh_history(path)
    assert err.value.field == "format" and ":1:" in str(err.value)
    with pytest.raises(ImportFormatError, match="--format bash"):
        load_history(path, format="zsh")
    assert [e.command for e in parse_bash_history(path)] == ["ls", "git status"]
    # In a zsh history, a stray "#<digits>" line is kept as a command, with a warning.
    zsh = write(tmp_path / ".zsh_history", f": {T0}:0;ls\n#42\n: {T0 + 1}:0;pwd\n")
    assert [e.command for e in parse_zsh_history(zsh)] == ["ls", "#42", "pwd"]
    assert any("look like bash timestamps" in w for w in load_history(zsh, format="zsh").warnings)


def test_zsh_continuation_cut_by_end_of_file_is_dropped(tmp_path):
    path = write(tmp_path / ".zsh_history", f": {T0}:0;ls\n: {T0 + 1}:0;make \\\n  all \\\n")
    result = load_history(path)
    assert result.format == "zsh"
    assert result.sessions[0].actions == ["ls"]
    assert result.skipped_lines == 2
    assert any("cut by the end of the file" in w for w in result.warnings)


def test_zsh_header_cut_mid_write_is_dropped(tmp_path):
    path = write(tmp_path / ".zsh_history", f": {T0}:0;ls\n: {T0 + 1}:0;pwd\n: 17000")
    result = load_history(path)
    assert result.sessions[0].actions == ["ls", "pwd"]
    assert result.skipped_lines == 1


# --------------------------------------------------------------------------- fish


FISH_SAMPLE = (
    "- cmd: cd ~/projects/api\n"
    f"  when: {T0}\n"
    "- cmd: echo \"line one\\nline two\" > notes.txt\n"
    f"  when: {T0 + 3}\n"
    "  paths:\n"
    "    - notes.txt\n"
    "- cmd: printf '%s\\\\n' a b\n"
    f"  when: {T0 + 7}\n"
    "- cmd: echo 'unclosed: quote # not a comment\n"
    f"  when: {T0 + 8}\n"
    "- cmd: git log --oneline\n"
)


def test_fish_history_with_escapes_and_invalid_yaml(tmp_path):
    path = write(tmp_path / "fish_history", FISH_SAMPLE)
    entries = parse_fish_history(path)
    assert [e.command for e in entries] == [
        "cd ~/projects/api",
        'echo "line one\nline two" > notes.txt',
        "printf '%s\\n' a b",
        "echo 'unclosed: quote # not a comment",
        "git log --oneline",
    ]
    assert [e.timestamp for e in entries] == [
        utc(T0), utc(T0 + 3), utc(T0 + 7), utc(T0 + 8), None,
    ]
    assert [e.line for e in entries] == [1, 3, 7, 9, 11]


def test_fish_unknown_top_level_lines_are_counted(tmp_path):
    path = write(tmp_path / "fish_history", f"- cmd: ls\n  when: {T0}\ngarbage line\n")
    result = load_history(path)
    assert result.sessions[0].actions == ["ls"]
    assert result.skipped_lines == 1
    assert any(":3: not a fish history line" in w for w in result.warnings)


@given(st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc"),
                                      whitelist_characters="\n\t\\"),
                        min_size=1).filter(lambda s: s.strip() and not s[0].isspace()),
                min_size=1, max_size=5))
@settings(max_examples=60, deadline=None)
def test_fish_escape_round_trip(commands):
    with tempfile.TemporaryDirectory() as d:
        lines = []
        for i, cmd in enumerate(commands):
            lines.append("- cmd: " + cmd.replace("\\", "\\\\").replace("\n", "\\n"))
            lines.append(f"  when: {T0 + i}")
        path = write(Path(d) / "fish_history", "\n".join(lines) + "\n")
        assert [e.command for e in parse_fish_history(path)] == commands


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("history", f"#{T0}\nls\n", "bash"),
        ("history", f": {T0}:0;ls\n", "zsh"),
        ("history", f"- cmd: ls\n  when: {T0}\n", "fish"),
        ("history", '{"session_id": "s", "actions": ["ls"]}\n', "jsonl"),
        ("history", "ls\ncd /tmp\n", "bash"),
        (".zsh_history", "ls\ncd /tmp\n", "zsh"),
        (".zhistory", "ls\n", "zsh"),
        ("fish_history", "", "fish"),
        (".bash_history", f": {T0}:0;ls\n", "zsh"),  # content wins over the name
        ("sessions.jsonl", "", "jsonl"),
        ("sessions.jsonl", "ls\n", "jsonl"),  # then refused line by line as malformed JSON
        ("history", f"#{T0}\n: 1:0;echo\n#{T0 + 1}\nls\n", "bash"),  # the majority decides
        ("history", "{ echo a; echo b; } > out\n", "bash"),  # a brace group is not JSON
    ],
)
def test_detect_format(tmp_path, name, content, expected):
    assert detect_format(write(tmp_path / name, content)) == expected


def test_detect_jsonl_with_a_first_line_longer_than_the_sniffed_head(tmp_path):
    record = {"session_id": "s", "actions": [f"echo {i}" for i in range(3000)]}
    path = write(tmp_path / "data", json.dumps(record) + "\n")
    assert detect_format(path) == "jsonl"
    assert load_history(path).entries == 3000


def test_detect_plain_zsh_from_metafied_bytes(tmp_path):
    path = write(tmp_path / "history", metafy("echo ăîș → ok\nls\n"))
    assert detect_format(path) == "zsh"
    assert load_history(path).sessions[0].actions == ["echo ăîș → ok", "ls"]


# --------------------------------------------------------------------------- robustness


def test_binary_file_is_refused_naming_the_file(tmp_path):
    path = write(tmp_path / "history.db", b"SQLite format 3\x00" + bytes(range(256)) * 4)
    with pytest.raises(ImportFormatError, match="history.db.*binary") as info:
        load_history(path)
    assert info.value.field == "content"
    with pytest.raises(ImportFormatError):
        detect_format(path)
    with pytest.raises(ImportFormatError):
        read_sessions_jsonl(path)


def test_random_bytes_without_nul_are_refused(tmp_path):
    rng = random.Random(7)
    noise = bytes(rng.choice(range(1, 256)) for _ in range(4000))
    with pytest.raises(ImportFormatError, match="binary"):
        load_history(write(tmp_path / "blob", noise))


def test_non_utf8_bytes_survive_as_replacement_characters(tmp_path):
    latin1 = "cd café\n".encode("latin-1")
    cp1251 = "echo Привет, мир и все остальные\n".encode("cp1251") * 20
    path = write(tmp_path / ".bash_history", latin1 + cp1251 + b"ls\n")
    result = load_history(path)
    actions = result.sessions[0].actions
    assert actions[0] == "cd caf\ufffd"
    assert actions[-1] == "ls"
    assert len(actions) == 22
    json.dumps(actions).encode("utf-8")  # the commands can be stored again


def test_truncated_last_line_is_kept_and_reported(tmp_path):
    path = write(tmp_path / ".bash_history", f"#{T0}\nmake\n#{T0 + 2}\ngit pu")
    result = load_history(path)
    assert result.sessions[0].actions == ["make", "git pu"]
    assert any(":4: last line has no newline" in w for w in result.warnings)


def test_huge_line_is_skipped_and_counted(tmp_path):
    huge = "echo " + "x" * (70 * 1024)
    path = write(tmp_path / ".bash_history", f"ls\n{huge}\npwd\n{huge}")
    result = load_history(path)
    assert result.sessions[0].actions == ["ls", "pwd"]
    assert result.skipped_lines == 2
    assert any("skipped 2 line(s) longer than 65536 bytes (first at line 2)" in w
               for w in result.warnings)


def test_max_line_bytes_is_configurable_and_inclusive(tmp_path):
    path = write(tmp_path / ".bash_history", "a" * 10 + "\n" + "b" * 11 + "\nc\n")
    assert [e.command for e in parse_bash_history(path, max_line_bytes=10)] == ["a" * 10, "c"]
    with pytest.raises(ConfigurationError, match="max_line_bytes"):
        parse_bash_history(path, max_line_bytes=0)


def test_nul_bytes_after_the_head_are_removed(tmp_path):
    head = b"".join(f"echo {i}\n".encode() for i in range(2000))  # > 8 KiB of good lines
    path = write(tmp_path / ".bash_history", head + b"\x00" * 500 + b"git status\n")
    result = load_history(path, untimed_chunk=10_000)
    assert result.sessions[0].actions[-1] == "git status"
    assert any("NUL" in w for w in result.warnings)


def test_huge_line_warning_is_logged(tmp_path, caplog):
    path = write(tmp_path / ".bash_history", "ls\n" + "y" * 200 + "\n")
    with caplog.at_level(logging.WARNING, logger="procmem.io"):
        parse_bash_history(path, max_line_bytes=100)
    assert "skipped 1 line(s) longer than 100 bytes" in caplog.text


def test_empty_file_gives_no_sessions(tmp_path):
    result = load_history(write(tmp_path / ".bash_history", b""))
    assert result == ImportResult(source=str((tmp_path / ".bash_history").resolve()),
                                  format="bash")


@given(
    data=st.binary(max_size=3000),
    name=st.sampled_from(["history", ".zsh_history", "fish_history", "s.jsonl"]),
    fmt=st.sampled_from([None, "bash", "zsh", "fish", "jsonl"]),
    on_error=st.sampled_from(["raise", "skip"]),
    max_line_bytes=st.sampled_from([None, 1, 16, 4096]),
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_bytes_raise_only_import_format_error(data, name, fmt, on_error, max_line_bytes):
    with tempfile.TemporaryDirectory() as d:
        path = write(Path(d) / name, data)
        try:
            result = load_history(path, format=fmt, on_error=on_error,
                                  max_line_bytes=max_line_bytes)
        except ImportFormatError as exc:
            assert str(path.resolve()) in str(exc)
            return
        assert isinstance(result, ImportResult)
        for session in result.sessions:
            for action in session.actions:
                action.encode("utf-8")


@given(st.binary(max_size=2000).map(lambda b: b.replace(b"\x00", b"")))
@settings(max_examples=150, deadline=None)
def test_arbitrary_text_never_fails_as_a_history(data):
    with tempfile.TemporaryDirectory() as d:
        path = write(Path(d) / ".bash_history", data)
        try:
            load_history(path, format="zsh")
            load_history(path, format="fish")
            load_history(path, format="bash")
        except ImportFormatError as exc:
            assert "binary" in str(exc)


# --------------------------------------------------------------------------- sessions


def entry(cmd: str, t: int | None, line: int, source: str = "/h") -> HistoryEntry:
    return HistoryEntry(command=cmd, timestamp=None if t is None else utc(t), source=source,
                        line=line)


def test_split_at_gaps_longer_than_gap_seconds():
    entries = [entry("a", T0, 1), entry("b", T0 + 1800, 2), entry("c", T0 + 3601, 3),
               entry("d", T0 + 3602, 4)]
    sessions = split_sessions(entries, gap=1800)
    assert [s.actions for s in sessions] == [["a", "b"], ["c", "d"]]  # exactly gap: same session
    assert sessions[1].timestamps == [utc(T0 + 3601), utc(T0 + 3602)]


def test_split_on_backward_jump_source_change_and_timed_untimed_border():
    entries = [
        entry("a", T0 + 10_000, 1), entry("b", T0, 2),  # another terminal's older block
        entry("c", T0 + 5, 3), entry("d", T0 + 6, 4, source="/other"),
        entry("e", None, 5, source="/other"),
    ]
    sessions = split_sessions(entries)
    assert [s.actions for s in sessions] == [["a"], ["b", "c"], ["d"], ["e"]]
    assert sessions[-1].timestamps is None


def test_untimed_entries_are_chunked_and_blank_commands_dropped():
    entries = [entry(f"cmd {i}" if i % 10 else "   ", None, i + 1) for i in range(120)]
    sessions = split_sessions(entries)
    assert [len(s.actions) for s in sessions] == [50, 50, 8]
    assert all(a.strip() for s in sessions for a in s.actions)
    assert [len(s.actions) for s in split_sessions(entries, untimed_chunk=100)] == [100, 8]


def test_max_actions_cuts_long_sessions_with_unique_ids():
    entries = [entry("ls", T0, i + 1) for i in range(5)]  # same command, same second
    sessions = split_sessions(entries, max_actions=2)
    assert [len(s.actions) for s in sessions] == [2, 2, 1]
    assert len({s.session_id for s in sessions}) == 3


@pytest.mark.parametrize(
    "options",
    [{"gap": 0}, {"gap": -1.0}, {"gap": float("nan")}, {"max_actions": 0},
     {"untimed_chunk": 0}, {"untimed_chunk": True}],
)
def test_split_options_are_checked(options):
    with pytest.raises(ConfigurationError):
        split_sessions([], **options)


def test_session_ids_are_stable_across_imports_and_front_trimming(tmp_path):
    lines = []
    for day in range(4):
        for k in range(3):
            lines += [f"#{T0 + day * 86_400 + k * 60}", f"make step{k} day{day}"]
    path = write(tmp_path / ".bash_history", "\n".join(lines) + "\n")
    first = load_history(path)
    again = load_history(path)
    assert [s.session_id for s in first.sessions] == [s.session_id for s in again.sessions]
    assert len({s.session_id for s in first.sessions}) == 4
    # bash trims its file from the front (HISTFILESIZE): the surviving sessions keep their ids.
    write(path, "\n".join(lines[6:]) + "\n")
    trimmed = load_history(path)
    assert [s.session_id for s in trimmed.sessions] == [s.session_id for s in first.sessions[1:]]
    # The same content in another file is another session.
    other = write(tmp_path / "copy_history", "\n".join(lines) + "\n")
    assert load_history(other).sessions[0].session_id != first.sessions[0].session_id


def test_load_history_uses_gap_and_counts_entries(tmp_path):
    path = write(tmp_path / ".zsh_history",
                 f": {T0}:0;ls\n: {T0 + 60}:0;pwd\n: {T0 + 7200}:0;make\n")
    assert [s.actions for s in load_history(path).sessions] == [["ls", "pwd"], ["make"]]
    assert len(load_history(path, gap=3.0 * 3600).sessions) == 1
    assert load_history(path).entries == 3


def test_load_history_rejects_unknown_format(tmp_path):
    with pytest.raises(ConfigurationError, match="format"):
        load_history(write(tmp_path / "h", "ls\n"), format="csv")  # type: ignore[arg-type]


def test_explicit_format_overrides_detection(tmp_path):
    path = write(tmp_path / "h", f": {T0}:0;ls\n")
    assert load_history(path, format="bash").sessions[0].actions == [f": {T0}:0;ls"]


# --------------------------------------------------------------------------- default paths


def test_default_history_paths_follow_the_shells(tmp_path, monkeypatch):
    home, zdot, xdg = tmp_path / "home", tmp_path / "zdot", tmp_path / "xdg"
    for d in (home, zdot, xdg / "fish"):
        d.mkdir(parents=True)
    for p in (home / ".bash_history", home / ".zsh_history", zdot / ".zsh_history",
              zdot / ".zhistory", xdg / "fish" / "fish_history", tmp_path / "custom"):
        write(p, "ls\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HISTFILE", str(tmp_path / "custom"))
    monkeypatch.setenv("ZDOTDIR", str(zdot))
    monkeypatch.setenv("XDG_DATA_HOME", str(xdg))
    assert default_history_paths() == [
        (tmp_path / "custom").resolve(), (home / ".bash_history").resolve(),
        (zdot / ".zsh_history").resolve(), (zdot / ".zhistory").resolve(),
        (xdg / "fish" / "fish_history").resolve(),
    ]
    for var in ("HISTFILE", "ZDOTDIR", "XDG_DATA_HOME"):
        monkeypatch.delenv(var)
    assert default_history_paths() == [(home / ".bash_history").resolve(),
                                       (home / ".zsh_history").resolve()]
    monkeypatch.setenv("HISTFILE", str(home / ".bash_history"))  # listed once
    assert default_history_paths()[0] == (home / ".bash_history").resolve()
    assert len(default_history_paths()) == 2
    monkeypatch.setenv("HOME", str(tmp_path / "nobody"))
    monkeypatch.delenv("HISTFILE")
    assert default_history_paths() == []


# --------------------------------------------------------------------------- sessions JSONL


JSONL_SAMPLE = (
    '{"session_id": "s1", "user_id": "u1", "group": "deploy", '
    '"actions": ["git pull", "make deploy"], "outcome": "success", '
    '"instructions": ["Deploy the", "new release"], '
    '"timestamps": ["2024-05-01T10:00:00Z", "2024-05-01T12:00:09+02:00"], "cwd": ["/", "/"]}\n'
    "\n"
    '{"session_id": "s2", "actions": ["ls"], "outcome": "failure"}\n'
)


def test_read_sessions_jsonl(tmp_path):
    path = write(tmp_path / "sessions.jsonl", JSONL_SAMPLE)
    reader = read_sessions_jsonl(path)
    s1, s2 = list(reader)
    assert s1 == SessionRecord(
        session_id="s1", user_id="u1", group="deploy", actions=["git pull", "make deploy"],
        outcome="success", task="Deploy the new release",
        timestamps=[datetime(2024, 5, 1, 10, 0, 0, tzinfo=timezone.utc),
                    datetime(2024, 5, 1, 10, 0, 9, tzinfo=timezone.utc)],
    )
    assert s1.timestamps[1].utcoffset() == timedelta(0)
    assert (s2.session_id, s2.actions, s2.outcome, s2.task) == ("s2", ["ls"], "failure", None)
    assert (reader.lines, reader.skipped, reader.warnings) == (3, 0, [])


def test_turns_keep_each_actions_instruction(tmp_path):
    path = write(tmp_path / "turns.jsonl", json.dumps(
        {"session_id": "t", "actions": ["cd('docs')", "mv('a', 'b')", "grep('x')"], "turn": [0, 0, 1],
         "instructions": ["Move a to b in docs.", "Search b for x."]}) + "\n")
    (s,) = list(read_sessions_jsonl(path))
    assert s.task == "Move a to b in docs. Search b for x."
    assert [s.task_at(i) for i in range(3)] == ["Move a to b in docs.", "Move a to b in docs.", "Search b for x."]
    assert SessionRecord.model_validate_json(s.model_dump_json()) == s  # persisted with the session


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ('{"session_id": "x", "actions": ["ls"', None, "malformed JSON"),
        ('["ls"]', None, "expected a JSON object"),
        ('{"session_id": "x"}', "actions", "is missing"),
        ('{"session_id": "x", "actions": []}', "actions", "must not be empty"),
        ('{"session_id": "x", "actions": "ls"}', "actions", "must be a list"),
        ('{"session_id": "x", "actions": ["ls", 3]}', "actions[1]", "non-blank string"),
        ('{"session_id": "x", "actions": ["ls", "  "]}', "actions[1]", "non-blank string"),
        ('{"session_id": 7, "actions": ["ls"]}', "session_id", "non-empty string"),
        ('{"actions": ["ls"], "user_id": 5}', "user_id", "string or null"),
        ('{"actions": ["ls"], "outcome": "maybe"}', "outcome", "outcome must be"),
        ('{"actions": ["ls"], "instructions": [1]}', "instructions", "list of strings"),
        ('{"actions": ["ls"], "timestamps": ["2024-01-01", "x"]}', "timestamps", "has 2 items"),
        ('{"actions": ["ls"], "instructions": ["a"], "turn": [1]}', "turn", "not an index"),
        ('{"actions": ["ls"], "instructions": ["a"], "turn": [0, 0]}', "turn", "has 2 items"),
        ('{"actions": ["ls"], "turn": [0]}', "turn", "needs a list of instructions"),
        ('{"actions": ["ls"], "instructions": ["a"], "turn": ["0"]}', "turn", "list of integers"),
        ('{"actions": ["ls"], "timestamps": ["yesterday"]}', "timestamps[0]", "ISO-8601"),
    ],
)
def test_malformed_jsonl_names_file_line_and_field(tmp_path, line, field, message):
    path = write(tmp_path / "bad.jsonl", '{"session_id": "ok", "actions": ["ls"]}\n' + line + "\n")
    with pytest.raises(ImportFormatError, match=message) as info:
        list(read_sessions_jsonl(path))
    assert str(info.value).startswith(f"{path.resolve()}:2: ")
    assert info.value.field == field
    if field:
        assert f"field {field!r}" in str(info.value)
    result_reader = read_sessions_jsonl(path, on_error="skip")
    assert [s.session_id for s in result_reader] == ["ok"]
    assert result_reader.skipped == 1
    assert result_reader.warnings[0].startswith(f"{path.resolve()}:2: ")


def test_load_history_jsonl_skip_reports_counts(tmp_path):
    path = write(tmp_path / "s.jsonl", JSONL_SAMPLE + "not json\n" + '{"actions": []}\n')
    with pytest.raises(ImportFormatError, match=r":4: malformed JSON"):
        load_history(path)
    result = load_history(path, on_error="skip")
    assert (result.format, len(result.sessions), result.entries, result.skipped_lines) == (
        "jsonl", 2, 3, 2)
    assert len(result.warnings) == 2


def test_jsonl_truncated_last_line_is_skipped_even_when_raising(tmp_path):
    path = write(tmp_path / "s.jsonl", JSONL_SAMPLE + '{"session_id": "s3", "actions": ["l')
    result = load_history(path)
    assert [s.session_id for s in result.sessions] == ["s1", "s2"]
    assert result.skipped_lines == 1
    assert "last line is cut" in result.warnings[0]
    complete = write(tmp_path / "t.jsonl", JSONL_SAMPLE.rstrip("\n"))  # no final newline: fine
    assert (len(load_history(complete).sessions), load_history(complete).warnings) == (2, [])


def test_missing_session_id_is_derived_stably(tmp_path):
    path = write(tmp_path / "s.jsonl", '{"actions": ["ls"]}\n{"actions": ["ls"]}\n')
    ids = [s.session_id for s in read_sessions_jsonl(path)]
    assert ids == [s.session_id for s in read_sessions_jsonl(path)]
    assert len(set(ids)) == 2


def test_jsonl_epoch_and_naive_timestamps_are_utc(tmp_path):
    path = write(tmp_path / "s.jsonl",
                 json.dumps({"actions": ["a", "b"], "timestamps": [T0, "2023-11-14T22:13:21"]}))
    (s,) = read_sessions_jsonl(path)
    assert s.timestamps == [utc(T0), utc(T0 + 1)]


def test_read_on_error_option_is_checked(tmp_path):
    with pytest.raises(ConfigurationError, match="on_error"):
        read_sessions_jsonl(write(tmp_path / "s.jsonl", ""), on_error="ignore")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["bfcl", "kypo", "sea"])
def test_reads_the_shared_evaluation_data(name):
    path = DATA / name / "sessions.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not present")
    result = load_history(path)
    assert result.format == "jsonl" and result.skipped_lines == 0
    assert len(result.sessions) == {"bfcl": 200, "kypo": 182, "sea": 25}[name]
    if name == "bfcl":
        assert all(s.task and s.outcome for s in result.sessions)
    if name == "kypo":
        assert all(s.timestamps and s.group for s in result.sessions)


def test_write_is_atomic_and_keeps_permissions(tmp_path):
    path = tmp_path / "out.jsonl"
    records = [SessionRecord(session_id="a", actions=["ls"]),
               SessionRecord(session_id="b", actions=["pwd"], namespace="agent-7")]
    assert write_sessions_jsonl(records, path) == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    os.chmod(path, 0o644)
    before = path.read_bytes()

    def broken():
        yield SessionRecord(session_id="c", actions=["rm -rf build"])
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_sessions_jsonl(broken(), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no temp file left
    write_sessions_jsonl(records[:1], path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [s.session_id for s in read_sessions_jsonl(path)] == ["a"]


def test_lone_surrogates_never_become_records(tmp_path):
    # A store cannot hold text that is not valid Unicode, so records refuse it up front.
    with pytest.raises(ValueError, match="actions"):
        SessionRecord(session_id="s", actions=["echo \udcff"])
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"session_id": "s", "actions": ["echo \\udcff"]}\n')
    with pytest.raises(ImportFormatError):
        list(read_sessions_jsonl(path))


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_action = _text.filter(lambda s: s.strip())
_time = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1),
                     timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-7))]))


@st.composite
def session_records(draw):
    actions = draw(st.lists(_action, min_size=1, max_size=6))
    stamps = draw(st.none() | st.lists(_time, min_size=len(actions), max_size=len(actions)))
    return SessionRecord(
        session_id=draw(_text.filter(bool)),
        actions=actions,
        outcome=draw(st.sampled_from([None, "success", "failure"])),
        task=draw(st.none() | _text),
        user_id=draw(st.none() | _text),
        group=draw(st.none() | _text),
        timestamps=stamps,
        namespace=draw(st.sampled_from(["default", "agent-1"])),
    )


@given(st.lists(session_records(), max_size=5))
@settings(max_examples=60, deadline=None)  # each write fsyncs
def test_jsonl_write_read_round_trip(records):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "sessions.jsonl"
        assert write_sessions_jsonl(records, path) == len(records)
        reader = read_sessions_jsonl(path)
        assert list(reader) == records
        assert reader.skipped == 0
        assert detect_format(path) == "jsonl"
