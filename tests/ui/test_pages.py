"""Every page of the console against a real server and real agents on loopback addresses:
it renders (English and Chinese), logs no console error, opens no dialog, passes axe-core with
no serious violation, and is usable at phone width; live parts follow the server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import (
    XSS,
    AgentProc,
    ServerProc,
    axe,
    eventually,
    loopback_ips,
    screenshot,
    write_catalogue,
)

LEAKS_JS = (Path(__file__).parent / "visible_text.js").read_text()
COUNT = "([sel, n]) => document.querySelectorAll(sel).length == n"
HAS_TEXT = "([sel, text]) => (document.querySelector(sel)?.textContent || '').includes(text)"
LATIN_WORD = re.compile(r"[A-Za-z]{3,}")
# Words that stay as they are in Chinese text (names, abbreviations, the product).
KEPT = {"Kernel", "CPU", "API", "URL", "SHA", "Agent", "systemd", "Python", "UTC", "Bearer",
        "kernel", "KERNEL_", "DATA_DIR", "NAME", "cfg", "uptime", "cli", "Authorization",
        "KiB", "MiB", "GiB", "TiB", "root", "bash", "curl", "KERNEL", "DATA", "DIR"}  # fmt: skip


class Fleet:
    def __init__(self, server: ServerProc, agents: dict[str, AgentProc], ids: dict[str, int]):
        self.server = server
        self.agents = agents
        self.ids = ids


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("ui-pages")
    data = root / "data"
    write_catalogue(data)
    server = ServerProc(data).start()
    agents: dict[str, AgentProc] = {}
    ids: dict[str, int] = {}
    try:
        ips = loopback_ips(4)
        for ip, (name, tags, description) in zip(
            ips,
            [
                ("web1", ["web"], "front web server"),
                ("web2", ["web"], " ".join(XSS)),
                ("db1", ["db"], ""),
            ],
            strict=False,
        ):
            agents[name] = AgentProc(ip, root / name).start()
            srv = server.add_agent(name, agents[name], tags=tags, description=description)
            ids[name] = srv["id"]
        with server.api() as c:
            r = c.post("/api/v1/servers", json={"name": "newbox", "tags": ["new"]})
            ids["newbox"] = r.json()["server"]["id"]
            # Init scripts ran on join; a job with output for the history and the audit log.
            job = c.post(
                "/api/v1/jobs",
                json={"cmd": "echo hello; echo " + " ".join(XSS), "targets": {"all": True}},
            ).json()
        server.wait_job(job["id"])
        yield Fleet(server, agents, ids)
    finally:
        for a in agents.values():
            a.stop()
        server.stop()


def chinese_leaks(w: Any, data: set[str]) -> list[str]:
    """Visible text outside [translate=no] (data: names, output) with Latin words in it."""
    texts = w.page.evaluate(LEAKS_JS)
    kept = KEPT | data
    return [t for t in texts if any(w not in kept for w in LATIN_WORD.findall(t))]


def data_words(fleet: Fleet) -> set[str]:
    """Names that are data wherever they appear (in labels too): servers, services, users."""
    words = set(fleet.ids) | {"echoer", "xss", "broken", "tester", "operator", "viewer"}
    return {w for name in words for w in LATIN_WORD.findall(name)}


def pages(fleet: Fleet) -> dict[str, str]:
    return {
        "dashboard": "/",
        "server": f"/servers/{fleet.ids['web1']}",
        "server-add": "/servers/new",
        "server-join": f"/servers/{fleet.ids['newbox']}/join",
        "services": "/services",
        "jobs": "/jobs",
        "job": "/jobs/" + str(_last_job(fleet)),
        "audit": "/audit",
        "users": "/users",
        "tokens": "/account",
        "settings": "/settings",
    }


def _last_job(fleet: Fleet) -> int:
    with fleet.server.api() as c:
        return int(c.get("/api/v1/jobs?limit=1").json()["jobs"][0]["id"])


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_page_renders_cleanly(fleet, new_page, lang, tmp_path: Path):
    w = new_page(fleet.server.url, user="tester", lang=lang)
    for name, path in pages(fleet).items():
        w.goto(path)
        w.page.wait_for_load_state("networkidle") if name != "dashboard" else None
        assert w.page.locator("h1").count() >= 1, name
        violations = axe(w)
        assert violations == [], (name, violations)
        if lang == "zh":
            assert w.page.locator("html").get_attribute("lang") == "zh-Hans"
            leaks = chinese_leaks(w, data_words(fleet))
            assert leaks == [], (name, leaks)
        screenshot(w, f"{name}-{lang}", tmp_path)
    w.check()


def test_phone_width_and_dark(fleet, new_page, tmp_path: Path):
    w = new_page(fleet.server.url, user="tester", width=390, height=844, dark=True)
    for name, path in (("dashboard", "/"), ("server", f"/servers/{fleet.ids['web1']}")):
        w.goto(path)
        width = w.page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390 + 2, (name, width)
        screenshot(w, f"{name}-phone-dark", tmp_path)


def test_dashboard_filters(fleet, new_page):
    w = new_page(fleet.server.url, user="tester")
    w.goto("/")
    cards = w.page.locator("#fleet [data-server-id]")
    assert cards.count() == 4
    w.page.fill("#q", "web")
    w.page.wait_for_function(COUNT, arg=["#fleet [data-server-id]", 2])
    w.page.fill("#q", "")
    w.page.select_option("select[name=state]", "pending")
    w.page.wait_for_function(COUNT, arg=["#fleet [data-server-id]", 1])
    assert "newbox" in cards.first.inner_text()
    w.page.select_option("select[name=state]", "")
    w.page.select_option("select[name=tag]", "db")
    w.page.wait_for_function(COUNT, arg=["#fleet [data-server-id]", 1])
    w.page.select_option("select[name=view]", "table")
    w.page.wait_for_selector("#fleet table.dense")
    assert "db1" in w.page.locator("#fleet tbody").inner_text()


def test_run_a_command_on_two_hosts_folded(fleet, new_page, tmp_path: Path):
    w = new_page(fleet.server.url, user="operator")
    w.goto("/")
    w.page.check("input[name=servers][value=web1]")
    w.page.check("input[name=servers][value=web2]")
    assert w.page.locator("#selected-count").inner_text() == "2 selected"
    cmd = "echo same; if [ $KERNEL_UI_HOST = web2 ]; then echo 'No space left on device' >&2"
    cmd += "; exit 3; fi"
    w.page.fill("#bulk input[name=cmd]", cmd)
    w.page.click("#bulk button[value=run]")
    w.page.wait_for_url(re.compile(r"/jobs/\d+$"))
    w.page.wait_for_selector("#fold .fold")  # folded once the job has ended
    folds = w.page.locator("#fold .fold")
    assert folds.count() == 2
    text = w.page.locator("#fold").inner_text()
    assert "No space left on device" in text and "same" in text
    w.page.click("#tab-hosts")
    panes = w.page.locator(".pane")
    assert panes.count() == 2
    web2 = w.page.locator(".pane", has_text="web2")
    assert "exit 3" in web2.inner_text() and "No space left" in web2.inner_text()
    with w.page.expect_download() as dl:
        web2.locator("a[download]").click()
    assert "No space left on device" in Path(dl.value.path()).read_text()
    screenshot(w, "job-live-en", tmp_path)
    # Rerun the failed runs: a new job on web2 only.
    first = w.page.url
    w.page.click("text=Rerun the failed runs")
    w.page.wait_for_url(lambda url: url != first)
    w.page.wait_for_load_state()
    w.page.wait_for_function(COUNT, arg=[".pane", 1])
    assert "web2" in w.page.locator(".pane").inner_text()


def test_command_box_streams_and_cancel(fleet, new_page):
    w = new_page(fleet.server.url, user="operator")
    w.goto(f"/servers/{fleet.ids['web1']}")
    box = w.page.locator("#cmd-title + form input[name=cmd]")
    box.fill("for i in 1 2 3; do echo line$i; sleep 0.4; done")
    box.press("Enter")
    out = w.page.locator("#command-output [data-out]")
    out.wait_for()
    w.page.wait_for_function(HAS_TEXT, arg=["#command-output [data-out]", "line1"])
    w.page.wait_for_function(HAS_TEXT, arg=["#command-output [data-run-badge]", "ok"])
    assert out.inner_text().split() == ["line1", "line2", "line3"]
    # A long one, cancelled from its pane (after a confirmation in a dialog of the page).
    box.fill("echo started; sleep 60")
    box.press("Enter")
    w.page.wait_for_function(HAS_TEXT, arg=["#command-output [data-out]", "started"])
    w.page.click("#command-output [data-cancel]")
    w.page.click("#confirm-ok")
    w.page.wait_for_function(HAS_TEXT, arg=["#command-output [data-job-badge]", "cancelled"])


def test_host_going_offline_turns_red_without_a_reload(fleet, new_page):
    w = new_page(fleet.server.url, user="viewer")
    w.goto("/")
    card = w.page.locator(f"[data-server-id='{fleet.ids['db1']}']")
    w.page.wait_for_selector("#live:not(.is-down)")
    assert "online" in card.locator("[data-state]").inner_text()
    agent = fleet.agents["db1"]
    agent.stop()
    has_class = (
        "([id, c]) => document.querySelector(`[data-server-id='${id}']`).classList.contains(c)"
    )
    try:
        w.page.wait_for_function(has_class, arg=[fleet.ids["db1"], "is-offline"], timeout=30000)
        assert card.locator("[data-state]").inner_text() == "offline"
    finally:
        agent.proc = None
        fleet.agents["db1"] = AgentProc(agent.ip, agent.state_dir, agent.key)
        fleet.agents["db1"].port = agent.port
        fleet.agents["db1"].start()
    w.page.wait_for_function(has_class, arg=[fleet.ids["db1"], "is-online"], timeout=30000)


def test_what_hosts_and_users_send_renders_as_text(fleet, new_page):
    # A hostname reported by a host: newbox joins with the real enrollment call, from an
    # agent on its own address, claiming an XSS string as its hostname.
    with fleet.server.api() as c:
        enroll = c.post(f"/api/v1/servers/{fleet.ids['newbox']}/enroll-token").json()["enroll"]
        script = httpx.get(f"{fleet.server.url}/agent/install.sh?token={enroll['token']}").text
    key = re.search(r"KERNEL_AGENT_KEY=(\w+)", script).group(1)
    ip = loopback_ips(4)[3]
    agent = AgentProc(ip, fleet.agents["web1"].state_dir.parent / "newbox", key).start()
    fleet.agents["newbox"] = agent
    transport = httpx.HTTPTransport(local_address=ip)
    with httpx.Client(transport=transport) as c:
        r = c.post(
            f"{fleet.server.url}/agent/enroll",
            json={"token": enroll["token"], "port": agent.port, "hostname": XSS[0] + XSS[1]},
        )
        assert r.status_code == 200, r.text
    w = new_page(fleet.server.url, user="tester")
    checks = {
        f"/servers/{fleet.ids['newbox']}": XSS[0] + XSS[1],  # hostname at join
        f"/servers/{fleet.ids['web2']}": XSS[0],  # server description
        "/services": XSS[1],  # a service's description
        f"/jobs/{_last_job_with(fleet, 'alert')}": XSS[0],  # command output
        "/": XSS[0],  # web2's description is searchable, not shown: the page must still load
    }
    for path, text in checks.items():
        w.goto(path)
        w.page.wait_for_load_state("networkidle")
        if path != "/":
            assert text in w.page.locator("main").inner_text(), path
        assert w.page.locator("main script").count() == 0, path
        assert w.page.locator("img[src=x]").count() == 0, path
    w.check()  # no alert dialog, no console error


def _last_job_with(fleet: Fleet, needle: str) -> int:
    with fleet.server.api() as c:
        for job in c.get("/api/v1/jobs?limit=50").json()["jobs"]:
            if needle in job["cmd"]:
                return int(job["id"])
    raise AssertionError("no such job")


def test_viewer_sees_no_action_controls_and_the_server_refuses(fleet, new_page):
    w = new_page(fleet.server.url, user="viewer")
    for path in ("/", f"/servers/{fleet.ids['web1']}", "/services", "/jobs/1"):
        w.goto(path)
        w.page.wait_for_load_state("networkidle")
        assert w.page.locator("main [hx-post]").count() == 0, path
        assert w.page.locator("main form[method=post]").count() == 0, path
        assert w.page.locator("main input[type=checkbox]").count() == 0, path
    assert w.page.locator("nav a[href='/users']").count() == 0
    csrf = w.page.locator("input[name=csrf_token]").first.get_attribute("value")
    for path, form in (
        (f"/servers/{fleet.ids['web1']}/run", {"cmd": "id"}),
        ("/jobs/new", {"cmd": "id", "servers": "web1"}),
        ("/services/refresh", {}),
        (f"/servers/{fleet.ids['web1']}/remove", {"confirm_name": "web1"}),
    ):
        r = w.page.request.post(
            fleet.server.url + path, form={**form, "csrf_token": csrf},
            headers={"X-CSRFToken": csrf, "HX-Request": "true"},
        )  # fmt: skip
        assert r.status == 403, (path, r.status)
    r = w.page.request.post(
        fleet.server.url + "/api/v1/jobs",
        data={"cmd": "id", "targets": {"all": True}},
        headers={"X-CSRFToken": csrf},
    )
    assert r.status == 403


def test_without_csrf_a_post_is_refused(fleet, new_page):
    w = new_page(fleet.server.url, user="operator")
    r = w.page.request.post(fleet.server.url + "/jobs/new", form={"cmd": "id", "servers": "web1"})
    assert r.status == 400 and "CSRF" in r.text()


def test_edit_and_remove_a_server(fleet, new_page):
    with fleet.server.api() as c:
        spare = c.post("/api/v1/servers", json={"name": "spare"}).json()["server"]["id"]
    w = new_page(fleet.server.url, user="tester")
    w.goto(f"/servers/{spare}")
    w.page.click("summary")
    w.page.fill("input[name=name]", "spare2")
    w.page.fill("textarea[name=description]", "kept for later")
    w.page.click("text=Save")
    w.page.wait_for_selector("h1:text('spare2')")
    assert "kept for later" in w.page.locator(".description").inner_text()
    w.page.click("button:text('Remove spare2')")
    dialog = w.page.locator("#confirm")
    assert "spare2" in dialog.locator(".confirm-text").inner_text()
    assert w.page.locator("#confirm-ok").is_disabled()
    w.page.fill("#confirm-input", "spare")
    assert w.page.locator("#confirm-ok").is_disabled()
    w.page.fill("#confirm-input", "spare2")
    w.page.click("#confirm-ok")
    w.page.wait_for_url(fleet.server.url + "/")
    assert w.page.locator("#fleet", has_text="spare2").count() == 0


def test_users_and_tokens(fleet, new_page):
    w = new_page(fleet.server.url, user="tester")
    w.goto("/users")
    w.page.fill("#add-user-title + form input[name=name]", "ann")
    w.page.select_option("#add-user-title + form select[name=role]", "operator")
    w.page.fill("#add-user-title + form input[name=password]", "ann-password-1")
    w.page.click("text=Add user")
    w.page.wait_for_selector("td:text('ann')")
    w.goto("/account")
    w.page.fill("input[name=name]", "laptop")
    w.page.click("text=Make a token")
    token = w.page.locator("#new-token").inner_text()
    assert token.startswith("kt_")
    r = httpx.get(fleet.server.url + "/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert r.json()["name"] == "tester"


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_fleet_larger_than_a_page_is_paged(new_page, tmp_path: Path, lang):
    # DASHBOARD_PAGE servers a page (5 here, 500 by default); filters and counts cover all.
    server = ServerProc(tmp_path / "data", KERNEL_DASHBOARD_PAGE="5").start()
    try:
        with server.api() as c:
            for i in range(1, 13):
                body = {"name": f"node{i:02d}", "tags": ["odd" if i % 2 else "even"]}
                assert c.post("/api/v1/servers", json=body).status_code == 201
        w = new_page(server.url, user="viewer", lang=lang)
        streams: list[str] = []
        w.page.on("request", lambda r: "/status/events" in r.url and streams.append(r.url))
        w.goto("/")
        rows = w.page.locator("#fleet [data-server-id]")
        assert rows.count() == 5
        pager = w.page.locator("#fleet nav.pager")
        assert ("1\u20135 of 12" if lang == "en" else "共 12 台") in pager.inner_text()
        assert "12" in w.page.locator(".counts").inner_text()  # every server counted
        eventually(lambda: streams, 10)
        assert streams[-1].count("%2C") + streams[-1].count(",") == 4  # the page's 5 ids
        w.page.locator("#fleet nav.pager a[rel=next]").click()
        w.page.wait_for_function(HAS_TEXT, arg=["#fleet", "node06"])
        assert "node01" not in w.page.locator("#fleet").inner_text()
        eventually(lambda: len(streams) >= 2, 10)  # the new page's servers followed
        w.page.locator("#fleet nav.pager a[rel=next]").click()
        w.page.wait_for_function(COUNT, arg=["#fleet [data-server-id]", 2])  # 11 and 12
        assert w.page.locator("#fleet nav.pager a[rel=next]").count() == 0
        w.page.fill("#q", "node03")  # found from any page, back on page one
        w.page.wait_for_function(COUNT, arg=["#fleet [data-server-id]", 1])
        assert w.page.locator("#fleet nav.pager").count() == 0
        w.goto("/?tag=even&page=2")  # a page link works without script too
        assert rows.count() == 1 and "node12" in rows.first.inner_text()
        assert axe(w) == []
        if lang == "zh":
            assert chinese_leaks(w, {"node", "even", "odd"}) == []
    finally:
        server.stop()
