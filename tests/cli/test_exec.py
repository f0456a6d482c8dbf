"""``kernel exec`` end to end: a real server, real agents, the real command."""

from __future__ import annotations

import json
import signal
import subprocess
import time

from .conftest import KERNEL, Fleet, Kernel

# -- exit statuses ------------------------------------------------------------------------------


def test_one_host_ok(kernel: Kernel) -> None:
    out = kernel.ok("exec", "-s", "web1", "--", "echo", "hello")
    assert out.stdout == "web1: hello\n"
    assert out.stderr.startswith("job ") and "1 ok (1 host" in out.stderr


def test_all_ok_on_a_tag(kernel: Kernel) -> None:
    out = kernel.ok("exec", "-t", "web", "--", "echo", "hi")
    assert sorted(out.stdout.splitlines()) == ["web1: hi", "web2: hi"]
    assert "2 ok (2 hosts" in out.stderr


def test_one_host_failed(kernel: Kernel) -> None:
    out = kernel.run(
        "exec", "-s", "web1,web2", "--", 'if [ "$(hostname)" ]; then echo x; fi; exit 0'
    )
    assert out.returncode == 0
    out = kernel.run("exec", "-s", "web1", "-s", "web2", "--", "test -e /nonexistent-kernel")
    assert out.returncode == 4, out
    assert "2 failed" in out.stderr
    assert "failed: web[1-2]: exit 1" in out.stderr


def test_mixed_failed_and_ok(kernel: Kernel, fleet: Fleet) -> None:
    # The same command fails on one host only: db1 gets a different environment.
    cmd = 'test "$ROLE" != db || exit 7; echo fine'
    out = kernel.run("exec", "-s", "web1", "-s", "db1", "-e", "ROLE=web", "--", cmd)
    assert out.returncode == 0, out
    job_ids = []
    for name, role in (("web1", "web"), ("db1", "db")):
        r = kernel.run("exec", "-s", name, "-e", f"ROLE={role}", "--no-wait", "--", cmd)
        job_ids.append(int(r.stdout))
    states = [fleet.wait_job(j)["runs"][0]["state"] for j in job_ids]
    assert states == ["ok", "failed"]


def test_one_host_unreachable(kernel: Kernel) -> None:
    out = kernel.run("exec", "-s", "web1", "-s", "dead1", "--", "echo", "up")
    assert out.returncode == 3, out
    assert "web1: up" in out.stdout
    assert "1 ok, 1 unreachable" in out.stderr
    assert "unreachable: dead1:" in out.stderr


def test_unreachable_wins_over_failed(kernel: Kernel) -> None:
    out = kernel.run("exec", "-s", "web1", "-s", "dead1", "--", "false")
    assert out.returncode == 3
    assert "failed: web1: exit 1" in out.stderr and "unreachable: dead1" in out.stderr


def test_timeout(kernel: Kernel) -> None:
    out = kernel.run("exec", "-s", "web1", "--timeout", "0.5", "--", "sleep 5")
    assert out.returncode == 4
    assert "timed_out: web1: timed out" in out.stderr


def test_unknown_server_is_an_api_error(kernel: Kernel) -> None:
    out = kernel.run("exec", "-s", "nosuch", "--", "true")
    assert out.returncode == 1
    assert out.stderr == "kernel: no such server(s): nosuch\n"


# -- what reaches the host ------------------------------------------------------------------------

AWKWARD = (
    "printf '%s|' \"a  b\" 'c\"d' $(echo sub) \"$(echo 'x y')\" ü€ 'tab\there'\n"
    "echo; echo second line"
)


def test_command_text_reaches_the_shell_unchanged(kernel: Kernel) -> None:
    local = subprocess.run(["bash", "-c", AWKWARD], capture_output=True, text=True, check=True)
    out = kernel.ok("exec", "-s", "web1", "-N", "--", AWKWARD)
    assert out.stdout == local.stdout
    assert "ü€" in out.stdout and "$(" not in out.stdout


def test_words_are_joined_like_ssh(kernel: Kernel) -> None:
    out = kernel.ok("exec", "-s", "web1", "-N", "--", "echo", "$((6*7))", "'$HOME is here'")
    assert out.stdout == "42 $HOME is here\n"
    # Without `--`, the first word that is not an option starts the command.
    out = kernel.ok("exec", "-s", "web1", "-N", "echo", "-n", "x", "-s")
    assert out.stdout == "x -s\n"


def test_job_records_the_command_verbatim(kernel: Kernel, fleet: Fleet) -> None:
    out = kernel.run("exec", "-s", "web1", "--no-wait", "--", AWKWARD)
    job = fleet.wait_job(int(out.stdout))
    assert job["cmd"] == AWKWARD


