"""Generated hostile HTTP at a real agent, over raw sockets (docs/security.md, "Agent").

Every request is built by hypothesis: request lines, every header the agent reads (with
garbage, bytes that are not latin-1 text or not UTF-8, huge values, duplicates), bodies and
every exec field (bytes that are not UTF-8, lone surrogates, deep nesting). Every command a
request carries would ``touch`` a marker file named after that request. Asserted:

- never a 5xx answer;
- the agent and its keeper stay alive and keep answering;
- a marker appears only for a request that was validly signed (v2) or came from an address
  the legacy API allows (directly, or as the last X-Forwarded-For entry of a trusted proxy).

Sources: 127.0.0.1 (allow_ips and legacy_allow_ips), 127.0.0.5 (allow_ips only), 127.0.0.6
(trusted proxy), 127.0.0.9 (refused by the fence).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.agent import sign, signed_headers
from support import rawhttp
from support.agents import Agent
from support.procs import pid_alive

# How many requests each test sends: ~3000 per run in total, the whole file in well under a
# minute on a loaded 2-CPU machine. (Each example is one request.)
EXAMPLES = {"headers": 1200, "exec_fields": 900, "legacy": 500, "request_line": 500}

ALLOWED = "127.0.0.1"  # allow_ips and legacy_allow_ips
V2_ONLY = "127.0.0.5"  # allow_ips only
PROXY = "127.0.0.6"  # trusted_proxies
FENCED = "127.0.0.9"  # in no list
READ_HEADERS = [
    "Content-Length", "Transfer-Encoding", "Expect", "Connection", "X-Forwarded-For",
    "X-Kernel-Time", "X-Kernel-Nonce", "X-Kernel-Signature", "Host",
]  # fmt: skip
ROUTES = ["exec", "exec-stream", "status", "cancel", "info", "healthz", "nope"]
SIGNING = {"x-kernel-time", "x-kernel-nonce", "x-kernel-signature"}

# Values that broke, or could break, a parser: digits int() refuses ("²", "٣"), signs, bases,
# underscores, huge numbers, NaN, not latin-1 text, not UTF-8, NUL, commas (duplicates joined).
TRICKY = [
    b"", b" ", b"0", b"\xb2", b"1\xb2", b"\xb9\xb3", "٣".encode(), b"-1", b"+1", b"0x10",
    b"1_0", b" 1 ", b"1e3", b"9" * 5000, b"f" * 40, b"\xff\xfe", b"\x00", b"nan", b"inf",
    b"chunked", b"Chunked", b"chunked, chunked", b"gzip, chunked", b"100-continue",
    b"100-Continue", b"close", b"keep-alive", b"Upgrade", b"127.0.0.1", b"127.0.0.1, 10.0.0.1",
    b"10.0.0.1, 127.0.0.1", b", ,", b"::1", b"::ffff:127.0.0.1", b"[::1]", b"127.0.0.1%lo",
    b"x" * 20000,
    "é".encode("latin-1"), "é".encode(), "\ud800".encode("utf-8", "surrogatepass"),
    b"\xc3\x28", b"%00", b"1" * 13, b"a" * 64, b"A" * 64, b"g" * 64,
]  # fmt: skip

header_value = st.one_of(
    st.sampled_from(TRICKY),
    st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass").replace(b"\n", b"")),
)
header_name = st.one_of(
    st.sampled_from(READ_HEADERS).flatmap(
        lambda n: st.sampled_from([n, n.lower(), n.upper(), " " + n, n + " "]).map(str.encode)
    ),
    st.binary(min_size=1, max_size=20).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
)
garbage_text = st.text(max_size=30)
json_garbage = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | garbage_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(garbage_text, inner, max_size=3),
    max_leaves=8,
)
METHODS = [b"GET", b"POST", b"DELETE", b"HEAD", b"OPTIONS", b"get"]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.", b"HTTP/2", b"", b"HTTP/1.1 x"]
DEEP = "[" * 5000 + "]" * 5000  # past any recursion limit, under max_body_bytes


@dataclass
class Sent:
    """What the suite sent, per marker token: may that request run a command?"""

    may_run: dict[str, bool] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    requests: int = 0


def exchange(
    port: int, data: bytes, source: str, wait: float = 1.5, head_only: bool = False
) -> list[int]:
    """Send ``data`` from ``source``; the statuses of the answers read before the agent
    closed, a complete final answer, or ``wait`` seconds."""
    statuses: list[int] = []
    deadline = time.monotonic() + wait
    try:
        address = ("127.0.0.1", port)
        with socket.create_connection(address, timeout=wait, source_address=(source, 0)) as s:
            try:
                s.sendall(data)
            except OSError:
                pass  # the agent answered and closed before taking it all
            buf = b""
            while time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    chunk = s.recv(65536)
                except (TimeoutError, ConnectionResetError):
                    break
                if not chunk:
                    break
                buf += chunk
                if final_answer_complete(buf, statuses, head_only):
                    break
    except OSError:
        pass
    return statuses


def final_answer_complete(buf: bytes, statuses: list[int], head_only: bool = False) -> bool:
    """Parse the answers in ``buf`` (1xx first); record statuses; True once a final one is in."""
    statuses.clear()
    while b"\r\n\r\n" in buf:
        head, _, rest = buf.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0]
        status = int(status_line.split(b" ")[1])
        statuses.append(status)
        if status < 200:
            buf = rest
            continue
        lower = head.lower()
        if head_only:
            return True
        if b"transfer-encoding: chunked" in lower:
            return rest.endswith(b"0\r\n\r\n")
        length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        return len(rest) >= length
    return False


def build(
    method: bytes,
    target: bytes,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    key: str | None,
    framing: str,
    version: bytes = b"HTTP/1.1",
) -> tuple[bytes, bool]:
    """The request's bytes, and whether it carries a valid signature (None ``key``: none)."""
    base: list[tuple[bytes, bytes]] = [(b"Host", b"agent")]
    signed = False
    if key is not None:
        timestamp = int(time.time())
        nonce = uuid.uuid4().hex
        sig = sign(key, method.decode("latin-1"), target.decode("latin-1"), timestamp, nonce, body)
        base += [
            (b"X-Kernel-Time", b"%d" % timestamp),
            (b"X-Kernel-Nonce", nonce.encode()),
            (b"X-Kernel-Signature", sig.encode()),
        ]
        signed = not any(n.strip().lower().decode("latin-1") in SIGNING for n, _ in headers)
    return rawhttp.request(method, target, base + headers, body, framing, version), signed


