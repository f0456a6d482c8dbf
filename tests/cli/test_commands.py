"""Every command but exec against the real server: its table, its --json, its exit status."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from support.agents import Agent, start_agent

from .conftest import FAIL_FLAG, KERNEL, UNIT, Fleet, Kernel

# -- servers ------------------------------------------------------------------------------------


def test_servers_list_and_show(kernel: Kernel) -> None:
    listed = kernel.json("servers", "list")
    names = [s["name"] for s in listed["servers"]]
    assert {"web1", "web2", "db1", "dead1"} <= set(names)
    table = kernel.ok("servers", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "STATE", "AGENT", "TAGS", "SEEN", "LAST", "ERROR"]
    assert any(line.startswith("web1 ") and " web " in line for line in table)
    by_tag = kernel.json("servers", "list", "-t", "db")
    assert [s["name"] for s in by_tag["servers"]] == ["db1"]
    one = kernel.json("servers", "show", "web1")
    assert one["name"] == "web1" and one["tags"] == ["web"]
    assert [sc["script"] for sc in one["init"]] == ["10-hello.sh", "20-second.sh", "30-flag.sh"]
    assert all(sc["state"] == "ok" for sc in one["init"])
    text = kernel.ok("servers", "show", "web1").stdout
    assert "state:" in text and "10-hello.sh" in text
    out = kernel.run("servers", "show", "nosuch")
    assert out.returncode == 1 and out.stderr == "kernel: no server named 'nosuch'\n"


def test_servers_add_edit_check_rm(kernel: Kernel, fleet: Fleet, tmp_path: Path) -> None:
    agent = start_agent(tmp_path / "extra", fleet.agents["web1"].host)
    try:
        key = tmp_path / "k"
        key.write_text(agent.key + "\n")
        added = kernel.json(
            "servers", "add", "extra1", "--url", agent.url, "--key-file", str(key), "-t", "x,y"
        )
        assert added["server"]["state"] == "online" and added["server"]["tags"] == ["x", "y"]
        edited = kernel.json(
            "servers", "edit", "extra1", "--add-tag", "z", "--remove-tag", "x", "-d", "über"
        )
        assert edited["tags"] == ["y", "z"] and edited["description"] == "über"
        renamed = kernel.json("servers", "edit", "extra1", "--name", "extra2")
        assert renamed["name"] == "extra2"
        checked = kernel.json("servers", "check", "extra2")
        assert checked["state"] == "online" and "os" in checked["facts"]
        out = kernel.run("servers", "edit", "extra2")
        assert out.returncode == 2 and "nothing to change" in out.stderr
        # Removing needs --yes without a terminal.
        out = kernel.run("servers", "rm", "extra2")
        assert out.returncode == 2 and "--yes" in out.stderr
        fleet.wait_init_idle()
        gone = kernel.json("servers", "rm", "extra2", "--yes")
        assert gone["servers"][0]["removed_at"]
        assert "extra2" not in [s["name"] for s in kernel.json("servers", "list")["servers"]]
    finally:
        agent.teardown()


def test_servers_add_refusals(kernel: Kernel, fleet: Fleet) -> None:
    out = kernel.run("servers", "add", "web1")
    assert out.returncode == 1 and "exists" in out.stderr
    out = kernel.run("servers", "add", "bad name!")
    assert out.returncode == 1 and "'name' must be" in out.stderr
    out = kernel.run("servers", "add", "x1", "--url", fleet.agents["web1"].url)
    assert out.returncode == 2 and "--key-file" in out.stderr
    out = kernel.run(
        "servers", "add", "x1", "--url", fleet.agents["web1"].url, "--key-stdin", input="ab" * 32
    )
    assert out.returncode == 1 and "agent" in out.stderr  # wrong key: the agent refuses


def test_servers_add_pending_prints_the_one_liner(kernel: Kernel) -> None:
    out = kernel.ok("servers", "add", "later1", "-t", "later")
    assert re.fullmatch(r"curl -fsSL '\S+/agent/install\.sh\?token=ke_\S+' \| bash\n", out.stdout)
    assert "later1 is pending" in out.stderr
    kernel.ok("servers", "rm", "later1", "--yes")


# -- enroll ---------------------------------------------------------------------------------------


def _enroll_as_a_host(fleet: Fleet, command: str, tmp_path: Path) -> Agent:
    """What the one-liner does on a host, minus installing: start an agent with the key the
    served install.sh carries and call /agent/enroll from the agent's address."""
    url = re.search(r"'(\S+)'", command).group(1)  # type: ignore[union-attr]
    script = httpx.get(url).text
    key = re.search(r"KERNEL_AGENT_KEY=([0-9a-f]{64})", script).group(1)  # type: ignore[union-attr]
    token = url.split("token=", 1)[1]
    agent = start_agent(tmp_path / "enrolled", fleet.agents["db1"].host, key=key)
    conn = http.client.HTTPConnection(
        "127.0.0.1", fleet.server.port, source_address=(agent.host, 0), timeout=30
    )
    conn.request(
        "POST",
        "/agent/enroll",
        json.dumps({"token": token, "port": agent.port}),
        {"Content-Type": "application/json"},
    )
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    conn.close()
    return agent


