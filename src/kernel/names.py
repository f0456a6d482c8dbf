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
