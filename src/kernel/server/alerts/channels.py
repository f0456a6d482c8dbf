"""Notification channels through apprise (PyPI): an apprise URL names the service and its
secrets (``json://host/path``, ``mailto://…``, ``dingtalk://token``, ``wecombot://key``,
``feishu://token``, ``slack://…``, ``tgram://…``). Checking a URL, showing it without its
secrets, and sending one message with a deadline — a target that is down is an answer
(`Sent` with the error), never an exception.

apprise is imported when first needed: its plugins cost a few hundred ms to load."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any

from kernel.exceptions import InvalidInput

log = logging.getLogger(__name__)
URL_MAX = 2000
KINDS = {"open": "failure", "resolve": "success", "test": "info"}  # apprise's notify types
_lock = threading.Lock()  # apprise's plugin registry is loaded once, not by two threads
_loaded = False


@dataclass(frozen=True)
class Sent:
    ok: bool
    error: str | None
    duration: float


def _apprise() -> Any:
    global _loaded
    with _lock:
        import apprise

        if not _loaded:
            # Its plugins are imported on first use; some import modules that Python
            # deprecates (imghdr). Load them once, here, with that warning silenced.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                from apprise.manager_plugins import NotificationManager

                NotificationManager().load_modules()
            _loaded = True
        return apprise


def _asset(apprise: Any) -> Any:
    # No persistent storage: apprise may otherwise keep caches under the user's home.
    return apprise.AppriseAsset(storage_mode="memory")


def check_url(url: str) -> str:
    """The apprise service name for ``url`` (e.g. "JSON", "E-Mail"), or InvalidInput saying
    what is wrong with it."""
    text = url.strip()
    if not text:
        raise InvalidInput("'url' must not be empty")
    if len(text) > URL_MAX:
        raise InvalidInput(f"'url' must have at most {URL_MAX} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text) or " " in text:
        raise InvalidInput("'url' must not contain spaces or control characters")
    scheme, sep, rest = text.partition("://")
    if not sep or not scheme or not rest:
        raise InvalidInput(
            "'url' is not a URL: a channel is an apprise URL such as json://host/path (a JSON "
            "webhook; jsons:// for https), mailto://user:pass@host?to=…, dingtalk://token, "
            "wecombot://key, feishu://token, slack://…, tgram://bot-token/chat-id"
        )
    apprise = _apprise()
    with apprise.LogCapture(level=logging.WARNING) as captured:
        plugin = apprise.Apprise.instantiate(text, asset=_asset(apprise))
    if plugin is None:
        known = scheme.lower() in _schemes(apprise)
        reason = _last_line(captured.getvalue())
        if scheme.lower() in ("http", "https"):
            raise InvalidInput(
                "'url' is an http(s) URL that apprise does not recognise as a service's "
                "webhook; for a generic JSON webhook write json://host/path (jsons:// for "
                "https)" + (f" — {reason}" if reason else "")
            )
        if not known:
            raise InvalidInput(
                f"'url' has an unknown scheme {scheme[:40]!r}: apprise knows json, jsons, "
                "mailto, mailtos, dingtalk, wecombot, feishu, slack, tgram and many more "
                "(docs/alerts.md)"
            )
        raise InvalidInput(
            f"'url' is not a valid {scheme[:40]} URL" + (f": {reason}" if reason else "")
        )
    return str(getattr(plugin, "service_name", "") or scheme)[:64]


def masked(url: str) -> str:
    """``url`` with its secrets (passwords, tokens) hidden, as apprise shows it."""
    apprise = _apprise()
    with apprise.LogCapture(level=logging.CRITICAL):
        plugin = apprise.Apprise.instantiate(url, asset=_asset(apprise))
    if plugin is None:
        return url.partition("://")[0] + "://…"
    return str(plugin.url(privacy=True))


def send(url: str, title: str, body: str, event: str, timeout: float) -> Sent:
    """Send one message; at most ``timeout`` seconds (then it counts as failed: the thread
    apprise uses is left to finish on its own)."""
    t0 = time.monotonic()
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kernel-alerts-send")
    try:
        future = pool.submit(_send, url, title, body, event, timeout)
        ok, error = future.result(timeout + 2.0)
    except concurrent.futures.TimeoutError:
        ok, error = False, f"no answer within {timeout:g} s"
    except Exception as e:  # apprise or a plugin failing in a way it does not report
        log.warning("sending a notification failed", exc_info=True)
        ok, error = False, f"{type(e).__name__}: {e}"[:2000]
    finally:
        pool.shutdown(wait=False)
    return Sent(ok, None if ok else (error or "not delivered"), round(time.monotonic() - t0, 4))


def _send(url: str, title: str, body: str, event: str, timeout: float) -> tuple[bool, str]:
    apprise = _apprise()
    notifier = apprise.Apprise(asset=_asset(apprise))
    with apprise.LogCapture(level=logging.WARNING) as captured:
        if not notifier.add(url):
            return False, "the channel's URL is no longer understood by apprise"
        result = notifier.notify(
            body=body, title=title, notify_type=KINDS.get(event, "info"), timeout=timeout
        )
    return bool(result), _last_line(captured.getvalue(), keep=3)


def _schemes(apprise: Any) -> set[str]:
    try:
        from apprise.manager_plugins import NotificationManager
    except ImportError:  # an apprise without this helper: say "not valid", not "unknown"
        return set()
    return {str(s).lower() for s in NotificationManager().schemas()}


def _last_line(logged: str, keep: int = 1) -> str:
    """The last apprise log lines, without their timestamp and level."""
    lines = []
    for line in logged.strip().splitlines()[-keep:]:
        parts = line.split(" - ", 2)
        lines.append(parts[-1].strip())
    return "; ".join(x for x in lines if x)[:2000]
