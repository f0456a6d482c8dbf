"""shell.py: name validation and the shell lines built from names."""

import shlex
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.exceptions import InvalidName
from kernel.names import is_valid_name
from kernel.server.core import shell
from kernel.server.core.shell import RemoteCommand

GOOD = ["sums", "a", "A9", "x.y", "x_y-z", "foo@bar", "a" * 64, "9lives"]
BAD = ["", "-x", ".x", "_x", "@x", "a b", "a/b", "..", "a;b", "a$(id)", "a\n", "a" * 65, "ä"]
BAD.append("a\x00")


@pytest.mark.parametrize("name", GOOD)
def test_good_names_pass(name):
    assert shell.validate_name("service", name) == name
    assert is_valid_name(name)


@pytest.mark.parametrize("name", BAD)
def test_bad_names_are_refused_with_the_name_shown(name):
    with pytest.raises(InvalidName) as e:
        shell.validate_name("service", name)
    assert str(e.value).startswith(f"service name {name!r} is not allowed")
    assert isinstance(e.value, ValueError)
    assert not is_valid_name(name)


@pytest.mark.parametrize("value", [None, 3, b"sums", ["sums"]])
def test_non_strings_are_refused(value):
    with pytest.raises(InvalidName, match="expected a string"):
        shell.validate_name("unit", value)


def test_long_names_are_shortened_in_messages():
    with pytest.raises(InvalidName) as e:
        shell.validate_name("service", "x" * 500)
    assert len(str(e.value)) < 200


@pytest.mark.parametrize(
    ("given", "unit"),
    [
        ("sums", "sums.service"),
        ("sums.service", "sums.service"),
        ("backup.timer", "backup.timer"),
        ("getty@tty1", "getty@tty1.service"),
        ("sums.tgz", "sums.tgz.service"),  # what systemctl itself would assume
    ],
)
def test_unit_names_get_their_suffix(given, unit):
    assert shell.unit_name(given) == unit


@pytest.mark.parametrize("given", ["x@", "x.", "getty@.service", "a b", "../x"])
def test_bad_unit_names(given):
    with pytest.raises(InvalidName):
        shell.unit_name(given)


def test_systemctl_lines():
    assert shell.systemctl("restart", "sums") == "systemctl restart -- sums.service"
    with pytest.raises(ValueError, match="unknown systemctl action"):
        shell.systemctl("kill", "sums")
    with pytest.raises(InvalidName):
        shell.systemctl("start", "sums; reboot")


def test_journal_tail_is_bounded():
    assert shell.journal_tail("sums", 50) == (
        "journalctl --no-pager -o short-iso -n 50 -u sums.service"
    )
    for bad in (0, -1, shell.MAX_LOG_LINES + 1, True, "5", 2.5, None):
        with pytest.raises(ValueError, match="line count"):
            shell.journal_tail("sums", bad)


def test_systemctl_show_needs_units_and_plain_properties():
    assert shell.systemctl_show(["b", "a.timer"], ["Id", "LoadState"]) == (
        "systemctl show -p Id,LoadState -- b.service a.timer"
    )
    with pytest.raises(ValueError, match="at least one unit"):
        shell.systemctl_show([], ["Id"])
    with pytest.raises(ValueError, match="property"):
        shell.systemctl_show(["a"], ["Id;reboot"])


@given(st.text(max_size=80))
def test_any_accepted_name_stays_one_shell_word(text):
    try:
        unit = shell.unit_name(text)
    except InvalidName:
        return
    assert shlex.split(shell.systemctl("start", text)) == ["systemctl", "start", "--", unit]
    assert shlex.split(shell.journal_tail(text, 5))[-1] == unit


def test_remote_command_defaults():
    c = RemoteCommand(cmd="true")
    assert (c.stdin, dict(c.env), c.cwd, c.timeout, c.title) == (None, {}, None, 600.0, "")
    with pytest.raises(AttributeError):
        c.cmd = "false"  # type: ignore[misc]


def _bash(cmd, stdin=""):
    return subprocess.run(["bash", "-c", cmd], input=stdin, capture_output=True, text=True)


def test_stdin_script_passes_its_exit_code_and_stops():
    r = _bash(shell.run_stdin_script(then="echo checked"), "echo hi; exit 3")
    assert (r.returncode, r.stdout) == (3, "hi\n")
    r = _bash(shell.run_stdin_script(then="echo checked"), "echo hi")
    assert (r.returncode, r.stdout) == (0, "hi\nchecked\n")
    assert shell.run_stdin_script() == "bash -s"


def test_unit_known_check_fails_for_an_unknown_unit():
    # Real bash and real systemctl: an unknown unit fails with or without systemd running.
    r = _bash(shell.unit_known_check("kernel-test-no-such-unit"))
    assert r.returncode == shell.EXIT_UNIT_UNKNOWN
    assert "kernel: deploy script exited 0 but systemd does not know" in r.stderr
    assert "kernel-test-no-such-unit.service" in r.stderr


def test_unit_known_check_without_systemctl():
    r = subprocess.run(
        ["/bin/bash", "-c", shell.unit_known_check("sums")],
        capture_output=True,
        text=True,
        env={"PATH": "/nonexistent"},
    )
    assert r.returncode == shell.EXIT_UNIT_UNKNOWN
    assert "systemctl not found" in r.stderr