def test_script_file_with_arguments(kernel: Kernel, tmp_path) -> None:
    script = tmp_path / "s.sh"
    script.write_text(
        'echo "args: $*"\necho "ünï $((1+1))"\nread -r x || echo "stdin is the script"\n'
    )
    out = kernel.ok("exec", "-s", "web1", "-N", "--script", str(script), "--", "a b", "$c")
    assert out.stdout.splitlines()[:2] == ["args: a b $c", "ünï 2"]


def test_script_on_stdin(kernel: Kernel) -> None:
    out = kernel.ok("exec", "-s", "web1", "-N", "--script", "-", input="echo from-stdin\n")
    assert out.stdout == "from-stdin\n"


def test_script_not_utf8(kernel: Kernel, tmp_path) -> None:
    script = tmp_path / "bad.sh"
    script.write_bytes(b"echo \xff\n")
    out = kernel.run("exec", "-s", "web1", "--script", str(script))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "not UTF-8" in out.stderr


def test_env_and_cwd(kernel: Kernel) -> None:
    out = kernel.ok(
        "exec", "-s", "web1", "-N", "-e", "A=1 2", "--cwd", "/tmp", "--", 'echo "$A" "$PWD"'
    )
    assert out.stdout == "1 2 /tmp\n"


def test_stderr_goes_to_stderr_prefixed(kernel: Kernel) -> None:
    out = kernel.ok("exec", "-s", "web1", "--", "echo out; echo err >&2; printf partial")
    assert out.stdout == "web1: out\nweb1: partial\n"
    assert "web1: err\n" in out.stderr


def test_many_lines_in_order(kernel: Kernel) -> None:
    out = kernel.ok("exec", "-s", "web1", "-N", "--", "seq 1 20000")
    assert out.stdout.split() == [str(i) for i in range(1, 20001)]


def test_non_utf8_argument_is_refused(kernel: Kernel) -> None:
    out = kernel.run("exec", "-s", "web1", "--", b"echo \xff\xfe")
    assert out.returncode == 2
    assert out.stderr.startswith("kernel: argument 5 is not valid UTF-8 (b'echo \\xff\\xfe')")
    assert out.stderr.count("\n") == 1


# -- formats -------------------------------------------------------------------------------------


def test_json(kernel: Kernel) -> None:
    out = kernel.run("exec", "-s", "web1", "-s", "dead1", "--json", "--", "echo", "j")
    assert out.returncode == 3
    job = json.loads(out.stdout)
    runs = {r["server"]: r for r in job["runs"]}
    assert runs["web1"]["stdout"] == "j\n" and runs["web1"]["state"] == "ok"
    assert runs["dead1"]["state"] == "unreachable"
    assert job["state"] == "finished"


def test_group_identical_output(kernel: Kernel) -> None:
    out = kernel.ok("exec", "-t", "web", "-s", "db1", "--group", "--", "echo same; echo line2")
    assert out.stdout == "---------------\ndb1,web[1-2] (3)\n---------------\nsame\nline2\n"


def test_group_different_outputs(kernel: Kernel, fleet: Fleet) -> None:
    # Every agent runs on this machine; what tells them apart is the address each listens on,
    # in the command line of the agent process that started the shell.
    db = fleet.agents["db1"].url.removeprefix("http://")
    cmd = (
        f"echo common; tr '\\0' ' ' < /proc/$PPID/cmdline | grep -qF -- '--listen {db} ' "
        "&& echo db || echo web"
    )
    out = kernel.ok("exec", "-s", "web1,web2,db1", "-b", "--", cmd)
    assert out.stdout == (
        "---------------\nweb[1-2] (2)\n---------------\ncommon\nweb\n"
        "---------------\ndb1 (1)\n---------------\ncommon\ndb\n"
    )


def test_plain_in_a_pipe_colour_on_request(kernel: Kernel) -> None:
    out = kernel.ok("exec", "-s", "web1", "--", "echo", "x")
    assert "\x1b[" not in out.stdout + out.stderr
    out = kernel.ok("exec", "-s", "web1", "--color", "always", "--", "echo", "x")
    assert "\x1b[36mweb1\x1b[0m: x" in out.stdout


def test_quiet(kernel: Kernel) -> None:
    out = kernel.ok("exec", "-s", "web1", "-q", "--", "true")
    assert out.stderr == ""
    out = kernel.run("exec", "-s", "web1", "-q", "--", "false")
    assert out.returncode == 4 and "failed: web1: exit 1" in out.stderr


def test_parallel_runs_batches(kernel: Kernel) -> None:
    out = kernel.run("exec", "-t", "web", "-s", "db1", "--parallel", "2", "--json", "--", "echo p")
    assert out.returncode == 0, out
    jobs = json.loads(out.stdout)["jobs"]
    assert [sorted(r["server"] for r in j["runs"]) for j in jobs] == [["db1", "web1"], ["web2"]]