def check(agent: Agent, sent: Sent, statuses: list[int]) -> None:
    sent.requests += 1
    for status in statuses:
        sent.statuses[status] = sent.statuses.get(status, 0) + 1
        assert status < 500, f"a {status} answer; agent log:\n{agent.log[-3000:]}"
    assert agent.proc is not None and agent.proc.poll() is None, agent.log[-3000:]
    assert pid_alive(agent.keepers[-1]), "the keeper died:\n" + agent.log[-3000:]


def final_checks(agent: Agent, sent: Sent, markers: Path) -> None:
    time.sleep(1.5)  # a run whose client gave up may still be finishing
    ran = {p.name for p in markers.iterdir()}
    unsigned = sorted(t for t in ran if not sent.may_run.get(t, False))
    assert not unsigned, f"ran without a signature or legacy address: {unsigned}"
    assert agent.healthy()
    assert agent.exec("echo fine")["stdout"] == "fine\n"
    statuses = dict(sorted(sent.statuses.items()))
    print(f"\n{sent.requests} requests, statuses {statuses}, ran {len(ran)}")


def hostile_agent(agent_factory: Callable[..., Agent]) -> Agent:
    return agent_factory(
        "--allow-ips", f"{ALLOWED},{V2_ONLY}", "--legacy-allow-ips", ALLOWED,
        "--trusted-proxies", PROXY, "--max-body-bytes", "64K", "--request-timeout", "1",
        "--max-concurrency", "256",
    )  # fmt: skip


