"""Generated hostile HTTP at a real ``kernel-server``, over raw sockets (docs/security.md,
"Server").

Every request is built by hypothesis, at every route: request lines (methods, targets with
bytes that are not UTF-8 or not text, huge, odd paths and queries, versions), header names
and values (not latin-1, not UTF-8, NUL, huge, duplicate ``Content-Length``,
``Transfer-Encoding`` games, garbage ``Authorization``/``Cookie``/``Accept``/``Host``/
``X-Forwarded-*``), bodies (not UTF-8, UTF-16, BOMs, raw surrogates, lone-surrogate escapes,
deep nesting, numbers of 5000 digits, NaN, duplicate keys, forms and multipart where JSON is
wanted) and forms on ``/login``. Requests carry no credentials, a garbage token, a viewer's,
an operator's or an admin's token, or an admin's session cookie with or without its CSRF
token. Every command a request carries would ``touch`` a marker file named after it.
Asserted:

- never a 5xx answer (aside from two deliberate ones: 502 ``agent_unreachable`` when an agent
  a request names does not answer, and 501 for a transfer coding other than chunked, as
  HTTP prescribes), never a traceback in an answer, never a redirect off the site;
- the server process stays alive, keeps answering, and logs no unhandled error;
- a marker appears only for a request that carried an operator's or admin's credentials;
- no more jobs, servers, users or tokens exist than requests with the right to make them
  were answered 2xx.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.agents import Agent
from support.procs import free_port, wait_for
from support.rawhttp import Answer, exchange, request
from support.servers import PASSWORD, ServerProc

pytestmark = pytest.mark.slow

# Requests per test (each example is one request): 3500 per run, about a minute here.
EXAMPLES = {"headers": 1200, "bodies": 1200, "request_lines": 800, "login": 300}

# Seconds to wait for an answer: the app answers in milliseconds, but a loaded CI machine can
# take seconds (a login checks an argon2 hash); only an incomplete request goes unanswered.
WAIT = 10.0
# (hypothesis draws the first of a list most often: the ones that get furthest come first)
CREDS = ["admin", "operator", "session+csrf", "viewer", "none", "bad", "session"]
RUNS = {"operator", "admin", "session+csrf"}  # may create jobs (and so touch markers)
ADMIN = {"admin", "session+csrf"}

# Values that broke, or could break, a parser. Mostly the agent suite's list, and what a WSGI
# stack reads: charsets, q-values, cookies, forwarded addresses, hosts with ports.
TRICKY = [
    b"", b" ", b"0", b"\xb2", "٣".encode(), b"-1", b"+1", b"0x10", b"1_0", b" 1 ", b"1e3",
    b"9" * 5000, b"\xff\xfe", b"\x00", b"nan", b"chunked", b"Chunked", b"chunked, chunked",
    b"gzip, chunked", b"chunked, gzip", b"identity", b"xchunked", b"100-continue", b"close",
    b"keep-alive", b"Upgrade", b"h2c", b"127.0.0.1", b"10.0.0.1, 127.0.0.1", b", ,", b"::1",
    b"[::1]:99999", b"kernel:0", b"kernel:-1", b"a" * 300 + b".example", b"x" * 20000,
    "é".encode("latin-1"), "é".encode(), "\ud800".encode("utf-8", "surrogatepass"),
    b"\xc3\x28", b"%00", b"%ff", b"Bearer", b"Bearer ", b"Bearer \xff", b"Basic Og==",
    b"Bearer kt_" + b"a" * 5000, b"kernel_session=", b"kernel_session=\xff\xfe",
    b"kernel_session=eyJ1aWQiOjF9.Zz.Zz", b"kernel_session=.eJyrVg==.x.y", b"a=b; a=c; ;;=",
    b"text/html;q=nan", b"text/html;q=2, application/json;q=-1", b"*/*;q=0.", b"text/*;;",
    b"application/json; charset=latin-1", b"application/json; charset=utf-16",
    b"application/json; charset=nope", b"multipart/form-data", b"multipart/form-data; boundary=",
    b"application/x-www-form-urlencoded", b"bytes=0-1,-5", b"bytes=99999999999999999999-",
    b"W/\"x\"", b"Sun, 99 Foo 0000 99:99:99 GMT", b"1-2-3", b"https", b"javascript:",
    b"//evil.example", b"http://evil.example",
]  # fmt: skip
READ_HEADERS = [
    "Content-Length", "Transfer-Encoding", "Content-Type", "Content-Encoding", "Authorization",
    "Cookie", "X-CSRFToken", "Accept", "Accept-Encoding", "Accept-Language", "Accept-Charset",
    "Host", "Expect", "Connection", "Upgrade", "X-Forwarded-For", "X-Forwarded-Proto",
    "X-Forwarded-Host", "X-Forwarded-Port", "Forwarded", "Last-Event-ID", "Origin", "Referer",
    "If-None-Match", "If-Modified-Since", "Range", "User-Agent", "Trailer", "TE",
]  # fmt: skip

no_newlines = st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
# What HTTP lets through to the app (visible ASCII, space, tab, and bytes >= 0x80 that WSGI
# reads as latin-1), and so what the app itself must cope with; then bytes HTTP refuses.
printable = st.binary(max_size=80).map(
    lambda b: bytes(c if (c >= 0x20 and c != 0x7F) or c == 9 else 0x20 for c in b)
)
visible = st.text(max_size=40).map(
    lambda t: "".join(c if c >= " " and c != "\x7f" else "?" for c in t)
)
_odd_value = st.one_of(
    no_newlines, visible.map(lambda t: t.encode("utf-16", "surrogatepass").replace(b"\n", b""))
)
_good_value = st.one_of(
    st.sampled_from(TRICKY), printable, visible.map(lambda t: t.encode("utf-8", "surrogatepass"))
)
header_value = st.sampled_from([_good_value] * 9 + [_odd_value]).flatmap(lambda s: s)
# Mostly names the server reads (any case), so the values reach the parsers behind them; a
# few names that are not HTTP tokens at all (waitress refuses those whole: 400).
_read_name = st.sampled_from(READ_HEADERS).flatmap(
    lambda n: st.sampled_from([n, n, n.lower(), n.upper()]).map(str.encode)
)
_odd_name = st.one_of(
    st.sampled_from(READ_HEADERS).flatmap(
        lambda n: st.sampled_from([" " + n, n + " ", n + "\x00"]).map(str.encode)
    ),
    st.binary(min_size=1, max_size=20).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
)
header_name = st.sampled_from([_read_name] * 9 + [_odd_name]).flatmap(lambda s: s)
garbage_text = st.text(max_size=30)
json_garbage = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | garbage_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(garbage_text, inner, max_size=3),
    max_leaves=8,
)
values = st.one_of(
    json_garbage,
    st.sampled_from(["\ud800", "a\udc80b", "\x00", "", " ", "x" * 70000, "-1", "1e999"]),
    st.integers(min_value=-(2**70), max_value=2**70),
)
DEEP = "[" * 5000 + "]" * 5000
BIG = "1" + "0" * 5000  # past Python's int-from-text digit limit


@dataclass
class Target:
    srv: ServerProc
    agent: Agent
    markers: Path
    tokens: dict[str, str]
    cookie: str
    csrf: str
    ids: dict[str, str]
    enroll_token: str
    may_run: dict[str, bool] = field(default_factory=dict)  # per marker: were the creds valid?
    login_pair: tuple[str, str] | None = None  # a login form's cookie and CSRF token


@dataclass
class Sent:
    statuses: dict[int, int] = field(default_factory=dict)
    made: dict[str, int] = field(default_factory=dict)  # 2xx answers that may create rows
    requests: int = 0
    unanswered: int = 0  # no final answer in time (e.g. the server still waits for a body)
    started: float = field(default_factory=time.monotonic)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("hostile")
    (tmp / "agent").mkdir()
    agent = Agent(tmp / "agent", free_port())
    (tmp / "server").mkdir()
    # Status polls off: they would only add probes of the one agent to the load. The login
    # limit off (it has its own tests): generated logins must get through to the redirect.
    srv = ServerProc(
        tmp / "server",
        KERNEL_STATUS_POLLER="false",
        KERNEL_THREADS="16",
        KERNEL_LOGIN_MAX_FAILURES="1000000",
    )
    markers = tmp / "markers"
    markers.mkdir()
    try:
        agent.start()
        srv.start()
        srv.login()
        for name, role in [("op", "operator"), ("view", "viewer"), ("victim", "viewer")]:
            srv.create_user(name, role)
        tokens = {
            "admin": srv.token,
            "operator": srv.new_token("op"),
            "viewer": srv.new_token("view"),
        }
        tokens["bad"] = "kt_" + "0" * 43
        with srv.api() as api:
            body = {"name": "alpha", "agent_url": agent.url, "agent_key": agent.key}
            alpha = api.post("/api/v1/servers", json=body).json()["server"]["id"]
            pending = api.post("/api/v1/servers", json={"name": "pending"}).json()
            doomed = api.post("/api/v1/servers", json={"name": "doomed"}).json()["server"]["id"]
            job = api.post("/api/v1/jobs", json={"cmd": "true", "targets": {"all": True}}).json()
            wait_for(lambda: api.get(f"/api/v1/jobs/{job['id']}").json()["finished_at"], 30)
            victim = next(
                u for u in api.get("/api/v1/users").json()["users"] if u["name"] == "victim"
            )
            with srv.api(srv.new_token("victim")) as v:
                spare = v.post("/api/v1/tokens", json={"name": "spare"}).json()["id"]
        # An admin's browser session: the login form, then its CSRF token.
        with httpx.Client(base_url=srv.url) as browser:
            page = browser.get("/login").text
            form_csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
            assert form_csrf is not None
            r = browser.post(
                "/login",
                data={"csrf_token": form_csrf.group(1), "username": "tester", "password": PASSWORD},
            )
            assert r.status_code == 302, r.text
            csrf = browser.get("/api/v1/me").json()["csrf_token"]
            cookie = browser.cookies["kernel_session"]  # now holding that CSRF token
        yield Target(
            srv,
            agent,
            markers,
            tokens,
            cookie,
            csrf,
            ids={
                "alpha": str(alpha),
                "pending": str(pending["server"]["id"]),
                "doomed": str(doomed),
                "job": str(job["id"]),
                "run": job["runs"][0]["id"],
                "victim": str(victim["id"]),
                "spare": str(spare),
            },
            enroll_token=pending["enroll"]["token"],
        )
    finally:
        srv.stop()
        agent.teardown()


# -- the routes, and a plausible request for each ------------------------------------------
ROUTES = [
    ("GET", "/"), ("GET", "/healthz"), ("GET", "/login?next=/api/v1/me"), ("POST", "/login"),
    ("POST", "/logout"), ("GET", "/api/v1/me"), ("POST", "/api/v1/auth/token"),
    ("GET", "/api/v1/tokens"), ("POST", "/api/v1/tokens"), ("DELETE", "/api/v1/tokens/{spare}"),
    ("GET", "/api/v1/users"), ("POST", "/api/v1/users"), ("PATCH", "/api/v1/users/{victim}"),
    ("GET", "/api/v1/audit?limit=5"), ("GET", "/api/v1/jobs"), ("POST", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/{job}"), ("POST", "/api/v1/jobs/{job}/cancel"),
    ("POST", "/api/v1/jobs/{job}/rerun"), ("GET", "/api/v1/jobs/{job}/runs/{run}"),
    ("GET", "/api/v1/jobs/{job}/events"), ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/servers"), ("POST", "/api/v1/servers"), ("GET", "/api/v1/servers/{alpha}"),
    ("PATCH", "/api/v1/servers/{pending}"), ("DELETE", "/api/v1/servers/{doomed}"),
    ("POST", "/api/v1/servers/{alpha}/check"), ("POST", "/api/v1/servers/{pending}/enroll-token"),
    ("GET", "/api/v1/servers/{alpha}/init"), ("POST", "/api/v1/servers/{alpha}/init"),
    ("GET", "/api/v1/servers/{alpha}/metrics"), ("GET", "/api/v1/servers/{alpha}/services"),
    ("GET", "/api/v1/servers/{alpha}/status"), ("POST", "/api/v1/servers/{alpha}/status/refresh"),
    ("GET", "/api/v1/services"), ("GET", "/api/v1/services/nope"),
    ("POST", "/api/v1/services/nope/deploy"), ("GET", "/api/v1/services/nope/hosts"),
    ("POST", "/api/v1/services/refresh"), ("GET", "/api/v1/status"),
    ("POST", "/api/v1/status/refresh"), ("GET", "/agent/install.sh"),
    ("GET", "/agent/install.sh?token={enroll}"), ("GET", "/agent/kernel-agent.py"),
    ("GET", "/agent/uninstall.sh"), ("POST", "/agent/enroll"),
    ("GET", "/service-files/x/1/y/z"), ("GET", "/static/agent/install.sh"),
    ("GET", "/static/agent/kernel"), ("GET", "/static/agent/uninstall.sh"),
    ("GET", "/static/init/x"), ("GET", "/static/service/x/y"),
]  # fmt: skip
# Which rows a 2xx answer of a route may have made.
CREATES = {
    ("POST", "/api/v1/jobs"): "jobs", ("POST", "/api/v1/jobs/{job}/rerun"): "jobs",
    ("POST", "/api/v1/servers"): "servers", ("POST", "/api/v1/users"): "users",
    ("POST", "/api/v1/tokens"): "api_tokens", ("POST", "/api/v1/auth/token"): "api_tokens",
}  # fmt: skip


def fill(t: Target, path: str) -> str:
    return path.format(**t.ids, enroll=t.enroll_token)


def marker(t: Target, sent: Sent, may_run: bool, garbage: str = "") -> str:
    """A command that touches a fresh marker; garbage after it is a bash comment."""
    token = uuid.uuid4().hex
    t.may_run[token] = may_run
    tail = " # " + garbage.replace("\n", " ").replace("\r", " ") if garbage else ""
    return f"touch {t.markers}/{token}{tail}"


def plausible_body(t: Target, route: tuple[str, str], cmd: str) -> dict[str, Any] | None:
    """A body each route would take (so generated headers reach the views)."""
    method, path = route
    if method == "GET" or path.endswith(("/cancel", "/rerun", "/check", "/enroll-token")):
        return None
    return {
        "/api/v1/jobs": {"cmd": cmd, "targets": {"all": True}},
        "/api/v1/auth/token": {"username": "tester", "password": "not-the-password"},
        "/api/v1/tokens": {"name": "made-by-fuzz"},
        "/api/v1/users": {"name": "fuzz-" + uuid.uuid4().hex[:8], "password": "p" * 12},
        "/api/v1/users/{victim}": {"role": "viewer"},
        "/api/v1/servers": {"name": "fuzz-" + uuid.uuid4().hex[:8]},
        "/api/v1/servers/{pending}": {"description": "fuzzed"},
        "/api/v1/servers/{alpha}/init": {"script": "no-such-script.sh"},
        "/api/v1/services/nope/deploy": {"targets": {"all": True}},
        "/api/v1/status/refresh": {"servers": ["alpha"]},
        "/agent/enroll": {"token": t.enroll_token, "port": 9},
    }.get(path, {})


def credentials(t: Target, cred: str, method: str) -> list[tuple[bytes, bytes]]:
    if cred in t.tokens:
        return [(b"Authorization", f"Bearer {t.tokens[cred]}".encode())]
    if cred.startswith("session"):
        out = [(b"Cookie", f"kernel_session={t.cookie}".encode())]
        if cred == "session+csrf":
            out.append((b"X-CSRFToken", t.csrf.encode()))
        return out
    return []


def may_create(cred: str, route: tuple[str, str]) -> bool:
    path = route[1]
    if path == "/api/v1/auth/token":
        return True  # with the password (the login suite sends it)
    if path == "/api/v1/tokens":
        return cred in ("viewer", "operator", "admin", "session+csrf")
    if path in ("/api/v1/jobs", "/api/v1/jobs/{job}/rerun"):
        return cred in RUNS
    return cred in ADMIN


def leaves_site(t: Target, location: bytes) -> bool:
    """Whether a browser following ``location`` would leave the server (browsers drop tabs
    and newlines and read a backslash as a slash). The site is the server's URL, or the
    ``Host`` the request named (werkzeug's slash redirects are absolute, built from it)."""
    text = location.decode("latin-1")
    text = re.sub(r"[\t\n\r]", "", text).replace("\\", "/").strip("\x00- ")
    joined = urlsplit(urljoin(t.srv.url + "/login", text))
    return joined.scheme != "http" or joined.netloc not in (urlsplit(t.srv.url).netloc, "kernel")


def deliberate(a: Answer) -> bool:
    """The two 5xx answers that are not faults: an agent a request names did not answer
    (502), and a transfer coding other than chunked (501, as HTTP says; waitress answers it
    before the app)."""
    if a.status == 502:
        return b'"agent_unreachable"' in a.body
    return a.status == 501 and b"Transfer-Encoding requested is not supported" in a.body


def check(t: Target, sent: Sent, answers: list[Answer], route: tuple[str, str], cred: str) -> None:
    sent.requests += 1
    for a in answers:
        sent.statuses[a.status] = sent.statuses.get(a.status, 0) + 1
        assert a.status < 500 or deliberate(a), (a.status, a.head, a.body[:500], t.srv.log[-3000:])
        assert b"Traceback" not in a.body, a.body[:2000]
        for location in a.header(b"location"):
            assert not leaves_site(t, location), (a.head, location)
    final = [a for a in answers if a.status >= 200]
    sent.unanswered += not final
    if final and 200 <= final[0].status < 300 and route in CREATES and may_create(cred, route):
        kind = CREATES[route]
        sent.made[kind] = sent.made.get(kind, 0) + 1
    assert t.srv.proc is not None and t.srv.proc.poll() is None, t.srv.log[-3000:]


def final_checks(t: Target, sent: Sent, name: str) -> None:
    time.sleep(1.0)  # runs accepted at the end may still be on their way
    ran = {p.name for p in t.markers.iterdir()}
    unauthorised = sorted(m for m in ran if not t.may_run.get(m, False))
    assert not unauthorised, f"ran without an operator's credentials: {unauthorised}"
    assert httpx.get(t.srv.url + "/healthz", timeout=10).status_code == 200
    with t.srv.api() as api:
        assert api.get("/api/v1/me").status_code == 200

    # Every run the suite's jobs made ended on the agent (ok or failed), none lost.
    def settled() -> dict[str, int] | None:
        states = runs_by_state(t)
        return None if states.get("queued") or states.get("running") else states

    runs = wait_for(settled, 60)
    assert runs.get("lost", 0) == 0, runs
    # Nearly every request was answered, so the checks above saw what the server did.
    assert sent.unanswered <= sent.requests // 20, sent.unanswered
    log = t.srv.log
    assert "unhandled error" not in log and "Traceback" not in log, log[-5000:]
    took = time.monotonic() - sent.started
    statuses = dict(sorted(sent.statuses.items()))
    print(
        f"\n{name}: {sent.requests} requests in {took:.0f} s, {sent.unanswered} unanswered, "
        f"statuses {statuses}, "
        f"ran {len(ran)}, made {sent.made}, runs {runs_by_state(t)}"
    )


def rows_made_at_most(t: Target, before: dict[str, int], sent: Sent) -> None:
    now = count_rows(t)
    for kind, n in now.items():
        assert n - before[kind] <= sent.made.get(kind, 0), (kind, before[kind], n, sent.made)


def count_rows(t: Target) -> dict[str, int]:
    with sqlite3.connect(f"file:{t.srv.data_dir / 'kernel.db'}?mode=ro", uri=True) as db:
        return {
            k: db.execute(f"SELECT count(*) FROM {k}").fetchone()[0]
            for k in ("jobs", "servers", "users", "api_tokens")
        }


def runs_by_state(t: Target) -> dict[str, int]:
    with sqlite3.connect(f"file:{t.srv.data_dir / 'kernel.db'}?mode=ro", uri=True) as db:
        return dict(db.execute("SELECT state, count(*) FROM runs GROUP BY state").fetchall())


def budget(test: str) -> settings:
    return settings(
        max_examples=EXAMPLES[test],
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )


def address(t: Target) -> tuple[str, int]:
    return ("127.0.0.1", t.srv.port)


# -- the suites ------------------------------------------------------------------------------
def test_generated_headers(target: Target) -> None:
    """Every route with a plausible request and credentials, plus generated headers added to
    (and duplicating) the ones it needs, framed by length, chunked or not at all."""
    t, sent = target, Sent()
    before = count_rows(t)

    @budget("headers")
    @given(
        route=st.sampled_from(ROUTES),
        cred=st.sampled_from(CREDS),
        headers=st.lists(st.tuples(header_name, header_value), max_size=3),
        framing=st.sampled_from(["length", "length", "length", "chunked", "none"]),
        garbage=garbage_text,
    )
    def run(
        route: tuple[str, str],
        cred: str,
        headers: list[tuple[bytes, bytes]],
        framing: str,
        garbage: str,
    ) -> None:
        method, path = route
        body_doc = plausible_body(t, route, marker(t, sent, cred in RUNS, garbage))
        body = b"" if body_doc is None else json.dumps(body_doc).encode()
        base = [(b"Host", b"kernel"), *credentials(t, cred, method)]
        if body_doc is not None:
            base.append((b"Content-Type", b"application/json"))
        data = request(method.encode(), fill(t, path).encode(), base + headers, body, framing)
        check(t, sent, exchange(address(t), data, WAIT, head_only=method == "HEAD"), route, cred)

    run()
    final_checks(t, sent, "headers")
    rows_made_at_most(t, before, sent)


def test_generated_bodies(target: Target) -> None:
    """Every route that takes a body, with every field generated (any JSON value, lone
    surrogates, NUL, huge), then the whole body encoded as UTF-8, latin-1, UTF-16, with a
    BOM, with raw surrogates, nested 5000 deep, with a 5000-digit number, NaN, duplicate
    keys, trailing bytes, or sent as a form, multipart or random bytes."""
    t, sent = target, Sent()
    before = count_rows(t)
    # Jobs weigh more: they are what would run something.
    with_body = [r for r in ROUTES if r[0] in ("POST", "PATCH")] + [("POST", "/api/v1/jobs")] * 8
    fields = {
        "/api/v1/jobs": ["cmd", "targets", "stdin", "env", "cwd", "timeout", "title"],
        "/api/v1/servers": [
            "name",
            "tags",
            "agent_url",
            "agent_key",
            "description",
            "tls_fingerprint",
        ],
        "/api/v1/users": ["name", "password", "role"],
        "/api/v1/users/{victim}": ["disabled", "password", "role"],
        "/api/v1/tokens": ["name"],
        "/api/v1/auth/token": ["username", "password", "name"],
        "/agent/enroll": ["token", "port", "hostname", "server"],
        "/api/v1/servers/{alpha}/init": ["script"],
        "/api/v1/services/nope/deploy": ["lines", "targets", "timeout"],
        "/api/v1/status/refresh": ["servers"],
    }
    fields["/api/v1/servers/{pending}"] = fields["/api/v1/servers"]
    safe_urls = st.sampled_from(
        [
            "http://127.0.0.1:9",
            "https://127.0.0.1:9",
            "http://10.0.0.1:8001",
            "ftp://x",
            "http://[::1]:9",
            "http://127.0.0.1:99999",
            "http://user@127.0.0.1:9/x?y#z",
        ]
    )
    env_names = st.text(max_size=10).filter(
        lambda n: not n.upper().startswith(("BASH", "LD_", "ENV", "PS4", "SHELLOPTS", "PATH"))
    )
    special = {
        "agent_url": st.one_of(safe_urls, values),
        "env": st.one_of(values, st.dictionaries(env_names, values, max_size=3)),
        "targets": st.one_of(
            values,
            st.fixed_dictionaries({}, optional={"all": values, "tags": values, "servers": values}),
        ),
        "token": st.one_of(st.just(target.enroll_token), values),
        "port": st.one_of(st.just(9), st.integers(), values),
    }

    def route_and_doc(route: tuple[str, str]) -> Any:
        names = [*fields.get(route[1], []), "nope", "\ud800", ""]  # and some it does not take
        return st.tuples(
            st.just(route), st.dictionaries(st.sampled_from(names), values, max_size=4)
        )

    @budget("bodies")
    @given(
        route_doc=st.sampled_from(with_body).flatmap(route_and_doc),
        cred=st.sampled_from(CREDS),
        specials=st.fixed_dictionaries({}, optional=special),
        cmd_kind=st.sampled_from(["marker", "marker", "none", "garbage", "surrogate"]),
        garbage=garbage_text,
        encoding=st.sampled_from(
            [
                "utf-8",
                "ascii",
                "latin-1",
                "utf-16",
                "bom",
                "surrogatepass",
                "deep",
                "big",
                "nan",
                "dup",
                "trailing",
                "top-list",
                "empty",
                "form",
                "multipart",
                "bytes",
            ]
        ),
        content_type=st.sampled_from(
            [
                b"application/json",
                b"application/json",
                b"application/json; charset=latin-1",
                b"application/json; charset=utf-16",
                b"text/plain",
                b"",
                None,
                b"application/x-www-form-urlencoded",
                b"multipart/form-data; boundary=zz",
            ]
        ),
        raw=st.binary(max_size=200),
    )
    def run(
        route_doc: tuple[tuple[str, str], dict[str, Any]],
        cred: str,
        specials: dict[str, Any],
        cmd_kind: str,
        garbage: str,
        encoding: str,
        content_type: bytes | None,
        raw: bytes,
    ) -> None:
        route, doc = route_doc
        method, path = route
        taken = fields.get(path, [])
        body_doc = {**(plausible_body(t, route, "") or {}), **doc}
        body_doc.update({k: v for k, v in specials.items() if k in taken})
        cmd = marker(t, sent, cred in RUNS, garbage)
        if path != "/api/v1/jobs":
            if isinstance(body_doc.get("cmd"), str):
                body_doc["cmd"] = cmd
        elif cmd_kind == "marker":
            body_doc["cmd"] = cmd
        elif cmd_kind == "surrogate":
            body_doc["cmd"] = cmd + " \ud800"
        elif cmd_kind == "garbage":  # not text: nothing bash could run
            body_doc["cmd"] = [cmd]
        elif isinstance(body_doc.get("cmd"), str):
            body_doc["cmd"] = cmd  # never a generated string as a command
        body = encode(body_doc, encoding, raw)
        headers = [(b"Host", b"kernel"), *credentials(t, cred, method)]
        if content_type is not None:
            if encoding == "multipart":
                content_type = b"multipart/form-data; boundary=zz"
            headers.append((b"Content-Type", content_type))
        data = request(method.encode(), fill(t, path).encode(), headers, body)
        check(t, sent, exchange(address(t), data, WAIT), route, cred)

    run()
    final_checks(t, sent, "bodies")
    rows_made_at_most(t, before, sent)


def encode(doc: dict[str, Any], encoding: str, raw: bytes) -> bytes:
    text = json.dumps(doc, ensure_ascii=encoding == "ascii")
    if encoding in ("utf-8", "ascii"):
        return text.encode("utf-8", "replace")
    if encoding == "surrogatepass":
        return text.encode("utf-8", "surrogatepass")
    if encoding == "latin-1":
        return text.encode("latin-1", "replace")
    if encoding == "utf-16":
        return text.encode("utf-16", "replace")
    if encoding == "bom":
        return b"\xef\xbb\xbf" + text.encode("utf-8", "replace")
    inner = text[:-1] + ", " if len(text) > 2 else "{"
    if encoding == "deep":
        return (inner + '"x": ' + DEEP + "}").encode("utf-8", "replace")
    if encoding == "big":
        return (inner + '"x": ' + BIG + ', "port": ' + BIG + "}").encode("utf-8", "replace")
    if encoding == "nan":
        return (inner + '"x": NaN, "timeout": Infinity, "port": -0}').encode("utf-8", "replace")
    if encoding == "dup":
        return (inner + '"cmd": 1, "name": [], "targets": null}').encode("utf-8", "replace")
    if encoding == "trailing":
        return text.encode("utf-8", "replace") + b"\x00" + raw
    if encoding == "top-list":
        return ("[" + text + "]").encode("utf-8", "replace")
    if encoding == "empty":
        return b""
    if encoding == "form":
        pairs = [
            f"{quote(str(k), safe='', errors='surrogatepass')}="
            f"{quote(str(v), safe='', errors='surrogatepass')}"
            for k, v in doc.items()
        ]
        return "&".join(pairs).encode("utf-8", "surrogatepass") + b"&%ff=%fe&" + raw
    if encoding == "multipart":
        return (
            b'--zz\r\nContent-Disposition: form-data; name="cmd"\r\n\r\n'
            + raw
            + b'\r\n--zz\r\nContent-Disposition: form-data; name="f"; filename="\xff"\r\n\r\n'
            + text.encode("utf-8", "surrogatepass")
            + b"\r\n--zz--\r\n"
        )
    return raw  # "bytes"


def test_generated_request_lines(target: Target) -> None:
    """Request lines: methods, targets (every route with garbage in its path parameters and
    query, bytes that are not UTF-8 or not text, huge, traversal, absolute URLs, ``*``),
    versions, and bytes after the line."""
    t, sent = target, Sent()
    before = count_rows(t)
    segment = st.one_of(
        st.sampled_from(
            [
                b"0",
                b"-1",
                b"99999999999999999999999",
                b"1.5",
                b"%ff",
                b"%00",
                b"%2e%2e",
                b"..",
                b"\xff\xfe",
                b"\xc3\x28",
                b"\xed\xa0\x80",
                "é".encode(),
                b"a" * 5000,
                b"%25",
                b"%2f",
                b"\\",
                b";x",
                b"%0d%0a",
                b"",
            ]
        ),
        st.binary(max_size=20).map(lambda b: b.replace(b" ", b"").replace(b"/", b"")),
    )
    query = st.one_of(
        st.just(b""),
        st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        b"limit",
                        b"before",
                        b"state",
                        b"output",
                        b"next",
                        b"token",
                        b"removed",
                        b"last_event_id",
                        b"since",
                        b"\xff",
                        b"",
                    ]
                ),
                segment,
            ),
            max_size=4,
        ).map(lambda kv: b"?" + b"&".join(k + b"=" + v for k, v in kv)),
    )
    token_part = st.binary(max_size=30).map(lambda b: b.replace(b" ", b"").replace(b"\r\n", b""))

    @budget("request_lines")
    @given(
        route=st.sampled_from(ROUTES),
        cred=st.sampled_from(CREDS),
        method=st.one_of(
            st.sampled_from(
                [
                    b"GET",
                    b"POST",
                    b"PUT",
                    b"PATCH",
                    b"DELETE",
                    b"HEAD",
                    b"OPTIONS",
                    b"TRACE",
                    b"CONNECT",
                    b"PRI",
                    b"get",
                    b"G\xffT",
                ]
            ),
            st.sampled_from([b"GET", b"POST", b"DELETE", b"PATCH"]),
            token_part,
        ),
        params=st.lists(segment, min_size=3, max_size=3),
        query=query,
        whole=st.one_of(
            st.none(),
            st.none(),
            st.sampled_from(
                [
                    b"*",
                    b"http://evil.example/",
                    b"//evil.example/x",
                    b"/" * 3000,
                    b"/a" * 9000,
                    b"/%ff%fe",
                    b"/\x00",
                    b"/api/v1/../../etc/passwd",
                    b"/api/v1/jobs/1#frag",
                    b"/api/v1/jobs?",
                    b"",
                    b"?",
                ]
            ),
            token_part.map(lambda b: b"/" + b),
        ),
        version=st.sampled_from(
            [
                b"HTTP/1.1",
                b"HTTP/1.1",
                b"HTTP/1.1",
                b"HTTP/1.0",
                b"HTTP/1.",
                b"HTTP/2",
                b"HTTP/0.9",
                b"",
                b"HTTP/1.1 x",
                b"http/1.1",
            ]
        ),
        trailing=st.one_of(st.just(b""), st.binary(max_size=40)),
    )
    def run(
        route: tuple[str, str],
        cred: str,
        method: bytes,
        params: list[bytes],
        query: bytes,
        whole: bytes | None,
        version: bytes,
        trailing: bytes,
    ) -> None:
        path = fill(t, route[1]).encode()
        parts = path.split(b"?")[0].split(b"/")
        for i in range(len(parts)):  # replace path parameters (numbers, ids) with garbage
            if parts[i][:1].isdigit() or (i and parts[i - 1] in (b"runs",)):
                parts[i] = params[i % 3]
        target_ = whole if whole is not None else b"/".join(parts) + query
        headers = [(b"Host", b"kernel"), *credentials(t, cred, "GET")]
        data = request(method, target_, headers, b"", "length", version) + trailing
        sent_as = (method.decode("latin-1"), route[1])  # what a 2xx may have made
        check(t, sent, exchange(address(t), data, WAIT, head_only=method == b"HEAD"), sent_as, cred)

    run()
    final_checks(t, sent, "request lines")
    rows_made_at_most(t, before, sent)


