import pytest

from procmem.learning.normalize import (
    collapse_whitespace,
    extract_task_values,
    fill_template,
    normalize_action,
    placeholders_of,
    program,
)


@pytest.mark.parametrize(
    ("action", "template"),
    [
        ("cat /etc/passwd", "cat <PATH>"),
        ("nmap 172.18.1.5 -p 10000", "nmap <IP> -p <NUM>"),
        ("wget https://example.org/a/b.py", "wget <URL>"),
        ("scp notes.txt root@10.0.0.2:/tmp", "scp <FILE> root@<IP>:<PATH>"),
        ("git checkout 3f2a9bc1d", "git checkout <HEX>"),
        ("mv(source='final_report.pdf', destination='temp')",
         "mv(source='<FILE>', destination='<STR>')"),
        ("tail(file_name='log.txt',lines=20)", "tail(file_name='<FILE>',lines=<NUM>)"),
        ("ls -la", "ls -la"),
        ("md5", "md5"),
    ],
)
def test_normalize_templates(action, template):
    assert normalize_action(action).template == template


def test_values_round_trip():
    action = "scp   notes.txt root@10.0.0.2:/tmp"
    norm = normalize_action(action)
    assert norm.values == (("<FILE>", "notes.txt"), ("<IP>", "10.0.0.2"), ("<PATH>", "/tmp"))
    assert fill_template(norm.template, values=norm.values) == collapse_whitespace(action)


def test_long_input_is_fast():
    import time

    t = time.perf_counter()
    normalize_action("x" * 3000 + " " + "a/b" * 500)
    assert time.perf_counter() - t < 0.5


def test_fill_from_history_most_recent():
    hist = ["vim a.txt", "vim notes.txt", "ls"]
    assert fill_template("cat <FILE>", history=hist) == "cat notes.txt"


def test_fill_from_task_quoted_value():
    task = "Please display the contents of 'archive_summary.txt' now."
    assert fill_template("cat(file_name='<FILE>')", task=task) == "cat(file_name='archive_summary.txt')"
    assert extract_task_values(task)["<STR>"] == ["archive_summary.txt"]


def test_fill_missing_value_gives_none():
    assert fill_template("ping <IP>", history=["ls"]) is None
    assert fill_template("ls -la") == "ls -la"


def test_program_and_placeholders():
    assert program("git commit -m x") == "git"
    assert program("cd(folder='x')") == "cd"
    assert program("   ") == ""
    assert placeholders_of("scp <FILE> <IP>:<PATH>") == ["<FILE>", "<IP>", "<PATH>"]
