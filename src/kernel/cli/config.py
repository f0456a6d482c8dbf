"""Where the CLI finds its server and token: the environment, then a profile in the config file.

The file is JSON (``json`` is loaded anyway; reading TOML would add ``tomllib`` to every
start and writing it is not in the standard library), mode 0600 in a 0700 directory:

    {"profiles": {"default": {"url": "https://kernel.example", "token": "kt_…",
                              "token_id": 3, "user": "ann", "role": "admin"}}}

Precedence: ``KERNEL_URL`` and ``KERNEL_TOKEN`` override the profile's URL and token. A
profile's token is only ever sent to that profile's URL: with ``KERNEL_URL`` pointing
elsewhere, ``KERNEL_TOKEN`` must be set too.
"""

from __future__ import annotations

import json
import os
import sys

from .errors import AuthError, CliError, UsageError
from .http1 import Url, parse_url

DEFAULT_PROFILE = "default"
MAX_CONFIG_BYTES = 1024 * 1024


class Session:
    """The server to talk to and the token to show it, with where each came from."""

    __slots__ = ("profile", "source", "token", "url")

    def __init__(self, url: Url, token: str | None, profile: str, source: str) -> None:
        self.url, self.token, self.profile, self.source = url, token, profile, source

    def need_token(self) -> str:
        if not self.token:
            raise AuthError(
                401,
                "unauthorized",
                f"not logged in to {self.url.base} (profile {self.profile!r}): run "
                f"`kernel login {self.url.base}`, or set KERNEL_TOKEN",
            )
        return self.token


def config_path() -> str:
    explicit = os.environ.get("KERNEL_CONFIG")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "kernel", "config.json")


def profile_name(given: str | None) -> str:
    name = given or os.environ.get("KERNEL_PROFILE") or DEFAULT_PROFILE
    if not name or len(name) > 64 or not all(c.isalnum() or c in "_.-" for c in name):
        raise UsageError(f"profile name {name[:70]!r} must be letters, digits, '_', '.', '-'")
    return name


def load() -> dict[str, object]:
    """The config file's content ({} when there is none)."""
    path = config_path()
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise CliError(f"cannot read the config file {path}: {e.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise CliError(f"the config file {path} is larger than 1 MiB; is it the right file?")
    if st.st_mode & 0o077:
        print(
            f"kernel: warning: {path} holds API tokens and is readable by others; "
            f"run: chmod 600 {path}",
            file=sys.stderr,
        )
    try:
        data = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError) as e:
        raise CliError(
            f"the config file {path} is not valid JSON ({e}); fix or remove it"
        ) from None
    if not isinstance(data, dict):
        raise CliError(f"the config file {path} must hold a JSON object")
    return data


def profiles(data: dict[str, object]) -> dict[str, dict[str, object]]:
    raw = data.get("profiles")
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, dict)}


def save(data: dict[str, object]) -> str:
    """Write the config atomically, readable by its owner only; returns the path."""
    path = config_path()
    folder = os.path.dirname(path) or "."
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=2, sort_keys=True)
                fh.write("\n")
            os.chmod(tmp, 0o600)  # an older tmp file of ours may have had other bits
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as e:
        raise CliError(f"cannot write the config file {path}: {e.strerror}") from None
    return path


def session(profile: str | None = None) -> Session:
    """The server and token for this command (see the module docstring for the order)."""
    name = profile_name(profile)
    env_url = os.environ.get("KERNEL_URL")
    env_token = os.environ.get("KERNEL_TOKEN")
    entry: dict[str, object] = {}
    if not (env_url and env_token):  # both given: the file is not needed at all
        entry = profiles(load()).get(name, {})
    raw_url = env_url or entry.get("url")
    if not isinstance(raw_url, str) or not raw_url:
        if profile or os.environ.get("KERNEL_PROFILE"):
            raise AuthError(401, "unauthorized", f"no profile {name!r}: run `kernel login URL`")
        raise AuthError(
            401,
            "unauthorized",
            "no Kernel server configured: run `kernel login URL`, or set KERNEL_URL "
            "and KERNEL_TOKEN",
        )
    url = parse_url(raw_url)
    token = env_token
    source = "environment" if env_url else f"profile {name!r}"
    if token is None:
        stored = entry.get("token")
        stored_url = entry.get("url")
        if isinstance(stored, str) and isinstance(stored_url, str):
            if parse_url(stored_url) == url:
                token = stored
    return Session(url, token, name, source)
