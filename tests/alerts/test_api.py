"""The alerts API: rules and channels with their bad input (clear 400s), "send a test" to a
real HTTP sink and a real SMTP server, a target that is down (a recorded failure), roles."""

from __future__ import annotations

from kernel.server.components import components
from kernel.server.core.db import utcnow
from kernel.server.models.alerts import AlertChannel

RULES = "/api/v1/alerts/rules"
CHANNELS = "/api/v1/alerts/channels"


def test_rules_add_list_edit_remove(admin):
    rule = admin.post(RULES, {"name": "disk full", "kind": "disk", "percent": 90.0,
                              "tags": ["web", "web"]}, expect=201)  # fmt: skip
    assert rule["params"] == {"percent": 90.0, "mounts": []} and rule["tags"] == ["web"]
    assert rule["channels"] is None and rule["hold_resolve"] == 60.0 and rule["enabled"]
    assert rule["condition"] == "disk use above 90 % on any filesystem"
    assert [r["name"] for r in admin.get(RULES)["rules"]] == ["disk full"]
    edited = admin.patch(f"{RULES}/{rule['id']}", {"percent": 80.0, "mounts": ["/var"]})
    assert edited["params"] == {"percent": 80.0, "mounts": ["/var"]}
    admin.post(RULES, {"name": "disk full", "kind": "offline"}, expect=409)
    off = admin.post(RULES, {"name": "down", "kind": "offline", "seconds": 30.0}, expect=201)
    admin.patch(f"{RULES}/{off['id']}", {"name": "disk full"}, expect=409)
    assert admin.get(f"{RULES}/{off['id']}")["params"] == {"seconds": 30.0}
    assert admin.delete(f"{RULES}/{off['id']}") == {"removed": True, "id": off["id"]}
    admin.get(f"{RULES}/{off['id']}", expect=404)


RULE_GARBAGE = [
    ({"name": "x", "kind": "disk"}, "a disk rule needs 'percent'"),
    ({"name": "x", "kind": "disk", "percent": 150.0}, "'percent' must be less than 100"),
    ({"name": "x", "kind": "disk", "percent": 0}, "'percent' must be greater than 0"),
    ({"name": "x", "kind": "disk", "percent": "90"}, "'percent' must be a number"),
    ({"name": "x", "kind": "disk", "percent": True}, "'percent' must be a number"),
    ({"name": "x", "kind": "disk", "percent": 90, "mounts": ["var"]}, "absolute path"),
    ({"name": "x", "kind": "load", "above": -1}, "'above' must be greater than 0"),
    ({"name": "x", "kind": "load", "above": 2, "minutes": 1e9}, "'minutes' must be less"),
    ({"name": "x", "kind": "load", "above": 2, "metric": "load2"}, "'metric' must be one of"),
    ({"name": "x", "kind": "offline", "seconds": 0}, "'seconds' must be greater than"),
    ({"name": "x", "kind": "offline", "percent": 5}, "is not a threshold of offline rules"),
    ({"name": "x", "kind": "weather"}, "'kind' must be one of"),
    ({"name": "", "kind": "offline"}, "'name' must have at least 1 character"),
    ({"name": "   ", "kind": "offline"}, "'name' must not be empty"),
    ({"name": "x\x00", "kind": "offline"}, "NUL"),
    ({"name": "x", "kind": "offline", "tags": ["bad tag!"]}, "'tags[0]'"),
    ({"name": "x", "kind": "offline", "channels": [999]}, "no such alert channel(s): 999"),
    ({"name": "x", "kind": "offline", "hold_open": -5}, "'hold_open' must be greater"),
    ({"name": "x", "kind": "job", "kinds": ["Bad Kind"]}, "'kinds[0]'"),
    ({"name": "x", "kind": "service", "services": ["../x"]}, "'services[0]'"),
    ({"name": "x", "kind": "offline", "threshold": 3}, "unknown field(s): threshold"),
]


