"""The test network: one bridge per bed in the root namespace, one netns + veth per host.

The root namespace holds the gateway address (where the server listens); hosts get an address
on the same subnet and no default route, so their traffic can only reach the bridge. Nothing
here enables forwarding or NAT.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from kernel.exceptions import TestbedError
from kernel.testbed.system import sh


def _batch(lines: Sequence[str], *, netns: str | None = None, force: bool = False) -> None:
    if not lines:
        return
    args = ["ip"] + (["-n", netns] if netns else []) + (["-force"] if force else [])
    sh([*args, "-batch", "-"], input="\n".join(lines) + "\n", timeout=120)


def create_bridge(bridge: str, gateway: str, prefixlen: int) -> None:
    _batch(
        [
            f"link add {bridge} type bridge",
            f"addr add {gateway}/{prefixlen} dev {bridge}",
            f"link set {bridge} up",
        ]
    )


def add_hosts(bridge: str, hosts: Sequence[tuple[str, str]], prefixlen: int) -> None:
    """Make a netns per (name, ip) and wire it to the bridge; the inside end is ``eth0``."""
    _batch([f"netns add {name}" for name, _ in hosts])
    _batch(
        [f"link add {name} type veth peer name eth0 netns {name}" for name, _ in hosts]
        + [f"link set {name} master {bridge} up" for name, _ in hosts]
    )
    for name, ip in hosts:
        _batch(
            [f"addr add {ip}/{prefixlen} dev eth0", "link set eth0 up", "link set lo up"],
            netns=name,
        )


def set_link(name: str, up: bool) -> None:
    """Cut (down) or restore (up) a host's link at the bridge side."""
    sh(["ip", "link", "set", name, "up" if up else "down"])


def remove(netns: Sequence[str], links: Sequence[str]) -> None:
    """Delete namespaces and links; missing ones are not an error (teardown is idempotent)."""
    present_ns = set(list_netns())
    present_links = set(list_links())
    _batch([f"link del {n}" for n in links if n in present_links], force=True)
    _batch([f"netns del {n}" for n in netns if n in present_ns], force=True)
    left = [n for n in netns if n in set(list_netns())]
    if left:
        raise TestbedError(f"network namespaces still present after removal: {left}")


def list_netns() -> list[str]:
    out = sh(["ip", "-j", "netns", "list"]).strip()
    return [ns["name"] for ns in json.loads(out)] if out else []


def list_links() -> list[str]:
    out = sh(["ip", "-j", "link", "show"]).strip()
    return [link["ifname"] for link in json.loads(out)] if out else []


def root_addresses() -> list[str]:
    """Every IPv4 prefix configured in the root namespace, as CIDR strings."""
    out = sh(["ip", "-j", "-4", "addr", "show"]).strip()
    return [
        f"{a['local']}/{a['prefixlen']}"
        for link in (json.loads(out) if out else [])
        for a in link.get("addr_info", [])
    ]
