"""Signing is pure: the agent's HMAC equals the standard library's, and verification
refuses every kind of bad header."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from kernel.agent import NonceCache, sign, signed_headers, verify_signature

KEY = "0123456789abcdef" * 4


def reference(key: str, method: str, path: str, ts: int, nonce: str, body: bytes) -> str:
    msg = f"{method}\n{path}\n{ts}\n{nonce}\n{hashlib.sha256(body).hexdigest()}"
    return hmac.new(key.encode(), msg.encode(), hashlib.sha256).hexdigest()


@given(st.text(min_size=1, max_size=200), st.binary(max_size=300), st.text(max_size=80))
def test_sign_matches_hmac_sha256(key: str, body: bytes, path: str) -> None:
    assert sign(key, "POST", path, 1700000000, "n" * 16, body) == reference(
        key, "POST", path, 1700000000, "n" * 16, body
    )


def headers(**kw: str) -> dict[str, str]:
    h = signed_headers(KEY, "POST", "/api/v2/exec", b"{}", now=1000, nonce="abcdefghijklmnop")
    out = {k.lower(): v for k, v in h.items()}
    out.update({f"x-kernel-{k}": v for k, v in kw.items()})
    return out


def check(h: dict[str, str], body: bytes = b"{}", now: float = 1000, key: str = KEY) -> str | None:
    return verify_signature(key, "POST", "/api/v2/exec", h, body, now)[0]


def test_good_signature_passes() -> None:
    assert check(headers()) is None
    assert verify_signature(KEY, "POST", "/api/v2/exec", headers(), b"{}", 1000)[1:] == (
        1000,
        "abcdefghijklmnop",
    )


def test_bad_signatures_fail() -> None:
    assert check(headers(), key="f" * 64) == "bad signature"
    assert check(headers(), body=b'{"cmd":1}') == "bad signature"
    assert check(headers(signature="0" * 64)) == "bad signature"
    assert check(headers(signature="zz")) == "bad signature"
    assert verify_signature(KEY, "GET", "/api/v2/exec", headers(), b"{}", 1000)[0]
    assert verify_signature(KEY, "POST", "/api/v2/exec?x=1", headers(), b"{}", 1000)[0]


def test_time_window() -> None:
    assert check(headers(), now=1300) is None
    assert "away" in (check(headers(), now=1301) or "")
    assert "away" in (check(headers(), now=699) or "")
    assert "unix seconds" in (check(headers(time="-5")) or "")
    assert "unix seconds" in (check(headers(time="1e3")) or "")


def test_missing_and_malformed_headers() -> None:
    for name in ("x-kernel-time", "x-kernel-nonce", "x-kernel-signature"):
        h = headers()
        del h[name]
        assert "missing" in (check(h) or "")
    assert "Nonce" in (check(headers(nonce="short")) or "")
    assert "Nonce" in (check(headers(nonce="bad/chars/in/nonce!")) or "")
    assert "Nonce" in (check(headers(nonce="x" * 65)) or "")


def test_nonce_cache_refuses_reuse_and_survives_restart(tmp_path) -> None:
    path = str(tmp_path / "nonces")
    cache = NonceCache(path)
    now = int(__import__("time").time())
    assert cache.add("a" * 16, now) is None
    assert cache.add("a" * 16, now) == "nonce already used"
    cache.close()
    again = NonceCache(path)
    assert again.add("a" * 16, now) == "nonce already used"
    # expired entries are forgotten, and compaction keeps only live ones
    assert again.add("b" * 16, now - 1000) is None
    again.compact()
    again.close()
    last = NonceCache(path)
    assert last.add("b" * 16, now) is None
    assert last.add("a" * 16, now) == "nonce already used"
    last.close()


def test_nonce_cache_is_bounded(tmp_path) -> None:
    now = int(__import__("time").time())
    cache = NonceCache(None, limit=3)
    for i in range(3):
        assert cache.add(f"nonce-{i:012d}", now) is None
    assert "too many" in (cache.add("nonce-999999999999", now) or "")