def test_rule_garbage_is_a_clear_400(admin):
    """(One app for all: each case is a request.)"""
    for body, says in RULE_GARBAGE:
        answer = admin.call("POST", RULES, 400, json=body).json()
        assert answer["error"] == "bad_request" and says in answer["message"], (body, answer)
    rule = admin.post(RULES, {"name": "ok", "kind": "disk", "percent": 90.0}, expect=201)
    for body, says in [
        ({"above": 3.0}, "'above' is not a threshold of disk rules"),
        ({"percent": 100}, "less than 100"),
        ({"kind": "load"}, "unknown field"),
        ({"channels": [1], "all_channels": True}, "not both"),
    ]:
        answer = admin.call("PATCH", f"{RULES}/{rule['id']}", 400, json=body).json()
        assert says in answer["message"], (body, answer)
    assert admin.get(RULES)["rules"] == [rule]  # nothing half-changed


def test_rule_body_that_is_not_json(admin):
    for data in (b"{", b"\xff\xfe", b"[1]", b'{"name": "\\ud800", "kind": "offline"}'):
        r = admin.call("POST", RULES, 400, data=data, content_type="application/json")
        assert r.json()["error"] == "bad_request"


URL_GARBAGE = [
    ("not a url", "must not contain spaces"),
    ("hooks.example.com/x", "is not a URL"),
    ("json://", "is not a URL"),
    ("foo://bar", "unknown scheme 'foo'"),
    ("http://127.0.0.1:9/hook", "for a generic JSON webhook write json://"),
    ("tgram://bottoken/ChatID", "is not a valid tgram URL"),
    ("json://[::1", "is not a valid json URL"),
    ("json://a\tb", "control characters"),
    ("", "at least 1 character"),
    ("x" * 2001, "at most 2000 characters"),
    ("json://a\x00b", "NUL"),
]


def test_channel_url_garbage_is_a_clear_400(admin):
    for url, says in URL_GARBAGE:
        answer = admin.call("POST", CHANNELS, 400, json={"name": "c", "url": url}).json()
        assert answer["error"] == "bad_request" and says in answer["message"], (url, answer)
    assert admin.get(CHANNELS)["channels"] == []


def test_channel_secrets_are_sealed_and_hidden(admin, app):
    url = "json://alice:s3cret-pass@127.0.0.1:9/hook"
    ch = admin.post(CHANNELS, {"name": "hook", "url": url}, expect=201)
    assert ch["service"] == "JSON" and "s3cret-pass" not in ch["url"]
    assert "s3cret-pass" not in str(admin.get(CHANNELS))
    with components(app).db.engine.connect() as c:
        stored = c.exec_driver_sql("SELECT url FROM alert_channels").scalar()
    assert stored.startswith("sealed:v1:") and "s3cret" not in stored
    with components(app).db.session() as s:
        assert s.get(AlertChannel, ch["id"]).url == url  # opened when read
    admin.post(CHANNELS, {"name": "hook", "url": url}, expect=409)
    admin.patch(f"{CHANNELS}/{ch['id']}", {"url": "foo://bar"}, expect=400)
    renamed = admin.patch(f"{CHANNELS}/{ch['id']}", {"name": "hook2", "enabled": False})
    assert renamed["name"] == "hook2" and not renamed["enabled"]


def test_send_a_test_to_a_real_http_sink(admin, sink):
    ch = admin.post(CHANNELS, {"name": "sink", "url": sink.url()}, expect=201)
    answer = admin.post(f"{CHANNELS}/{ch['id']}/test")
    assert answer["sent"] is True and answer["error"] is None
    assert len(sink.got) == 1 and sink.got[0]["path"] == "/hook"
    body = sink.got[0]["body"]
    assert body["title"] == "[Kernel] test message" and body["type"] == "info"
    assert "'sink'" in body["message"] and "admin1" in body["message"]
    shown = admin.get(f"{CHANNELS}/{ch['id']}")
    assert shown["last_delivery"]["ok"] is True
    listed = admin.get(f"/api/v1/alerts/notifications?channel={ch['id']}")["notifications"]
    assert [(n["event"], n["state"], n["attempts"]) for n in listed] == [("test", "sent", 1)]
    assert listed[0]["deliveries"][0]["ok"] is True