def test_generated_login_forms(target: Target) -> None:
    """The /login form and the token route: generated user names, passwords, ``next``
    targets (off-site, with control characters, backslashes, schemes), CSRF tokens,
    encodings that are not UTF-8, repeated fields; ``GET /login?next=…``."""
    t, sent = target, Sent()
    before = count_rows(t)
    next_values = st.one_of(
        st.sampled_from(
            [
                "/",
                "/api/v1/me",
                "//evil.example",
                "/\\evil.example",
                "\\\\evil.example",
                "/\t/evil.example",
                "/\n/evil.example",
                "/\x00/evil.example",
                "/\x01/evil.example",
                " //evil.example",
                "http://evil.example",
                "https:evil.example",
                "javascript:alert(1)",
                "/%2f/evil.example",
                "/%5cevil.example",
                "/.//evil.example",
                "\ud800",
                "/" + "a" * 10000,
                "/\r\nSet-Cookie: x=y",
                "///evil.example",
            ]
        ),
        st.text(max_size=30),
        st.text(max_size=10).map(lambda s: "/" + s),
    )
    field_value = st.one_of(st.text(max_size=40), st.sampled_from(["tester", PASSWORD, ""]))

    @budget("login")
    @given(
        shape=st.sampled_from(["login", "form", "form-latin-1", "multipart", "get", "token"]),
        username=field_value,
        password=field_value,
        next_=next_values,
        csrf=st.sampled_from(["valid", "none", "garbage"]),
        right=st.booleans(),
        repeat=st.booleans(),
        raw=st.one_of(st.just(b""), st.binary(max_size=60)),  # (not UTF-8: no form at all)
    )
    def run(
        shape: str,
        username: str,
        password: str,
        next_: str,
        csrf: str,
        right: bool,
        repeat: bool,
        raw: bytes,
    ) -> None:
        route = ("POST", "/login")
        if right or shape == "login":  # logged in: the answer is the redirect to ``next``
            username, password = "tester", PASSWORD
        if shape == "login":  # a browser's own login, with only ``next`` generated
            csrf, raw, shape = "valid", b"", "form"
        headers = [(b"Host", b"kernel")]
        cred = "none"
        if shape == "get":
            q = quote(next_, safe="", errors="surrogatepass").encode()
            data = request(b"GET", b"/login?next=" + q, headers)
            check(
                t, sent, exchange(address(t), data, WAIT), ("GET", "/login?next=/api/v1/me"), cred
            )
            return
        if shape == "token":
            route = ("POST", "/api/v1/auth/token")
            doc = {"username": username, "password": password, "name": next_}
            body = json.dumps(doc).encode("utf-8", "surrogatepass")
            headers.append((b"Content-Type", b"application/json"))
            data = request(b"POST", route[1].encode(), headers, body)
            check(t, sent, exchange(address(t), data, WAIT), route, cred)
            return
        form = {"username": username, "password": password, "next": next_}
        if csrf == "valid":  # the form's token belongs to a session cookie: a fresh pair
            cookie, token = fresh_login_pair(t)
            headers.append((b"Cookie", f"kernel_session={cookie}".encode()))
            form["csrf_token"] = token
        elif csrf == "garbage":
            form["csrf_token"] = username
        if shape == "multipart":
            body = (
                b"".join(
                    b'--zz\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
                    % (k.encode(), v.encode("utf-8", "surrogatepass"))
                    for k, v in form.items()
                )
                + b"--zz--\r\n"
            )
            headers.append((b"Content-Type", b"multipart/form-data; boundary=zz"))
        else:
            charset = "latin-1" if shape == "form-latin-1" else "utf-8"
            pairs = [
                f"{k}={quote(v, safe='', encoding=charset, errors='replace')}"
                for k, v in form.items()
            ]
            if repeat:
                pairs += pairs
            body = "&".join(pairs).encode() + b"&" + raw.replace(b"&", b"")
            headers.append((b"Content-Type", b"application/x-www-form-urlencoded"))
        data = request(b"POST", b"/login", headers, body)
        check(t, sent, exchange(address(t), data, WAIT), route, cred)

    run()
    final_checks(t, sent, "login forms")
    rows_made_at_most(t, before, sent)


