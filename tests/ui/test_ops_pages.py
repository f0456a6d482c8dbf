"""The schedules, files and alerts pages against a real server, real agents on loopback
addresses and a loopback HTTP sink for notifications (nothing leaves this machine): every
page renders in English and Chinese with no console error, dialog, serious axe-core
violation or untranslated word; the forms work in Chromium; garbage in each form is a clear
error, never a 500; viewers get no controls and the server refuses them anyway."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.receivers import Sink

from .conftest import XSS, AgentProc, ServerProc, axe, eventually, loopback_ips, screenshot
from .test_pages import HAS_TEXT, chinese_leaks

MAX_FETCH = 64 * 1024
MAX_UPLOAD = 1024 * 1024


EXPECTED_4XX = re.compile(r"status of 4\d\d|Response Status Error Code 4\d\d")


def forget_expected_4xx(w: Any) -> None:
    """The 4xx answers a test provoked on purpose (garbage in a form) are logged by Chromium
    and htmx as console errors; only those are dropped before the page is checked."""
    w.errors[:] = [e for e in w.errors if not EXPECTED_4XX.search(e)]


class Ops:
    def __init__(self, server: ServerProc, sink: Sink, root: Path, ids: dict[str, Any]):
        self.server = server
        self.sink = sink
        self.root = root  # the agents run on this machine: their files are here
        self.ids = ids


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    root = tmp_path_factory.mktemp("ui-ops")
    server = ServerProc(
        root / "data",
        KERNEL_ALERTS="true",
        KERNEL_ALERTS_INTERVAL="0.5",
        KERNEL_FILES_MAX_FETCH=str(MAX_FETCH),
        KERNEL_FILES_MAX_UPLOAD=str(MAX_UPLOAD),
    ).start()
    sink = Sink()
    agents: list[AgentProc] = []
    ids: dict[str, Any] = {}
    try:
        hosts = [("web1", ["web"]), ("db1", ["db"])]
        for ip, (name, tags) in zip(loopback_ips(2), hosts, strict=True):
            agent = AgentProc(ip, root / name).start()
            agents.append(agent)
            ids[name] = server.add_agent(name, agent, tags=tags)["id"]
        with server.api() as c:
            r = c.post("/api/v1/alerts/channels", json={"name": "hook", "url": sink.url()})
            assert r.status_code == 201, r.text
            ids["channel"] = r.json()["id"]
            r = c.post("/api/v1/alerts/rules", json={
                "name": "command-failed", "kind": "job", "kinds": ["command"],
                "hold_resolve": 0})  # fmt: skip
            assert r.status_code == 201, r.text
            r = c.post("/api/v1/alerts/rules", json={"name": "disk-full", "kind": "disk",
                                                      "percent": 99, "tags": ["db"]})  # fmt: skip
            assert r.status_code == 201, r.text
            r = c.post("/api/v1/schedules", json={
                "name": "nightly-report", "cmd": "echo report; echo " + " ".join(XSS),
                "targets": {"tags": ["web"]}, "cron": "0 3 * * *",
                "timezone": "Asia/Shanghai", "description": XSS[0]})  # fmt: skip
            assert r.status_code == 201, r.text
            ids["schedule"] = r.json()["id"]
            fired = c.post(f"/api/v1/schedules/{ids['schedule']}/run").json()
            r = c.post("/api/v1/files?name=motd.txt", content=b"hello\n" + XSS[1].encode())
            assert r.status_code == 201, r.text
            ids["upload"] = r.json()["id"]
            failing = c.post(
                "/api/v1/jobs", json={"cmd": "echo boom; exit 1", "targets": {"servers": ["db1"]}}
            ).json()
        server.wait_job(fired["job"]["id"])
        server.wait_job(failing["id"])
        # The job rule opens an alert for db1 and its message reaches the sink.
        with server.api() as c:
            alerts = eventually(lambda: c.get("/api/v1/alerts?state=open").json()["alerts"], 30)
            ids["alert"] = alerts[0]["id"]
        eventually(lambda: sink.got, 30)
        (root / "web1" / "text.conf").write_text("key = value\n" + " ".join(XSS) + "\n")
        (root / "web1" / "binary.bin").write_bytes(b"\x00\x01\xff\xfe binary")
        (root / "web1" / "big.txt").write_text("x" * (MAX_FETCH + 10))
        yield Ops(server, sink, root, ids)
    finally:
        for a in agents:
            a.stop()
        sink.stop()
        server.stop()


def new_pages(ops: Ops) -> dict[str, str]:
    text = ops.root / "web1" / "text.conf"
    return {
        "schedules": "/schedules",
        "schedule": f"/schedules/{ops.ids['schedule']}",
        "schedule-new": "/schedules/new",
        "schedule-edit": f"/schedules/{ops.ids['schedule']}/edit",
        "files": "/files",
        "files-fetch": f"/files/fetch?server=web1&path={text}",
        "alerts": "/alerts",
        "alert": f"/alerts/{ops.ids['alert']}",
        "alert-rules": "/alerts/rules",
        "alert-channels": "/alerts/channels",
    }


DATA = {"web", "db", "hook", "command", "failed", "disk", "full", "nightly", "report", "motd",
        "txt", "tester", "operator", "viewer", "conf", "text"}  # fmt: skip


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_new_page_renders_cleanly(ops, new_page, lang, tmp_path: Path):
    w = new_page(ops.server.url, user="tester", lang=lang)
    for name, path in new_pages(ops).items():
        w.goto(path)
        w.page.wait_for_load_state("networkidle")
        assert w.page.locator("h1").count() >= 1, name
        assert axe(w) == [], name
        if lang == "zh":
            assert w.page.locator("html").get_attribute("lang") == "zh-Hans"
            assert chinese_leaks(w, DATA) == [], name
        screenshot(w, f"{name}-{lang}", tmp_path)
    # The nav leads to each.
    for href in ("/schedules", "/files", "/alerts"):
        assert w.page.locator(f"nav.nav a[href='{href}']").count() == 1
    w.check()


def test_phone_width_and_dark(ops, new_page, tmp_path: Path):
    w = new_page(ops.server.url, user="tester", width=390, height=844, dark=True)
    for name, path in new_pages(ops).items():
        w.goto(path)
        w.page.wait_for_load_state("networkidle")
        width = w.page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390 + 2, (name, width)
        screenshot(w, f"{name}-phone-dark", tmp_path)


def test_what_hosts_and_users_send_renders_as_text(ops, new_page):
    w = new_page(ops.server.url, user="tester")
    for path in (f"/schedules/{ops.ids['schedule']}", new_pages(ops)["files-fetch"]):
        w.goto(path)
        w.page.wait_for_load_state("networkidle")
        assert XSS[0] in w.page.locator("main").inner_text(), path
        assert w.page.locator("main script").count() == 0
        assert w.page.locator("img[src=x]").count() == 0
    w.check()


# -- schedules ----------------------------------------------------------------------------------
def test_create_preview_run_disable_and_delete_a_schedule(ops, new_page):
    w = new_page(ops.server.url, user="operator")
    w.goto("/schedules")
    w.page.click("text=New schedule")
    w.page.wait_for_url("**/schedules/new")
    w.page.fill("input[name=name]", "ui-made")
    w.page.fill("input[name=cmd]", "echo from the console")
    w.page.check("input[name=servers][value=web1]")
    # The live preview: the next times in the zone given, or what is wrong.
    w.page.fill("input[name=timezone]", "Europe/Berlin")
    w.page.fill("input[name=cron]", "*/5 * * * *")
    w.page.wait_for_function(HAS_TEXT, arg=["#cron-preview", "Every fifth minute"])
    assert w.page.locator("#cron-preview ol.times li").count() == 5
    assert "+01:00" in w.page.locator("#cron-preview").inner_text() or "+02:00" in (
        w.page.locator("#cron-preview").inner_text()
    )
    w.page.fill("input[name=cron]", "61 * * * *")
    w.page.wait_for_function(HAS_TEXT, arg=["#cron-preview", "not valid"])
    # Submitting garbage: the API's message beside the form, the values kept.
    w.page.click("button:text('Create schedule')")
    w.page.wait_for_selector("#schedule-error:not([hidden])")
    assert "not valid" in w.page.locator("#schedule-error").inner_text()
    w.page.fill("input[name=timezone]", "Mars/Olympus")
    w.page.fill("input[name=cron]", "0 4 * * *")
    w.page.click("button:text('Create schedule')")
    w.page.wait_for_function(HAS_TEXT, arg=["#schedule-error", "unknown time zone"])
    w.page.fill("input[name=timezone]", "Europe/Berlin")
    w.page.click("button:text('Create schedule')")
    w.page.wait_for_url(re.compile(r"/schedules/\d+$"))
    assert w.page.locator("h1").inner_text() == "ui-made"
    assert w.page.locator("#next-title + ol.times li").count() == 5
    sched_url = w.page.url
    # Run now: the firing's job page.
    w.page.click("button:text('Run now')")
    w.page.wait_for_url(re.compile(r"/jobs/\d+$"))
    w.page.wait_for_function(HAS_TEXT, arg=["main", "from the console"])
    job_id = int(w.page.url.rsplit("/", 1)[1])
    w.goto(sched_url.removeprefix(ops.server.url))
    assert w.page.locator(f"#firings-title ~ div a[href='/jobs/{job_id}']").count() == 1
    # Disable, then enable.
    w.page.click("button:text('Disable')")
    w.page.wait_for_selector("button:text('Enable')")
    assert "None" in w.page.locator("#next-title + p").inner_text()
    w.page.click("button:text('Enable')")
    w.page.wait_for_selector("button:text('Disable')")
    # Edit: a script instead of the command.
    w.page.click("text=Edit")
    w.page.wait_for_url("**/edit")
    w.page.check("input[name=mode][value=script]")
    w.page.fill("textarea[name=script]", "echo line one\necho line two\n")
    w.page.click("button:text('Save')")
    w.page.wait_for_url(sched_url)
    assert "line two" in w.page.locator("main pre").inner_text()
    # The list: last result links to its job.
    w.goto("/schedules")
    row = w.page.locator("tr", has_text="ui-made")
    assert row.locator(f"a[href='/jobs/{job_id}']").count() == 1
    # Delete, after a confirmation naming it.
    w.goto(sched_url.removeprefix(ops.server.url))
    w.page.click("button:text('Delete ui-made')")
    assert "ui-made" in w.page.locator("#confirm .confirm-text").inner_text()
    w.page.click("#confirm-ok")
    w.page.wait_for_url("**/schedules")
    assert w.page.locator("main", has_text="ui-made").count() == 0
    forget_expected_4xx(w)


def _csrf(w: Any) -> str:
    return str(w.page.locator("input[name=csrf_token]").first.get_attribute("value"))


def _post(w: Any, path: str, body: bytes | dict[str, str], csrf: str) -> Any:
    headers = {"X-CSRFToken": csrf, "HX-Request": "true"}
    if isinstance(body, bytes):
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return w.page.request.post(w.base + path, data=body, headers=headers)
    return w.page.request.post(w.base + path, form=body, headers=headers)


GOOD_SCHEDULE = {"name": "g", "cmd": "true", "target_kind": "servers", "servers": "web1",
                 "cron": "0 3 * * *", "timezone": "UTC", "enabled": "1"}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"cron": "garbage here"}, "not valid"),
        ({"cron": "@sometimes"}, "not valid"),
        ({"timezone": "../../etc/passwd"}, "unknown time zone"),
        ({"cmd": "echo \x00"}, "NUL"),
        ({"timeout": "soon"}, "number"),
        ({"missed": "maybe"}, "missed"),
        ({"servers": "nosuch"}, "no such server"),
        ({"target_kind": "tags", "tags": ""}, "targets"),
        ({"mode": "script", "script": "  "}, "script"),
    ],
)
def test_garbage_in_the_schedule_form_is_a_clear_400(ops, new_page, change, said):
    w = new_page(ops.server.url, user="operator")
    w.goto("/schedules/new")
    r = _post(w, "/schedules/new", {**GOOD_SCHEDULE, **change}, _csrf(w))
    assert r.status == 400, (change, r.status)
    assert said in r.text(), r.text()


def test_non_utf8_bytes_in_forms_are_never_a_500(ops, new_page):
    w = new_page(ops.server.url, user="tester")
    w.goto("/files")
    csrf = _csrf(w)
    raw = b"name=\xff\xfe%ff&cmd=echo+\xc3&target_kind=servers&servers=web1&cron=0+3+*+*+*"
    raw += b"&timezone=UTC&csrf_token=" + csrf.encode()
    push = b"upload=" + ops.ids["upload"].encode()
    for path, body in (
        ("/schedules/new", raw),
        ("/files/push", push + b"&servers=web1&path=/nonexistent-kernel-ui/\xff"),
        ("/alerts/rules", b"name=\xff&kind=disk&percent=\xfe"),
        ("/alerts/channels", b"name=x&url=json://127.0.0.1:1/\xff\xfe"),
    ):
        r = _post(w, path, body, csrf)
        assert r.status in (201, 204, 303, 400), (path, r.status, r.text()[:300])
    r = w.page.request.get(w.base + "/schedules/preview?cron=%ff%fe&timezone=%ff")
    assert r.status == 200 and "time zone" in r.text(), r.text()
    assert "Traceback" not in ops.server.log()


# -- files --------------------------------------------------------------------------------------
def test_upload_push_and_fetch_a_file(ops, new_page, tmp_path: Path):
    w = new_page(ops.server.url, user="operator")
    w.goto("/files")
    assert "1.0 MiB" in w.page.locator(".head").inner_text()  # the caps
    local = tmp_path / "app.conf"
    local.write_text("setting = 1\n" + XSS[0] + "\n")
    # Over the cap: refused in the page before sending.
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (MAX_UPLOAD + 1))
    w.page.set_input_files("#upload-form input[type=file]", str(big))
    w.page.click("#upload-form button[type=submit]")
    w.page.wait_for_selector("#upload-error:not([hidden])")
    assert "more than the cap" in w.page.locator("#upload-error").inner_text()
    w.page.set_input_files("#upload-form input[type=file]", str(local))
    assert w.page.input_value("#upload-form input[name=name]") == "app.conf"
    w.page.click("#upload-form button[type=submit]")
    w.page.wait_for_url(re.compile(r"/files\?uploaded=\w+"))
    assert w.page.locator("td", has_text="app.conf").count() == 1
    # Push it to web1 (a job), then see the result on the job page.
    target = ops.root / "web1" / "pushed" / "app.conf"
    target.parent.mkdir(exist_ok=True)
    form = w.page.locator("#push-form")
    assert "app.conf" in form.locator("select[name=upload] option:checked").inner_text()
    form.locator("input[name=servers][value=web1]").check()
    form.locator("input[name=path]").fill("/tmp/../etc/passwd")
    form.locator("button[type=submit]").click()
    w.page.wait_for_function(HAS_TEXT, arg=["#push-error", ".."])
    form.locator("input[name=path]").fill(str(target))
    form.locator("input[name=mode]").fill("0600")
    form.locator("button[type=submit]").click()
    w.page.wait_for_url(re.compile(r"/jobs/\d+$"))
    job = ops.server.wait_job(int(w.page.url.rsplit("/", 1)[1]))
    assert [r["state"] for r in job["runs"]] == ["ok"], job
    assert target.read_text() == local.read_text()
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    # Fetch it back: shown as text, escaped.
    w.goto("/files")
    w.page.select_option("#fetch-form select[name=server]", "web1")
    w.page.fill("#fetch-form input[name=path]", str(target))
    w.page.click("#fetch-form button[type=submit]")
    w.page.wait_for_selector("pre.fetched")
    assert XSS[0] in w.page.locator("pre.fetched").inner_text()
    with w.page.expect_download() as dl:
        w.page.click("#fetched a[download]")
    assert Path(dl.value.path()).read_text() == local.read_text()
    # Binary: not shown, offered as a download.
    w.goto(f"/files/fetch?server=web1&path={ops.root / 'web1' / 'binary.bin'}")
    assert w.page.locator("pre.fetched").count() == 0
    assert w.page.locator("#fetched a[download]").count() == 1
    forget_expected_4xx(w)


@pytest.mark.parametrize(
    ("path", "status", "said"),
    [
        ("big.txt", 413, "FILES_MAX_FETCH"),
        ("missing.txt", 404, "no such file"),
        ("../web1/text.conf", 400, "'..'"),
        ("text.conf%00x", 400, "NUL"),
        ("%ff%fe", 404, "web1"),
    ],
)
def test_fetch_errors_are_shown_clearly(ops, new_page, path, status, said):
    w = new_page(ops.server.url, user="operator")
    resp = w.goto(f"/files/fetch?server=web1&path={ops.root / 'web1'}/{path}")
    assert resp.status == status
    box = w.page.locator("#fetch-error")
    assert said.lower() in box.inner_text().lower(), box.inner_text()
    forget_expected_4xx(w)


# -- alerts -------------------------------------------------------------------------------------
def test_alerts_list_filters_and_alert_page(ops, new_page):
    w = new_page(ops.server.url, user="viewer")
    w.goto("/alerts")
    row = w.page.locator("tbody tr").first
    assert "db1" in row.inner_text() and "open" in row.inner_text()
    w.page.select_option("select[name=state]", "resolved")
    w.page.click("button:text('Filter')")
    w.page.wait_for_url("**state=resolved")
    assert w.page.locator("text=No alerts match.").count() == 1
    w.goto("/alerts?state=open")
    w.page.locator("tbody tr a").first.click()
    w.page.wait_for_url(re.compile(r"/alerts/\d+$"))
    text = w.page.locator("#sent-title + div").inner_text()
    assert "hook" in text and "delivered" in text


def test_rules_add_garbage_edit_and_delete(ops, new_page):
    w = new_page(ops.server.url, user="operator")
    w.goto("/alerts/rules")
    form = w.page.locator("#add-rule")
    form.locator("input[name=name]").fill("load-high")
    form.locator("select[name=kind]").select_option("load")
    assert form.locator("input[name=percent]").is_hidden()
    assert form.locator("input[name=above]").is_visible()
    form.locator("input[name=above]").fill("lots")
    form.locator("button[type=submit]").click()
    w.page.wait_for_function(HAS_TEXT, arg=["#add-rule-error", "must be a number"])
    form.locator("input[name=above]").fill("-3")
    form.locator("button[type=submit]").click()
    w.page.wait_for_function(HAS_TEXT, arg=["#add-rule-error", "above"])
    form.locator("input[name=above]").fill("8")
    form.locator("input[name=minutes]").fill("10")
    form.locator("button[type=submit]").click()
    w.page.wait_for_selector("td:text('load-high')")
    assert (
        "load1 above 8 for 10 min"
        in w.page.locator("tr[id^=rule-]", has_text="load-high").inner_text()
    )
    details = w.page.locator("details", has_text="Edit or delete load-high")
    details.locator("summary").click()
    details.locator("input[name=above]").fill("12")
    details.locator("button:text('Save')").click()
    w.page.wait_for_function(HAS_TEXT, arg=["main table", "above 12"])
    details = w.page.locator("details", has_text="Edit or delete load-high")
    details.locator("summary").click()
    details.locator("button:text('Delete load-high')").click()
    assert "load-high" in w.page.locator("#confirm .confirm-text").inner_text()
    w.page.click("#confirm-ok")
    w.page.wait_for_function("() => !document.body.innerText.includes('Edit or delete load-high')")
    forget_expected_4xx(w)


def test_channels_secrets_hidden_test_message_and_garbage(ops, new_page):
    w = new_page(ops.server.url, user="tester")
    w.goto("/alerts/channels")
    form = w.page.locator("#add-channel")
    form.locator("input[name=name]").fill("bad")
    form.locator("input[name=url]").fill("not a url at all")
    form.locator("button[type=submit]").click()
    w.page.wait_for_selector("#add-channel-error:not([hidden])")
    assert w.page.locator("#add-channel-error").inner_text().strip()
    # A URL with a secret (the loopback sink, with credentials in it): hidden in the page.
    secret_url = f"json://kernel:s3cr3tpass@127.0.0.1:{ops.sink.port}/secret-hook"
    form.locator("input[name=name]").fill("with-secret")
    form.locator("input[name=url]").fill(secret_url)
    form.locator("button[type=submit]").click()
    w.page.wait_for_selector("td:text('with-secret')")
    assert "s3cr3tpass" not in w.page.content()
    row = w.page.locator("tr[id^=channel-]", has_text="with-secret")
    before = len(ops.sink.got)
    row.locator("button:text('Send a test')").click()
    row.locator(".test-result .okay").wait_for()
    eventually(lambda: len(ops.sink.got) > before, 10)
    assert ops.sink.got[-1]["path"] == "/secret-hook"
    # A channel whose target is down: the test says why, in the page.
    dead = Sink()
    dead.stop()
    w.page.reload()
    form.locator("input[name=name]").fill("down")
    form.locator("input[name=url]").fill(dead.url())
    form.locator("button[type=submit]").click()
    w.page.wait_for_selector("td:text('down')")
    row = w.page.locator("tr[id^=channel-]", has_text="down")
    row.locator("button:text('Send a test')").click()
    row.locator(".test-result .alert").wait_for(timeout=30000)
    # Delete, after a confirmation naming it.
    details = w.page.locator("details", has_text="Edit or delete down")
    details.locator("summary").click()
    details.locator("button:text('Delete down')").click()
    assert "down" in w.page.locator("#confirm .confirm-text").inner_text()
    w.page.click("#confirm-ok")
    w.page.wait_for_function("() => !document.body.innerText.includes('Edit or delete down')")
    forget_expected_4xx(w)


# -- roles and CSRF -----------------------------------------------------------------------------
def test_viewer_sees_no_controls_and_the_server_refuses(ops, new_page):
    w = new_page(ops.server.url, user="viewer")
    for path in ("/schedules", f"/schedules/{ops.ids['schedule']}", "/files", "/alerts",
                 "/alerts/rules", "/alerts/channels"):  # fmt: skip
        w.goto(path)
        w.page.wait_for_load_state("networkidle")
        assert w.page.locator("main [hx-post]").count() == 0, path
        assert w.page.locator("main form[method=post]").count() == 0, path
        assert w.page.locator("main input[type=file]").count() == 0, path
    csrf = _csrf(w)
    sid, cid, up = ops.ids["schedule"], ops.ids["channel"], ops.ids["upload"]
    for path in ("/schedules/new", f"/schedules/{sid}/run", f"/schedules/{sid}/disable",
                 f"/schedules/{sid}/delete", f"/schedules/{sid}/edit", "/files/push",
                 f"/files/{up}/delete", "/alerts/rules", "/alerts/channels",
                 f"/alerts/channels/{cid}/test", f"/alerts/channels/{cid}/delete"):  # fmt: skip
        assert _post(w, path, {"csrf_token": csrf}, csrf).status == 403, path
    for path in ("/schedules/new", "/files/fetch?server=web1&path=/etc/hostname"):
        assert w.page.request.get(w.base + path).status == 403, path
    w = new_page(ops.server.url, user="operator")
    w.goto("/alerts/channels")
    assert w.page.locator("main button:text('Send a test')").count() == 0
    assert w.page.locator("#add-channel").count() == 0
    csrf = _csrf(w)
    for path in ("/alerts/channels", f"/alerts/channels/{cid}/test", f"/alerts/channels/{cid}"):
        assert _post(w, path, {"csrf_token": csrf}, csrf).status == 403, path


def test_without_csrf_the_new_forms_are_refused(ops, new_page):
    w = new_page(ops.server.url, user="tester")
    sid = ops.ids["schedule"]
    for path in (f"/schedules/{sid}/run", "/files/push", "/alerts/rules", "/alerts/channels"):
        r = w.page.request.post(ops.server.url + path, form={"name": "x"})
        assert r.status == 400 and "CSRF" in r.text(), path
    # The upload (the API's own, from the page's script) needs the token too.
    r = w.page.request.post(ops.server.url + "/api/v1/files?name=x", data=b"bytes")
    assert r.status == 400 and "CSRF" in r.text()