def test_send_a_test_to_a_real_smtp_server(admin, mailbox):
    ch = admin.post(CHANNELS, {"name": "mail", "url": mailbox.url()}, expect=201)
    assert ch["service"] == "E-Mail"
    answer = admin.post(f"{CHANNELS}/{ch['id']}/test")
    assert answer["sent"] is True, answer
    assert len(mailbox.got) == 1
    sender, rcpts, content = mailbox.got[0]
    assert sender == "kernel@example.com" and rcpts == ["ops@example.com"]
    assert "Subject: [Kernel] test message" in content and "'mail'" in content


def test_a_target_that_is_down_is_a_recorded_failure(admin, sink):
    sink.stop()  # nothing listens there any more
    ch = admin.post(CHANNELS, {"name": "gone", "url": sink.url()}, expect=201)
    answer = admin.post(f"{CHANNELS}/{ch['id']}/test")
    assert answer["sent"] is False and "Connection error" in answer["error"]
    n = answer["notification"]
    assert n["state"] == "failed" and n["attempts"] == 1 and n["deliveries"][0]["ok"] is False
    assert admin.get(f"{CHANNELS}/{ch['id']}")["last_delivery"]["ok"] is False


def test_a_target_answering_500_is_a_recorded_failure(admin, sink):
    sink.status = 500
    ch = admin.post(CHANNELS, {"name": "broken", "url": sink.url()}, expect=201)
    answer = admin.post(f"{CHANNELS}/{ch['id']}/test")
    assert answer["sent"] is False and answer["error"] and len(sink.got) == 1


def test_removing_a_channel_cancels_what_it_was_owed_and_rules_forget_it(admin, app):
    ch = admin.post(CHANNELS, {"name": "c1", "url": "json://127.0.0.1:9/x"}, expect=201)
    rule = admin.post(RULES, {"name": "r", "kind": "offline", "channels": [ch["id"]]}, expect=201)
    assert rule["channels"] == [ch["id"]]
    from kernel.server.models.alerts import AlertNotification

    with components(app).db.session() as s:
        s.add(AlertNotification(channel_id=ch["id"], channel_name="c1", event="open",
                                title="t", body="b", state="queued", attempts=0,
                                next_at=utcnow()))  # fmt: skip
    admin.delete(f"{CHANNELS}/{ch['id']}")
    assert admin.get(f"{RULES}/{rule['id']}")["channels"] == []
    n = admin.get("/api/v1/alerts/notifications")["notifications"][0]
    assert n["state"] == "cancelled" and n["channel_id"] is None and n["channel"] == "c1"
    assert admin.patch(f"{RULES}/{rule['id']}", {"all_channels": True})["channels"] is None


def test_roles(as_role, sink):
    viewer, operator, admin = as_role("viewer"), as_role("operator"), as_role("admin")
    viewer.post(RULES, {"name": "x", "kind": "offline"}, expect=403)
    rule = operator.post(RULES, {"name": "x", "kind": "offline"}, expect=201)
    operator.post(CHANNELS, {"name": "c", "url": sink.url()}, expect=403)
    ch = admin.post(CHANNELS, {"name": "c", "url": sink.url()}, expect=201)
    operator.post(f"{CHANNELS}/{ch['id']}/test", expect=403)
    assert viewer.get(RULES)["rules"][0]["id"] == rule["id"]
    assert viewer.get(CHANNELS)["channels"][0]["name"] == "c"
    listed = viewer.get("/api/v1/alerts")
    assert listed["alerts"] == [] and listed["evaluator"]["running"] is False


def test_list_garbage_queries(admin):
    for url in ["/api/v1/alerts?state=bogus", "/api/v1/alerts?limit=0", "/api/v1/alerts?limit=x",
                "/api/v1/alerts?rule=-1", "/api/v1/alerts/notifications?state=nope",
                "/api/v1/alerts?server=%00"]:  # fmt: skip
        assert admin.call("GET", url, 400).json()["error"] == "bad_request", url


def test_unknown_ids_are_404(admin):
    for url in ("/api/v1/alerts/5", f"{RULES}/5", f"{CHANNELS}/5"):
        admin.get(url, expect=404)
    admin.post(f"{CHANNELS}/5/test", expect=404)
    admin.call("PATCH", f"{RULES}/5", 404, json={})
    admin.call("DELETE", f"{CHANNELS}/5", 404)
