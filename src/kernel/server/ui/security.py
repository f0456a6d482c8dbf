"""The console's browser-side defences: a strict Content-Security-Policy (scripts and styles
only from Kernel's own files — no inline script, no style attribute, no eval), framing refused,
and `safe_next`, which keeps a post-login redirect on this site."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Response

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)


def safe_next(target: str | None) -> str:
    """A same-site path to go to after logging in, else "/".

    Browsers drop tabs and newlines from URLs and read a backslash as a slash, so
    ``/\\t/evil.example`` or ``/\\evil.example`` would leave the site as ``//evil.example``
    does: any control character or backslash, a scheme or a host sends the user home."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target) or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target[:2000]


def _headers(resp: Response) -> Response:
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    if resp.mimetype == "text/html":
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "same-origin"
        resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def init_app(app: Flask) -> None:
    app.after_request(_headers)