def marker(markers: Path) -> tuple[str, str]:
    """A fresh token and the command that would create its marker file."""
    token = uuid.uuid4().hex
    return token, f"touch {markers}/{token}"


def is_legacy_allowed(address: str) -> bool:
    """Whether ``address`` is ALLOWED as an address (a scope such as ``%lo`` and an
    IPv4-mapped IPv6 form name the same one)."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip) == ALLOWED


def touch(markers: Path, sent: Sent, may_run: bool) -> str:
    token, cmd = marker(markers)
    sent.may_run[token] = may_run
    return cmd


def comment(text: str) -> str:
    """Garbage that bash reads as a comment: it can't run anything."""
    return " # " + text.replace("\n", " ").replace("\r", " ")


def budget(test: str) -> settings:
    return settings(
        max_examples=EXAMPLES[test],
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )


def test_generated_headers(agent_factory: Callable[..., Agent], tmp_path: Path) -> None:
    """Signed and unsigned requests to every route, with generated headers added to (and
    duplicating) the ones the request needs."""
    agent = hostile_agent(agent_factory)
    markers = tmp_path / "markers"
    markers.mkdir()
    sent = Sent()

    @budget("headers")
    @given(
        route=st.sampled_from(
            ["exec", "exec-stream", "status", "cancel", "info", "healthz", "nope"]
        ),
        headers=st.lists(st.tuples(header_name, header_value), max_size=4),
        signed=st.booleans(),
        wrong_key=st.booleans(),
        framing=st.sampled_from(["length", "length", "length", "chunked", "none"]),
        source=st.sampled_from([ALLOWED, ALLOWED, V2_ONLY, PROXY, FENCED]),
    )
    def run(
        route: str,
        headers: list[tuple[bytes, bytes]],
        signed: bool,
        wrong_key: bool,
        framing: str,
        source: str,
    ) -> None:
        key = ("cd" * 32 if wrong_key else agent.key) if signed else None
        method, target, body = b"GET", b"/api/v2/info", b""
        token, cmd = marker(markers)
        if route.startswith("exec"):
            method, target = b"POST", b"/api/v2/exec"
            body = json.dumps({"cmd": cmd, "stream": route == "exec-stream"}).encode()
        elif route in ("status", "cancel"):
            method = b"GET" if route == "status" else b"DELETE"
            target = b"/api/v2/exec/some-run?wait=0.1"
        elif route != "info":
            target = b"/healthz" if route == "healthz" else b"/nope"
        data, valid = build(method, target, body, headers, key, framing)
        sent.may_run[token] = valid and not wrong_key
        check(agent, sent, exchange(agent.port, data, source))

    run()
    final_checks(agent, sent, markers)