def test_pending_servers_matched_by_tag_are_skipped(kernel: Kernel) -> None:
    kernel.ok("servers", "add", "pend1", "-t", "web")
    try:
        out = kernel.ok("exec", "-t", "web", "--", "true")
        assert "skipped (not joined yet): pend1" in out.stderr
        out = kernel.ok("exec", "-t", "web", "--parallel", "5", "--", "true")
        assert "skipped (not joined yet): pend1" in out.stderr
    finally:
        kernel.ok("servers", "rm", "pend1", "--yes")


def test_no_wait_prints_the_job_id(kernel: Kernel, fleet: Fleet) -> None:
    out = kernel.ok("exec", "-s", "web1", "--no-wait", "--", "echo", "later")
    job = fleet.wait_job(int(out.stdout))
    assert job["runs"][0]["stdout"] == "later\n"


# -- Ctrl-C --------------------------------------------------------------------------------------


def _running_job(fleet: Fleet, cmd: str) -> int:
    deadline = time.monotonic() + 20
    with fleet.server.api() as c:
        while time.monotonic() < deadline:
            for j in c.get("/api/v1/jobs?limit=20").json()["jobs"]:
                if j["cmd"] == cmd and j["state"] == "running":
                    return int(j["id"])
            time.sleep(0.05)
    raise AssertionError(f"no running job for {cmd!r}")


def test_ctrl_c_cancels_the_job(kernel: Kernel, fleet: Fleet) -> None:
    cmd = "echo started; sleep 30 # cancel me"
    proc = kernel.popen("exec", "-s", "web1", "--", cmd)
    job_id = _running_job(fleet, cmd)
    time.sleep(0.3)  # the command has followed the job's events for a moment
    proc.send_signal(signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert f"kernel: interrupted; cancelled job {job_id}" in stderr.decode()
    assert b"Traceback" not in stderr
    job = fleet.wait_job(job_id)
    assert job["state"] == "cancelled" and job["runs"][0]["state"] == "cancelled"


def test_sigterm_acts_as_ctrl_c(kernel: Kernel, fleet: Fleet) -> None:
    cmd = "sleep 30 # terminate me"
    proc = kernel.popen("exec", "-s", "web1", "--", cmd)
    job_id = _running_job(fleet, cmd)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 143
    assert f"kernel: terminated; cancelled job {job_id}" in stderr.decode()
    assert fleet.wait_job(job_id)["state"] == "cancelled"


def test_ctrl_c_with_no_cancel_leaves_it_running(kernel: Kernel, fleet: Fleet) -> None:
    cmd = "sleep 30 # leave me"
    proc = kernel.popen("exec", "-s", "web1", "--no-cancel", "--", cmd)
    job_id = _running_job(fleet, cmd)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert f"job {job_id} is left running" in stderr.decode()
    with fleet.server.api() as c:
        assert c.get(f"/api/v1/jobs/{job_id}").json()["state"] == "running"
    kernel.ok("jobs", "cancel", str(job_id))
    assert fleet.wait_job(job_id)["state"] == "cancelled"


# -- on a terminal -------------------------------------------------------------------------------


def _on_a_terminal(kernel: Kernel, *args: str) -> tuple[int, bytes, bytes]:
    """Run with stderr (and stdout) on a pseudo-terminal; (status, stdout, terminal bytes)."""
    import os
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(KERNEL), *args],
        env=kernel.env(),
        stdout=slave,
        stderr=slave,
        stdin=subprocess.DEVNULL,
    )
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    return proc.wait(30), b"", seen


def test_progress_bar_and_colours_on_a_terminal(kernel: Kernel) -> None:
    status, _out, tty = _on_a_terminal(
        kernel, "exec", "-s", "web1,web2,db1", "--", "sleep 0.3; echo done"
    )
    assert status == 0
    assert b"hosts done" in tty and b"[" in tty  # the bar was drawn …
    assert tty.count(b"\r\x1b[K") >= 1  # … and cleared before lines and at the end
    assert b"\x1b[36mweb1\x1b[0m: done" in tty or b"web1\x1b[0m: done" in tty
    assert b"Traceback" not in tty
    final = tty.rsplit(b"\r\x1b[K", 1)[-1]
    assert b"hosts done" not in final  # the last thing left on the screen is the summary


def test_no_progress_bar_in_a_pipe(kernel: Kernel) -> None:
    out = kernel.ok("exec", "-s", "web1,web2,db1", "--", "echo", "x")
    assert "hosts done" not in out.stderr and "\r" not in out.stderr