def test_enroll_waits_for_the_host_and_its_init_scripts(
    kernel: Kernel, fleet: Fleet, tmp_path: Path
) -> None:
    proc = kernel.popen("enroll", "new1", "-t", "fresh")
    assert proc.stdout is not None
    command = proc.stdout.readline().decode().strip()
    assert command.startswith("curl -fsSL ") and command.endswith("| bash")
    agent = _enroll_as_a_host(fleet, command, tmp_path)
    try:
        out, err = proc.communicate(timeout=60)
        text = err.decode()
        assert proc.returncode == 0, text
        assert "new1 joined: " + agent.url in text
        for script in ("10-hello.sh", "20-second.sh", "30-flag.sh"):
            assert f"new1: init script {script}: ok" in text
        assert "new1: hello from 10-hello.sh" in out.decode()
        assert "Traceback" not in text
    finally:
        kernel.run("servers", "rm", "new1", "--yes")
        agent.teardown()


def test_enroll_json_no_wait_and_again(kernel: Kernel) -> None:
    first = kernel.json("enroll", "new2", "--no-wait")
    assert first["server"]["state"] == "pending" and first["enroll"]["command"]
    again = kernel.json("enroll", "new2", "--no-wait")  # a fresh one-liner for the same record
    assert again["server"]["id"] == first["server"]["id"]
    assert again["enroll"]["token"] != first["enroll"]["token"]
    out = kernel.run("enroll", "new2", "--timeout", "0.2")
    assert out.returncode == 1 and "has not joined in time" in out.stderr
    out = kernel.run("enroll", "web1", "--no-wait")
    assert out.returncode == 1 and "already joined" in out.stderr
    kernel.ok("servers", "rm", "new2", "--yes")


# -- init scripts ----------------------------------------------------------------------------------


def test_init_status_and_run(kernel: Kernel, fleet: Fleet) -> None:
    status = kernel.json("init", "status", "-s", "web2")["servers"]
    assert [sc["state"] for sc in status[0]["scripts"]] == ["ok", "ok", "ok"]
    assert "10-hello.sh" in kernel.ok("init", "status", "-s", "web2").stdout
    # Everything ran: nothing to do, still exit 0.
    out = kernel.run("init", "run", "-s", "web2")
    assert out.returncode == 0 and "already run successfully" in out.stderr
    # One script on demand, failing while the flag is set.
    flag = fleet.server.data_dir / FAIL_FLAG
    flag.write_text("")
    try:
        out = kernel.run("init", "run", "-s", "web2", "--script", "30-flag.sh")
        assert out.returncode == 4, out
        assert "web2: flag is set" in out.stderr
        assert "web2: init script 30-flag.sh: failed (exit 5)" in out.stderr
    finally:
        flag.unlink()
    # Continue from the failed one.
    out = kernel.run("init", "run", "-s", "web2")
    assert out.returncode == 0, out
    assert "web2: third" in out.stdout and "30-flag.sh: ok" in out.stderr
    again = kernel.json("init", "run", "-s", "web2", "--script", "20-second.sh")
    assert [sc["state"] for sc in again["servers"][0]["scripts"]] == ["ok", "ok", "ok"]
    out = kernel.run("init", "run", "-s", "pending-or-not")
    assert out.returncode == 2 and "no such server" in out.stderr


# -- services ---------------------------------------------------------------------------------


def test_services_list_show_refresh(kernel: Kernel) -> None:
    listed = kernel.json("services", "list")
    by_name = {s["name"]: s for s in listed["services"]}
    assert by_name["echoer"]["deployable"] and by_name["echoer"]["unit"] == UNIT + ".service"
    assert not by_name["broken"]["deployable"] and by_name["broken"]["problems"]
    table = kernel.ok("services", "list").stdout
    assert "echoer" in table and "info.json is not valid JSON" in table
    shown = kernel.json("services", "show", "echoer")
    assert set(shown["scripts"]) == {"deploy.sh", "remove.sh"}
    assert "deploy.sh" in kernel.ok("services", "show", "echoer").stdout
    refreshed = kernel.json("services", "refresh")
    assert {s["name"] for s in refreshed["services"]} == {"echoer", "broken"}
    out = kernel.run("services", "show", "nosuch")
    assert out.returncode == 1 and "no service" in out.stderr
    out = kernel.run("services", "show", "a;b")
    assert out.returncode == 1 and "not allowed" in out.stderr