def test_generated_exec_fields(agent_factory: Callable[..., Agent], tmp_path: Path) -> None:
    """Signed exec requests whose every field is generated: a cmd that would touch a marker
    (plus garbage bash reads as a comment), stdin, env, cwd, timeout, id, stream of any JSON
    value or text with lone surrogates, bodies that are not UTF-8, and deep nesting."""
    agent = hostile_agent(agent_factory)
    markers = tmp_path / "markers"
    markers.mkdir()
    sent = Sent()
    env_names = st.one_of(garbage_text, st.from_regex(r"\A[a-z_][a-z0-9_]{0,8}\Z"))
    values = st.one_of(json_garbage, st.just("\ud800"), st.just("a\udc80b"), st.just(DEEP))

    @budget("exec_fields")
    @given(
        garbage=garbage_text,
        fields=st.fixed_dictionaries(
            {},
            optional={
                "stdin": values,
                "env": st.one_of(values, st.dictionaries(env_names, values, max_size=3)),
                "cwd": st.one_of(values, st.sampled_from(["/", "/tmp", "/nonexistent"])),
                "timeout": st.one_of(values, st.floats(), st.integers()),
                "id": st.one_of(values, st.from_regex(r"\A[A-Za-z0-9_.-]{1,20}\Z")),
                "stream": values,
            },
        ),
        encoding=st.sampled_from(["ascii", "utf-8", "surrogatepass", "latin-1", "deep"]),
        signed=st.booleans(),
    )
    def run(garbage: str, fields: dict[str, Any], encoding: str, signed: bool) -> None:
        cmd = touch(markers, sent, may_run=signed) + comment(garbage)
        doc: dict[str, Any] = {"cmd": cmd, **fields}
        if encoding == "ascii":
            body = json.dumps(doc).encode()
        elif encoding == "deep":  # the whole body nested past any recursion limit
            body = json.dumps(doc).encode()[:-1] + b', "x": ' + DEEP.encode() + b"}"
        else:
            text = json.dumps(doc, ensure_ascii=False)
            errors = "surrogatepass" if encoding == "surrogatepass" else "replace"
            body = text.encode("latin-1" if encoding == "latin-1" else "utf-8", errors)
        key = agent.key if signed else None
        data, _ = build(b"POST", b"/api/v2/exec", body, [], key, "length")
        check(agent, sent, exchange(agent.port, data, ALLOWED, wait=3))

    run()
    final_checks(agent, sent, markers)


def test_generated_legacy_requests(agent_factory: Callable[..., Agent], tmp_path: Path) -> None:
    """/api/ExecCmd (unsigned by design, fenced by legacy_allow_ips): form, JSON and query
    cmds with garbage, from allowed and refused addresses and through the trusted proxy."""
    agent = hostile_agent(agent_factory)
    markers = tmp_path / "markers"
    markers.mkdir()
    sent = Sent()

    @budget("legacy")
    @given(
        garbage=garbage_text,
        shape=st.sampled_from(["form", "json", "query", "json-garbage", "bytes", "empty"]),
        method=st.sampled_from([b"POST", b"GET", b"PUT", b"DELETE", b"PATCH"]),
        source=st.sampled_from([ALLOWED, V2_ONLY, PROXY, FENCED]),
        forwarded=st.lists(header_value, max_size=2),
        raw=st.binary(max_size=60),
        other=json_garbage,
    )
    def run(
        garbage: str,
        shape: str,
        method: bytes,
        source: str,
        forwarded: list[bytes],
        raw: bytes,
        other: Any,
    ) -> None:
        client = source
        if forwarded and source == PROXY:
            client = b", ".join(forwarded).decode("latin-1").split(",")[-1].strip()
        cmd = touch(markers, sent, may_run=is_legacy_allowed(client)) + comment(garbage)
        target, body = b"/api/ExecCmd", b""
        quoted = "".join(f"%{b:02X}" for b in cmd.encode("utf-8", "surrogatepass"))
        if shape == "form":
            body = b"cmd=" + quoted.encode() + b"&" + raw.replace(b"&", b"")
        elif shape == "json":
            body = json.dumps({"cmd": cmd, "x": other}).encode("utf-8", "surrogatepass")
        elif shape == "query":
            target += b"?cmd=" + quoted.encode()
        elif shape == "json-garbage":
            body = json.dumps({"cmd": other}).encode("utf-8", "surrogatepass")
        elif shape == "bytes":
            body = raw
        headers = [(b"X-Forwarded-For", v) for v in forwarded]
        data, _ = build(method, target, body, headers, None, "length")
        check(agent, sent, exchange(agent.port, data, source, wait=3))

    run()
    final_checks(agent, sent, markers)