def fresh_login_pair(t: Target) -> tuple[str, str]:
    """A session cookie and the CSRF token of its login form (made once per server)."""
    if t.login_pair is None:
        with httpx.Client(base_url=t.srv.url) as browser:
            page = browser.get("/login").text
            found = re.search(r'name="csrf_token" value="([^"]+)"', page)
            assert found is not None
            t.login_pair = (browser.cookies["kernel_session"], found.group(1))
    return t.login_pair


# -- fixed cases the generated ones found ----------------------------------------------------
@pytest.mark.parametrize(
    "next_",
    ["/\t/evil.example", "/\n/evil.example", "/\r\n/evil.example", "/\\evil.example",
     "/\\\\evil.example", "/\x00/evil.example", "/\x0b/evil.example", "/\x7f/evil.example",
     "//evil.example", "http://evil.example", " /x", "/\u3000/x", "\ud800"],
)  # fmt: skip
def test_login_stays_on_the_site(target: Target, next_: str) -> None:
    """After a login, ``next`` with a control character (a tab or newline browsers drop) or a
    backslash (read as a slash) took the browser to another site, or (a newline) was a 500."""
    cookie, token = fresh_login_pair(target)
    form = {"csrf_token": token, "username": "tester", "password": PASSWORD, "next": next_}
    body = "&".join(f"{k}={quote(v, safe='', errors='surrogatepass')}" for k, v in form.items())
    headers = [
        (b"Host", b"kernel"),
        (b"Cookie", f"kernel_session={cookie}".encode()),
        (b"Content-Type", b"application/x-www-form-urlencoded"),
    ]
    data = request(b"POST", b"/login", headers, body.encode())
    (answer,) = exchange(address(target), data, wait=30)
    assert answer.status == 302, answer.body
    (location,) = answer.header(b"location")
    assert not leaves_site(target, location), location
    assert location == b"/" or location.startswith(b"/%") or location == next_.encode()