def test_service_operations_are_jobs(kernel: Kernel) -> None:
    # deploy.sh only echoes and the unit does not exist: the deploy must fail with exit 97.
    out = kernel.run("services", "deploy", "echoer", "-t", "web")
    assert out.returncode == 4, out
    assert "web1: deploying echoer" in out.stdout
    assert "failed: web[1-2]: exit 97" in out.stderr
    job = json.loads(kernel.run("services", "status", "echoer", "-s", "web1", "--json").stdout)
    assert job["kind"] == "service" and job["meta"]["op"] == "status"
    out = kernel.run("services", "logs", "echoer", "-s", "web1", "-n", "5", "--group")
    assert out.returncode in (0, 4)
    out = kernel.run("services", "deploy", "broken", "-s", "web1")
    assert out.returncode == 1
    assert out.stderr.startswith("kernel: cannot deploy service 'broken': info.json is not valid")
    out = kernel.run("services", "deploy", "echoer")
    assert out.returncode == 2 and "--server NAME, --tag TAG or --all" in out.stderr
    out = kernel.run("services", "logs", "echoer", "-s", "web1", "-n", "0")
    assert out.returncode == 2


# -- jobs --------------------------------------------------------------------------------------


def test_jobs_list_show_follow_rerun_cancel(kernel: Kernel, fleet: Fleet) -> None:
    out = kernel.run("exec", "-s", "web1,dead1", "--", "echo", "hist")
    assert out.returncode == 3
    job_id = int(out.stderr.split()[1].rstrip(":"))
    listed = kernel.json("jobs", "list", "-n", "5")
    assert job_id in [j["id"] for j in listed["jobs"]]
    assert str(job_id) in kernel.ok("jobs", "list").stdout
    shown = kernel.json("jobs", "show", str(job_id))
    assert {r["server"]: r["state"] for r in shown["runs"]} == {
        "web1": "ok",
        "dead1": "unreachable",
    }
    assert shown["runs"][0]["stdout"] == "" or "stdout" in shown["runs"][0]
    text = kernel.ok("jobs", "show", str(job_id), "--output")
    assert "web1: hist" in text.stdout and "unreachable" in text.stdout
    # follow a finished job: its output and the same exit status
    followed = kernel.run("jobs", "follow", str(job_id))
    assert followed.returncode == 3 and "web1: hist" in followed.stdout
    # rerun: only the run that did not succeed
    rerun = kernel.run("jobs", "rerun", str(job_id), "--json")
    assert rerun.returncode == 3
    new = json.loads(rerun.stdout)
    assert new["parent_id"] == job_id and [r["server"] for r in new["runs"]] == ["dead1"]
    # cancel a running job, and once more when it has ended
    started = kernel.ok("exec", "-s", "web1", "--no-wait", "--", "sleep 30")
    running = int(started.stdout)
    _wait_state(fleet, running, "running")
    cancelled = kernel.json("jobs", "cancel", str(running))
    assert cancelled["cancel_requested"]
    assert fleet.wait_job(running)["state"] == "cancelled"
    out = kernel.run("jobs", "cancel", str(running))
    assert out.returncode == 1 and "already ended" in out.stderr
    out = kernel.run("jobs", "show", "x1")
    assert out.returncode == 2 and "must be a number" in out.stderr
    out = kernel.run("jobs", "show", "999999")
    assert out.returncode == 1 and "no job" in out.stderr


def _wait_state(fleet: Fleet, job_id: int, state: str) -> None:
    deadline = time.monotonic() + 20
    with fleet.server.api() as c:
        while c.get(f"/api/v1/jobs/{job_id}").json()["state"] != state:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_jobs_follow_live_and_ctrl_c_leaves_it(kernel: Kernel, fleet: Fleet) -> None:
    started = kernel.ok("exec", "-s", "web1", "--no-wait", "--", "echo one; sleep 1; echo two")
    out = kernel.run("jobs", "follow", started.stdout.strip())
    assert out.returncode == 0 and out.stdout == "web1: one\nweb1: two\n"


# -- status ------------------------------------------------------------------------------------


