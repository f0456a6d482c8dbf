"""Text that no OS interface accepts (lone surrogates, from JSON's ``\\ud800`` escapes) is a
400 naming the field, and the keeper — which every run on the host depends on — survives
whatever it is handed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from kernel.agent import HttpError, parse_exec_request
from support.agents import AGENT_PY, Agent

SURROGATES = ["\ud800", "\udc80", "a\udfffb", "\udbff"]
FIELDS = [
    ("cmd", lambda s: {"cmd": "echo " + s}),
    ("stdin", lambda s: {"cmd": "cat", "stdin": s}),
    ("env", lambda s: {"cmd": "true", "env": {"X": s}}),
    ("cwd", lambda s: {"cmd": "true", "cwd": "/tmp/" + s}),
]


@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize(("field", "body"), FIELDS, ids=[f for f, _ in FIELDS])
def test_validation_names_the_field(field, body, surrogate) -> None:
    with pytest.raises(HttpError) as e:
        parse_exec_request(json.loads(json.dumps(body(surrogate))))
    assert e.value.status == 400 and e.value.msg.startswith(field + ":")


def test_lone_surrogates_are_a_400_and_the_agent_keeps_running(agent: Agent) -> None:
    keeper = agent.keepers[-1]
    for surrogate in SURROGATES:
        for field, body in FIELDS:
            # json.dumps escapes the surrogate as \udXXX: exactly what a hostile client sends
            r = agent.request("POST", "/api/v2/exec", body(surrogate))
            assert r.status_code == 400, (field, r.text)
            assert r.json()["error"] == "bad_field" and field in r.json()["msg"]
            r = agent.request("POST", "/api/v2/exec", {**body(surrogate), "stream": True})
            assert r.status_code == 400
    assert agent.exec("echo still here")["stdout"] == "still here\n"
    assert agent.proc is not None and agent.proc.poll() is None
    assert os.path.exists(f"/proc/{keeper}") and agent.keepers[-1] == keeper


def test_legacy_cmd_with_a_surrogate_runs_nothing(agent_factory) -> None:
    agent = agent_factory("--legacy-allow-ips", "127.0.0.1")
    import httpx

    r = httpx.post(agent.url + "/api/ExecCmd", content=json.dumps({"cmd": "echo \ud800"}))
    assert r.status_code == 200 and r.json()["code"] == -2
    assert agent.exec("echo alive")["stdout"] == "alive\n"


KEEPER_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, tempfile
    sys.path.insert(0, os.path.dirname(sys.argv[1]))
    import agent
    state = tempfile.mkdtemp()
    sock, pid = agent.start_keeper("/bin/bash", agent.command_env())
    f = sock.makefile("rb")

    def spawn(run_id, **fields):
        base = os.path.join(state, run_id)
        open(base + ".run", "w").close()
        msg = {"op": "spawn", "id": run_id, "base": base, "cmd": "true", "stdin": "",
               "env": {}, "cwd": None, "timeout": 10, "cap": 1000, "started_at": 0.0}
        msg.update(fields)
        sock.sendall(json.dumps(msg).encode() + b"\\n")
        return json.loads(f.readline())

    # Messages that bypass the agent's validation: each fails its own run only.
    sock.sendall(b"not json at all\\n[1, 2]\\n{}\\n")
    out = [spawn("a", cmd="echo \\ud800"), spawn("b", env={"X": "\\udc80"}),
           spawn("c", stdin="\\ud800"), spawn("d", cwd="/\\ud800"),
           spawn("e", env={"X": 5}), spawn("f", cmd="echo alive")]
    print(json.dumps([(m["id"], m["status"].get("exit_code"), os.path.exists(
        "/proc/%d" % pid)) for m in out]))
    os.kill(pid, 15)
    """
)


def test_the_keeper_survives_messages_it_cannot_carry_out(tmp_path) -> None:
    script = tmp_path / "keeper_check.py"
    script.write_text(KEEPER_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(AGENT_PY)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results == [
        ["a", 127, True], ["b", 127, True], ["c", 127, True], ["d", 127, True],
        ["e", 127, True], ["f", 0, True],
    ]  # fmt: skip
