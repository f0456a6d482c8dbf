"""The console's languages (Flask-Babel): English and Simplified Chinese, chosen from the
browser's Accept-Language until the user picks one, which a cookie remembers."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, request
from flask_babel import Babel

LANGUAGES = {"en": "English", "zh": "简体中文"}
HTML_LANG = {"en": "en", "zh": "zh-Hans"}
COOKIE = "kernel_lang"
COOKIE_AGE = 365 * 86400


HERE = Path(__file__).resolve().parent


def select_locale() -> str:
    chosen = request.cookies.get(COOKIE)
    if chosen in LANGUAGES:
        return chosen
    return request.accept_languages.best_match(list(LANGUAGES), default="en") or "en"


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(HERE / "translations"))
    Babel(app, locale_selector=select_locale)
