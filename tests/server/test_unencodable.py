"""Text UTF-8 cannot carry (lone surrogates, from JSON's ``\\ud800`` escapes) is a 400 where it
first comes in — never a 500 from the database, never a job that reaches an agent."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.jsontext import loads_scrubbed, lone_surrogate_at
from kernel.server.components import components
from kernel.server.models.jobs import Job
from support.api import wait_job

from .conftest import add_agent_server

SURROGATES = ["\ud800", "\udc80", "x\udfff"]

# (method, url, a valid body, the text fields to spoil one at a time)
CASES = [
    ("POST", "/api/v1/jobs", {"cmd": "true", "targets": {"all": True}},
     ["cmd", "stdin", "cwd", "title", "env.X", "targets.servers[0]", "targets.tags[0]"]),
    ("POST", "/api/v1/servers", {"name": "s1"}, ["name", "description"]),
    ("POST", "/api/v1/users", {"name": "u1", "role": "viewer", "password": "pass-word-1"},
     ["name", "password", "role"]),
    ("POST", "/api/v1/auth/token", {"username": "admin1", "password": "password-admin1"},
     ["username", "password", "name"]),
    ("POST", "/api/v1/tokens", {"name": "ci"}, ["name"]),
    ("POST", "/agent/enroll", {"token": "t" * 40}, ["token", "hostname"]),
]  # fmt: skip


def spoil(body: dict, field: str, bad: str) -> dict:
    out = json.loads(json.dumps(body))
    if field.startswith("env."):
        out["env"] = {field[4:]: bad}
    elif field.startswith("targets."):
        key = field.split(".")[1].split("[")[0]
        out["targets"] = {key: [bad]}
    else:
        out[field] = bad
    return out


@pytest.mark.parametrize(("method", "url", "body", "fields"), CASES, ids=[c[1] for c in CASES])
def test_lone_surrogates_are_a_clear_400(admin, app, method, url, body, fields) -> None:
    for field in fields:
        for bad in SURROGATES:
            raw = json.dumps(spoil(body, field, bad))  # escapes the surrogate: \udXXX
            resp = admin.call(method, url, headers={"Content-Type": "application/json"}, data=raw)
            assert resp.status_code == 400, (field, resp.get_data(as_text=True))
            answer = resp.get_json()
            assert answer["error"] == "bad_request" and "Unicode" in answer["message"], answer


def test_a_spoiled_job_never_reaches_an_agent(admin, app, runner, agents) -> None:
    (agent,) = agents(1)
    add_agent_server(admin, agent, "host1")
    body = {"cmd": "true", "env": {"X": "\ud800"}, "targets": {"all": True}}
    admin.call("POST", "/api/v1/jobs", 400, data=json.dumps(body),
               headers={"Content-Type": "application/json"})  # fmt: skip
    with components(app).db.session() as s:
        assert s.query(Job).count() == 0
    job = admin.post("/api/v1/jobs", {"cmd": "echo ok", "targets": {"all": True}}, expect=201)
    done = wait_job(admin, job["id"])
    assert [r["state"] for r in done["runs"]] == ["ok"]


def test_surrogate_pairs_are_ordinary_text(admin, app) -> None:
    raw = json.dumps({"name": "emoji", "description": "\U0001f600 ok"})  # \ud83d\ude00
    resp = admin.call("POST", "/api/v1/servers", headers={"Content-Type": "application/json"},
                      data=raw)  # fmt: skip
    assert resp.status_code == 201, resp.get_data(as_text=True)
    assert resp.get_json()["server"]["description"] == "\U0001f600 ok"


@pytest.mark.parametrize("depth", [10_000, 100_000])
@pytest.mark.parametrize("url", ["/api/v1/auth/token", "/agent/enroll", "/api/v1/jobs"])
def test_deep_nesting_is_a_400(admin, url, depth) -> None:
    raw = "[" * depth + "]" * depth
    resp = admin.call("POST", url, headers={"Content-Type": "application/json"}, data=raw)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    raw = '{"a":' * depth + "1" + "}" * depth
    resp = admin.call("POST", url, headers={"Content-Type": "application/json"}, data=raw)
    assert resp.status_code == 400, resp.get_data(as_text=True)


# -- what hosts answer is scrubbed, not refused ----------------------------------------------------
texts = st.text(alphabet=st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr)))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_scrubbed_answers_are_always_encodable(value) -> None:
    raw = json.dumps(value)
    out = loads_scrubbed(raw.encode())
    json.dumps(out, ensure_ascii=False).encode("utf-8")  # never raises
    assert loads_scrubbed(raw) == out
    if lone_surrogate_at(value) is None:
        assert out == value


def test_scrub_keeps_pairs_and_replaces_lone_ones() -> None:
    raw = b'{"a": "\\ud83d\\ude00", "b": "x\\ud800y", "\\udc80": ["\\udfff"]}'
    assert loads_scrubbed(raw) == {"a": "\U0001f600", "b": "x\ufffdy", "\ufffd": ["\ufffd"]}
    assert lone_surrogate_at(json.loads(raw)) in ("$.b", "$.\\udc80", "$.\\udc80[0]")
