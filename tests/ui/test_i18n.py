"""Every user-visible string of the console has a Chinese translation, and the compiled
catalogue the server reads is the one in the .po (scripts/translations makes both)."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

UI = Path(__file__).resolve().parents[2] / "src" / "kernel" / "server" / "ui"
ZH = UI / "translations" / "zh" / "LC_MESSAGES"
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "lazy_gettext": None}
METHODS = [("**/templates/**.html", "jinja2"), ("**.py", "python")]


def extracted() -> set[str]:
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(UI), method_map=METHODS, keywords=KEYWORDS
    ):
        found.add(message if isinstance(message, str) else message[0])
    return found


def test_every_string_has_a_chinese_translation():
    with open(ZH / "messages.po", "rb") as f:
        catalogue = read_po(f)
    translated = {
        (m.id if isinstance(m.id, str) else m.id[0])
        for m in catalogue
        if m.id and (m.string if isinstance(m.string, str) else all(m.string))
    }
    strings = extracted()
    assert len(strings) > 100  # the extraction itself works
    missing = sorted(strings - translated)
    assert not missing, f"no Chinese for (run scripts/translations): {missing}"


def test_the_compiled_catalogue_is_up_to_date():
    def key(value):  # plural entries are lists in one reader, tuples in the other
        return value if isinstance(value, str) else tuple(value)

    with open(ZH / "messages.po", "rb") as f:
        po = {key(m.id): key(m.string) for m in read_po(f) if m.id}
    with open(ZH / "messages.mo", "rb") as f:
        mo = {key(m.id): key(m.string) for m in read_mo(f) if m.id}
    assert mo == po, "messages.mo is stale: run scripts/translations"


def test_placeholders_survive_translation():
    with open(ZH / "messages.po", "rb") as f:
        for m in read_po(f):
            if m.id and isinstance(m.id, str):
                for name in ("%(n)s", "%(name)s", "%(d)s", "%(h)s", "%(m)s"):
                    assert (name in m.id) == (name in m.string), (m.id, m.string)