def test_generated_request_lines(agent_factory: Callable[..., Agent], tmp_path: Path) -> None:
    """Request lines and raw bytes: methods, targets (not text, not UTF-8, huge, with
    queries and fragments), versions; some signed."""
    agent = hostile_agent(agent_factory)
    markers = tmp_path / "markers"
    markers.mkdir()
    sent = Sent()
    token_part = st.binary(max_size=40).map(lambda b: b.replace(b" ", b"").replace(b"\r\n", b""))

    @budget("request_line")
    @given(
        method=st.one_of(
            st.sampled_from([b"GET", b"POST", b"DELETE", b"HEAD", b"OPTIONS", b"get"]), token_part
        ),
        target=st.one_of(
            st.sampled_from(
                [
                    b"/api/v2/exec",
                    b"/api/v2/exec/",
                    b"/api/v2/info",
                    b"/healthz",
                    b"/api/v2/exec/x?wait=nan",
                    b"/api/v2/exec/x?wait=-inf",
                    b"/api/v2/exec/%ff",
                    b"/" + b"a" * 17000,
                    b"*",
                    b"http://h/x",
                ]
            ),
            token_part.map(lambda b: b"/" + b),
            token_part.map(lambda b: b"/api/v2/exec/" + b + b"?wait=" + b),
        ),
        version=st.sampled_from(
            [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.", b"HTTP/2", b"", b"HTTP/1.1 x"]
        ),
        signed=st.booleans(),
        tail=st.binary(max_size=100),
    )
    def run(method: bytes, target: bytes, version: bytes, signed: bool, tail: bytes) -> None:
        cmd = touch(markers, sent, may_run=signed)
        body = json.dumps({"cmd": cmd}).encode()
        data, _ = build(method, target, body, [], agent.key if signed else None, "length", version)
        answers = exchange(agent.port, data + tail, ALLOWED, head_only=method == b"HEAD")
        check(agent, sent, answers)

    run()
    final_checks(agent, sent, markers)
    assert os.path.isdir(markers)


def signed_raw(agent: Agent, method: str, target: str, extra: bytes, body: bytes = b"") -> bytes:
    h = signed_headers(agent.key, method, target, body)
    head = "".join(f"{k}: {v}\r\n" for k, v in h.items()).encode()
    return f"{method} {target} HTTP/1.1\r\n".encode() + head + extra + b"\r\n" + body


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        (b"Content-Length: \xb2\r\n", 400),  # "²".isdigit() is true; int("²") raised: 500
        (b"Content-Length: " + b"9" * 5000 + b"\r\n", 413),  # int() refuses 4300+ digits: 500
        (b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n", 400),  # which ends the body?
    ],
)
def test_headers_that_gave_a_500(agent: Agent, extra: bytes, status: int) -> None:
    data = b"POST /api/v2/exec HTTP/1.1\r\n" + extra + b"\r\n{}"
    assert exchange(agent.port, data, ALLOWED) == [status]


@pytest.mark.parametrize(
    "header",
    [b"X-Kernel-Time", b"X-Kernel-Signature", b"X-Kernel-Nonce"],
)
@pytest.mark.parametrize("value", [b"\xb2", "é".encode(), b"\xe9", b"1" * 13, b"\x00"])
def test_signature_headers_with_garbage_are_401(agent: Agent, header: bytes, value: bytes) -> None:
    data = signed_raw(agent, "GET", "/api/v2/info", b"")
    lines = [
        header + b": " + value if line.lower().startswith(header.lower() + b":") else line
        for line in data.split(b"\r\n")
    ]  # the signature's own header replaced by garbage (was a 500 for Time and Signature)
    assert exchange(agent.port, b"\r\n".join(lines), ALLOWED) == [401]


@pytest.mark.parametrize("size", [b"-5", b"+5", b"0x5", b"5_0", b" ", b"\xb2"])
def test_chunk_sizes_int_would_take(agent: Agent, size: bytes) -> None:
    data = b"POST /api/v2/exec HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\n"
    assert exchange(agent.port, data + b"{}\r\n0\r\n\r\n", ALLOWED) == [400]


@pytest.mark.parametrize("wait", ["nan", "-nan", "x", ""])
def test_a_wait_that_is_not_a_number(agent: Agent, wait: str) -> None:
    agent.exec("true", id="w1")
    r = agent.request("GET", f"/api/v2/exec/w1?wait={wait}")
    assert (r.status_code, r.json()["error"]) == (400, "bad_field")
