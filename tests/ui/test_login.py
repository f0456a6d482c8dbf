"""The login page: designed, both languages, errors, the visible rate limit, back to the page
asked for, and no way off the site through ``next``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import PASSWORD, ServerProc, axe, screenshot


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    srv = ServerProc(tmp_path_factory.mktemp("ui-login") / "data", KERNEL_LOGIN_MAX_FAILURES="3")
    srv.start()
    yield srv
    srv.stop()


def test_login_then_back_to_the_page_asked_for(server, new_page, tmp_path: Path):
    w = new_page(server.url)
    w.goto("/?q=web&state=online")
    assert "/login?next=" in w.page.url
    assert w.page.locator("h1").inner_text() == "Log in"
    assert axe(w) == []
    screenshot(w, "login-en", tmp_path)
    w.page.fill("input[name=username]", "tester")
    w.page.fill("input[name=password]", PASSWORD)
    w.page.click("#login-submit")
    w.page.wait_for_url(server.url + "/?q=web&state=online")


def test_wrong_password_is_shown_and_the_rate_limit_counts_down(server, new_page, tmp_path):
    w = new_page(server.url)
    w.goto("/login")
    for _ in range(3):
        w.page.fill("input[name=username]", "operator")  # locked out for the module after this
        w.page.fill("input[name=password]", "wrong-password")
        w.page.click("#login-submit")
        w.page.wait_for_load_state()
    assert w.page.locator("#login-error").inner_text() == "Wrong user name or password."
    w.page.fill("input[name=username]", "operator")
    w.page.fill("input[name=password]", PASSWORD)  # right, but too late
    w.page.click("#login-submit")
    w.page.wait_for_load_state()
    alert = w.page.locator("#login-error")
    assert "Too many failed logins. Try again in" in alert.inner_text()
    assert w.page.locator("#login-submit").is_disabled()
    first = int(alert.get_attribute("data-retry-after"))
    w.page.wait_for_function(
        f"() => !document.querySelector('#login-error').textContent.includes(' {first} s')"
    )
    assert axe(w) == []
    screenshot(w, "login-rate-limited-en", tmp_path, full_page=False)


def test_login_in_chinese_from_the_browser_and_switch_back(server, new_page, tmp_path):
    w = new_page(server.url, lang="zh")
    w.goto("/login")
    assert w.page.locator("html").get_attribute("lang") == "zh-Hans"
    assert w.page.locator("h1").inner_text() == "登录"
    screenshot(w, "login-zh", tmp_path)
    w.page.click("button[name=lang][value=en]")
    w.page.wait_for_load_state()
    assert w.page.locator("h1").inner_text() == "Log in"
    w.goto("/login")  # remembered (a cookie), whatever the browser asks for
    assert w.page.locator("h1").inner_text() == "Log in"


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "/\t/evil.example/",
        "/\n/evil.example/",
        "/\\evil.example/",
        "\\\\evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "/%09/evil.example",
    ],
)
def test_next_never_leaves_the_site(server, target):
    with httpx.Client(base_url=server.url) as c:
        page = c.get("/login").text
        token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        r = c.post(
            "/login",
            data={"username": "tester", "password": PASSWORD, "csrf_token": token, "next": target},
        )
        assert r.status_code == 302
        location = r.headers["location"]
        assert location.startswith("/") and not location.startswith("//"), location
        assert "evil" not in location or location.startswith("/%09"), location
        assert not any(ord(c) < 0x20 for c in location) and "\\" not in location


def test_logout_ends_the_session(server, new_page):
    w = new_page(server.url, user="viewer")
    w.page.click("text=Log out")
    w.page.wait_for_url(server.url + "/login")
    w.goto("/")
    assert w.page.url == server.url + "/login"
