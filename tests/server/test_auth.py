"""Logins, sessions, CSRF, rate limiting, API tokens, users."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

from kernel.server.auth.credentials import hash_password, verify_password
from kernel.server.auth.limiter import retry_after
from kernel.server.auth.roles import role_allows
from kernel.server.components import components


def _csrf(client) -> str:
    page = client.get("/login").get_data(as_text=True)
    m = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert m
    return m.group(1)


def test_password_hashes_are_argon2():
    h = hash_password("correct horse")
    assert h.startswith("$argon2")
    assert verify_password(h, "correct horse")
    assert not verify_password(h, "wrong")
    assert not verify_password(None, "anything")
    assert not verify_password("garbage", "x")


def test_roles_rank():
    assert role_allows("admin", "operator") and role_allows("operator", "viewer")
    assert not role_allows("viewer", "operator") and not role_allows("nobody", "viewer")


def test_login_form_sets_httponly_samesite_cookie_and_needs_csrf(app, admin):
    admin.post(
        "/api/v1/users", {"name": "ann", "role": "operator", "password": "ann-secret-1"}, expect=201
    )
    client = app.test_client()
    r = client.post("/login", data={"username": "ann", "password": "ann-secret-1"})
    assert r.status_code == 400  # no CSRF token
    token = _csrf(client)
    r = client.post(
        "/login",
        data={
            "username": "ann",
            "password": "ann-secret-1",
            "csrf_token": token,
            "next": "//evil.example/",
        },
    )
    assert r.status_code == 302 and r.headers["Location"] == "/"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    me = client.get("/api/v1/me").get_json()
    assert me["name"] == "ann" and me["role"] == "operator"
    # A cookie session must send the CSRF token on mutations.
    r = client.post("/api/v1/tokens", json={"name": "x"})
    assert r.status_code == 400 and "CSRF" in r.get_json()["message"]
    r = client.post("/api/v1/tokens", json={"name": "x"}, headers={"X-CSRFToken": me["csrf_token"]})
    assert r.status_code == 201
    r = client.post("/logout", headers={"X-CSRFToken": me["csrf_token"]})
    assert r.status_code == 200
    assert client.get("/api/v1/me").status_code == 401


def test_login_rate_limit_per_user_from_any_address(app, admin):
    admin.post(
        "/api/v1/users", {"name": "bob", "role": "viewer", "password": "bob-secret-1"}, expect=201
    )
    client = app.test_client()
    for i in range(5):  # spread over addresses: they all count against the name
        r = client.post(
            "/api/v1/auth/token",
            json={"username": "bob", "password": "nope"},
            environ_base={"REMOTE_ADDR": f"127.0.0.{20 + i}"},
        )
        assert r.status_code == 401
    for addr in ("127.0.0.1", "127.0.0.99"):
        r = client.post(
            "/api/v1/auth/token",
            json={"username": "BOB", "password": "bob-secret-1"},
            environ_base={"REMOTE_ADDR": addr},
        )
        assert r.status_code == 429 and r.get_json()["error"] == "rate_limited"
        assert 0 < int(r.headers["Retry-After"]) <= 300
    # Another user from one of those addresses is not locked out.
    good = {"username": "admin1", "password": "password-admin1"}
    r = client.post("/api/v1/auth/token", json=good, environ_base={"REMOTE_ADDR": "127.0.0.20"})
    assert r.status_code == 201
    entries = admin.get("/api/v1/audit?action=auth.login")["entries"]
    assert any(e["result"].startswith("401") and e["target"] == "bob" for e in entries)
    assert any(e["result"].startswith("429") for e in entries)


def test_parallel_attempts_cannot_race_past_the_limit(app, admin):
    admin.post(
        "/api/v1/users", {"name": "eve", "role": "viewer", "password": "eve-secret-1"}, expect=201
    )

    def attempt(i):
        r = app.test_client().post(
            "/api/v1/auth/token",
            json={"username": "eve", "password": f"guess-{i}"},
            environ_base={"REMOTE_ADDR": f"127.0.1.{i}"},
        )
        return r.status_code

    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(attempt, range(24)))
    assert codes.count(401) == 5 and codes.count(429) == 19, codes


def test_one_address_spraying_names_is_limited_too(app):
    client = app.test_client()
    codes = [
        client.post("/api/v1/auth/token", json={"username": f"u{i}", "password": "x"}).status_code
        for i in range(25)
    ]
    assert codes[:20] == [401] * 20 and set(codes[20:]) == {429}


def test_retry_after_is_pure():
    assert retry_after([0, 1], [], now=2, limit=2, window=10) == 8
    assert retry_after([0], [], now=2, limit=2, window=10) == 0
    assert retry_after([0, 1], [], now=11, limit=2, window=10) == 0
    assert retry_after([], [0, 1, 2, 3, 4, 5, 6, 7], now=8, limit=2, window=10) == 2


def test_api_tokens_are_hashed_and_revocable(app, admin):
    from kernel.server.models.users import ApiToken

    made = admin.post("/api/v1/tokens", {"name": "ci"}, expect=201)
    secret = made["token"]
    with components(app).db.session() as s:
        stored = [t.token_hash for t in s.query(ApiToken).all()]
    assert secret not in stored and all(len(h) == 64 for h in stored)
    client = app.test_client()
    hdr = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/me", headers=hdr).status_code == 200
    admin.delete(f"/api/v1/tokens/{made['id']}")
    assert client.get("/api/v1/me", headers=hdr).status_code == 401
    bad = client.get("/api/v1/me", headers={"Authorization": "Basic abc"})
    assert bad.status_code == 401 and bad.get_json()["error"] == "unauthorized"


def test_users_admin(app, admin, as_role):
    u = admin.post(
        "/api/v1/users", {"name": "cat", "role": "viewer", "password": "cat-secret-1"}, expect=201
    )
    admin.post(
        "/api/v1/users", {"name": "cat", "role": "viewer", "password": "cat-secret-1"}, expect=409
    )
    admin.post(
        "/api/v1/users", {"name": "dog", "role": "king", "password": "dog-secret-1"}, expect=400
    )
    admin.post("/api/v1/users", {"name": "dog", "role": "viewer", "password": "short"}, expect=400)
    admin.patch(f"/api/v1/users/{u['id']}", {"role": "operator"})
    client = app.test_client()
    r = client.post("/api/v1/auth/token", json={"username": "cat", "password": "cat-secret-1"})
    assert r.get_json()["role"] == "operator"
    admin.patch(f"/api/v1/users/{u['id']}", {"disabled": True})
    r = client.post("/api/v1/auth/token", json={"username": "cat", "password": "cat-secret-1"})
    assert r.status_code == 401
    me = admin.get("/api/v1/me")
    admin.patch(f"/api/v1/users/{me['id']}", {"role": "viewer"}, expect=400)


def test_cli_create_user_and_first_admin(app):
    from kernel.server.auth.users import ensure_first_admin

    db = components(app).db
    with db.session() as s:
        pw = ensure_first_admin(s)
    assert pw and len(pw) >= 16
    with db.session() as s:
        assert ensure_first_admin(s) is None
    r = app.test_client().post("/api/v1/auth/token", json={"username": "admin", "password": pw})
    assert r.status_code == 201