def test_status(kernel: Kernel, fleet: Fleet) -> None:
    with fleet.server.api() as c:
        c.post("/api/v1/status/refresh")
    deadline = time.monotonic() + 30
    while True:
        status = kernel.json("status")
        hosts = {h["server"]: h for h in status["hosts"]}
        if hosts["web1"]["state"] == "online" and hosts["web1"]["metrics"]:
            break
        assert time.monotonic() < deadline, hosts["web1"]
        time.sleep(0.2)
    assert {"web1", "web2", "db1", "dead1"} <= set(hosts)
    table = kernel.ok("status").stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "HEALTH", "STATE"]
    assert any(line.startswith("web1 ") and "online" in line for line in table)
    only = kernel.json("status", "-t", "web")
    assert sorted(h["server"] for h in only["hosts"]) == ["web1", "web2"]


# -- help, completion, bad arguments -------------------------------------------------------------


def _all_commands() -> list[list[str]]:
    from kernel.cli.app import cli

    found: list[list[str]] = []

    def walk(cmd: object, path: list[str]) -> None:
        found.append(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])

    walk(cli, [])
    return found


@pytest.mark.parametrize("path", _all_commands(), ids=lambda p: " ".join(p) or "kernel")
def test_help_everywhere_with_examples(kernel: Kernel, path: list[str]) -> None:
    out = kernel.ok(*path, "--help")
    assert out.stdout.startswith("Usage: kernel")
    assert "Example" in out.stdout


def test_exit_statuses_are_in_the_root_help(kernel: Kernel) -> None:
    text = kernel.ok("--help").stdout
    for code in ("0", "1", "2", "3", "4", "5", "6", "130"):
        assert re.search(rf"^\s+{code}\s+\w", text, re.M), code


def test_completion_scripts(kernel: Kernel) -> None:
    for shell in ("bash", "zsh", "fish"):
        out = kernel.ok("completion", shell)
        assert "_KERNEL_COMPLETE" in out.stdout
    script = kernel.ok("completion", "bash").stdout
    assert subprocess.run(["bash", "-n"], input=script.encode()).returncode == 0


def test_completion_of_names(kernel: Kernel) -> None:
    env = {
        "_KERNEL_COMPLETE": "bash_complete",
        "COMP_WORDS": "kernel exec -s we",
        "COMP_CWORD": "3",
    }
    out = kernel.run(**env)
    assert out.returncode == 0
    assert "plain,web1" in out.stdout and "plain,web2" in out.stdout
    env = {"_KERNEL_COMPLETE": "bash_complete", "COMP_WORDS": "kernel serv", "COMP_CWORD": "1"}
    assert "plain,servers" in kernel.run(**env).stdout
    env = {
        "_KERNEL_COMPLETE": "bash_complete",
        "COMP_WORDS": "kernel services show ec",
        "COMP_CWORD": "3",
    }
    assert "plain,echoer" in kernel.run(**env).stdout


@pytest.mark.parametrize(
    "args",
    [
        ["nosuch"],
        ["exec", "--timeout", "abc", "--", "true"],
        ["exec", "--timeout", "-1", "-a", "--", "true"],
        ["exec", "--parallel", "0", "-a", "--", "true"],
        ["exec", "-e", "NOEQUALS", "-a", "--", "true"],
        ["exec", "--color", "pink", "-a", "--", "true"],
        ["exec", "--bogus", "--", "true"],
        ["exec", "-a"],
        ["exec", "--", "true"],
        ["exec", "-s", "web[1-", "--", "true"],
        ["exec", "-a", "--no-wait", "--parallel", "2", "--", "true"],
        ["servers", "show"],
        ["jobs", "list", "--limit", "0"],
        ["services", "logs", "echoer", "-s", "web1", "--lines", "x"],
        ["status", "--bogus"],
        ["--profile", "bad profile!", "servers", "list"],
    ],
)
def test_bad_arguments_are_one_line_and_status_2(kernel: Kernel, args: list[str]) -> None:
    out = kernel.run(*args)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert out.stderr.startswith("kernel: ") and out.stderr.count("\n") == 1, out.stderr
    assert out.stdout == ""


def test_no_arguments_prints_help(kernel: Kernel) -> None:
    out = kernel.ok()
    assert "Usage: kernel" in out.stdout
    assert "Usage: kernel servers" in kernel.ok("servers").stdout


def test_output_to_a_closed_pipe(kernel: Kernel) -> None:
    proc = subprocess.Popen(
        f"{KERNEL} exec -s web1 -N -- seq 1 100000 | head -1",
        shell=True,
        env=kernel.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = proc.communicate(timeout=60)
    assert out == b"1\n"
    assert b"Traceback" not in err
