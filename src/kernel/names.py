"""The naming rules, each written once: names of servers, users, services, units and init
scripts (ARCHITECTURE.md §4), tags, environment variable names, and init script files. Pure
(no imports of Kernel): the server, the CLI and the exceptions all read them here."""

from __future__ import annotations

import re

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
NAME_RULE = (
    "must be 1-64 characters of letters, digits, '_', '.', '@', '-' and start with a letter "
    "or digit"
)
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
TAG_RULE = "must be 1-64 characters of letters, digits, '_', '.', ':', '-'"
# What the agent accepts as an environment variable name (agent.py has its own copy: it
# imports nothing of Kernel).
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
INIT_SCRIPT_PATTERN = r"^(\d{1,6})-([A-Za-z0-9][A-Za-z0-9_.@-]{0,63})\.sh$"

NAME_RE = re.compile(NAME_PATTERN)
TAG_RE = re.compile(TAG_PATTERN)
ENV_NAME_RE = re.compile(ENV_NAME_PATTERN)
INIT_SCRIPT_RE = re.compile(INIT_SCRIPT_PATTERN)


def is_valid_name(value: object) -> bool:
    return isinstance(value, str) and NAME_RE.fullmatch(value) is not None


# Paths on a managed server (file pushes and fetches). Checked here, quoted in
# server/core/shell.py: absolute, normalised (no '.', '..' or empty parts, no trailing '/'),
# no NUL or other control characters, within Linux's PATH_MAX and NAME_MAX.
REMOTE_PATH_MAX = 4095  # bytes of UTF-8 (PATH_MAX less its NUL)
REMOTE_PATH_PART_MAX = 255  # bytes of one component (NAME_MAX)
REMOTE_PATH_RULE = (
    "must be an absolute path such as /etc/app.conf: at most 4095 bytes, no NUL or control "
    "characters, no '.', '..' or empty parts and no trailing '/'"
)
# A file's owner as chown takes it: a user (name or uid), optionally ':group'.
_ACCOUNT = r"(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}|[0-9]{1,10})"
OWNER_PATTERN = rf"^{_ACCOUNT}(?::{_ACCOUNT})?$"
OWNER_RULE = "must be USER or USER:GROUP (names of letters, digits, '_', '.', '-', or ids)"
MODE_PATTERN = r"^0?[0-7]{3}$|^[0-7]{4}$"
MODE_RULE = "must be an octal mode such as 0644 or 755 (at most 07777)"

OWNER_RE = re.compile(OWNER_PATTERN)
MODE_RE = re.compile(MODE_PATTERN)


def remote_path_problem(path: object) -> str | None:
    """Why ``path`` may not be used as a path on a server, or None if it may."""
    if not isinstance(path, str):
        return "must be a string"
    if not path.startswith("/"):
        return "must be absolute (start with '/')"
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return "must not contain NUL or other control characters"
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        return "must be valid Unicode text"
    if size > REMOTE_PATH_MAX:
        return f"must be at most {REMOTE_PATH_MAX} bytes"
    if path == "/" or path.endswith("/"):
        return "must name a file, not end with '/'"
    for part in path[1:].split("/"):
        if part in ("", ".", ".."):
            return "must not have '.', '..' or empty parts ('//')"
        if len(part.encode("utf-8")) > REMOTE_PATH_PART_MAX:
            return f"must not have a part longer than {REMOTE_PATH_PART_MAX} bytes"
    return None
