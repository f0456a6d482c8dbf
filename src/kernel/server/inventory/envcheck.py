"""The environment check run when a server joins: is the agent reachable, and what OS, systemd,
bash and free disk does the machine have — read with the status probe's own sections (the
ones marked ``check`` in status/sections.py), so there is one collector of host facts. Also
the checks of an agent's URL and key as an admin gives them."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from kernel.agent_client import AgentClient, AgentError
from kernel.exceptions import AgentFailed, InvalidInput
from kernel.server.status.probe import check_script, parse_probe
from kernel.server.status.sections import CHECK

MIN_FREE_KB = 100 * 1024  # below this a warning is recorded


def check_url(url: str, networks: str | None = None) -> str:
    """An agent URL: http(s)://host[:port] with nothing odd; returns it without a trailing /."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidInput(f"agent URL {url[:100]!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"agent URL {url[:100]!r} must be http:// or https:// with a host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidInput("agent URL must not carry credentials, a query or a fragment")
    if parts.path not in ("", "/"):
        raise InvalidInput("agent URL must not have a path (just scheme://host:port)")
    if port is not None and not 0 < port < 65536:
        raise InvalidInput("agent URL port must be 1-65535")
    if networks:
        _check_network(parts.hostname, networks)
    return url.rstrip("/")


def _check_network(host: str, networks: str) -> None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise InvalidInput(
            "agent URL must use an IP address here (AGENT_NETWORKS is set)"
        ) from None
    nets = [ipaddress.ip_network(n.strip(), strict=False) for n in networks.split(",") if n.strip()]
    if not any(ip in n for n in nets):
        raise InvalidInput(f"agent address {ip} is outside the allowed networks ({networks})")


def check_key(key: object) -> str:
    if not isinstance(key, str):
        raise InvalidInput("'agent_key' must be a string of 64 hex characters")
    key = key.strip()
    if len(key) != 64 or any(c not in "0123456789abcdefABCDEF" for c in key):
        raise InvalidInput("'agent_key' must be 64 hex characters (the agent's key file)")
    return key


def parse_check(stdout: str) -> dict[str, Any]:
    """Facts from the check script's output (probe sections, status/sections.py); what it
    cannot read is None, and problems an operator should know of are ``warnings``."""
    report = parse_probe(stdout, CHECK)
    f = report.facts
    root = next((d for d in report.metrics.disks if d.mount == "/"), None)
    systemd = f.systemd_version if f.systemd not in (None, "offline") else None
    facts: dict[str, Any] = {
        "bash": f.bash,
        "os": f.os_name,
        "systemd": systemd,
        "kernel": f.kernel,
        "disk_total_kb": root.total // 1024 if root else None,
        "disk_free_kb": root.available // 1024 if root else None,
    }
    warnings = []
    if not systemd:
        warnings.append("systemd is not running: services cannot be deployed here")
    if facts["disk_free_kb"] is not None and facts["disk_free_kb"] < MIN_FREE_KB:
        warnings.append(f"only {facts['disk_free_kb'] // 1024} MiB free on /")
    facts["warnings"] = warnings
    return facts


def check_agent(
    url: str, key: str, *, fingerprint: str | None = None, timeout: float = 10.0
) -> dict[str, Any]:
    """Facts about the machine behind an agent; AgentFailed if it does not answer properly."""
    try:
        with AgentClient(url, key, timeout=timeout, tls_fingerprint=fingerprint) as client:
            info = client.info()
            check = check_script()
            result = client.exec(check.cmd, timeout=timeout)
    except AgentError as e:
        raise AgentFailed(f"the agent at {url} did not answer properly: {e}") from None
    if result.exit_code != 0:
        raise AgentFailed(f"the environment check failed on {url}: {result.stderr[-500:]}")
    facts = parse_check(result.stdout)
    facts["agent"] = {
        k: info.get(k)
        for k in ("version", "protocol", "hostname", "os", "arch", "python")
        if k in info
    }
    return facts
