"""Pure naming and address plans for test beds: no I/O here.

Every kernel object a bed makes is named ``kt<4 hex>-…`` so that leftovers are recognisable
(``kernel-testbed down --all``) and fit the 15-character limit of interface names.
Addresses come from 10.231.0.0/16, used only on our own bridges and namespaces.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Callable, Iterable

POOL = ipaddress.IPv4Network("10.231.0.0/16")
AGENT_PORT = 8001
PREFIX_RE = re.compile(r"^kt[0-9a-f]{4}$")
# Anything a bed names: the prefix alone, or prefix + "-" + suffix.
OBJECT_RE = re.compile(r"^(kt[0-9a-f]{4})(?:-[a-z0-9]+)?$")
IFNAMSIZ = 15


def new_prefix(taken: Iterable[str], token: Callable[[int], str] = secrets.token_hex) -> str:
    """A fresh ``kt<4 hex>`` prefix not in ``taken``."""
    used = set(taken)
    for _ in range(1000):
        prefix = "kt" + token(2)
        if prefix not in used:
            return prefix
    raise ValueError("no free testbed prefix (over a thousand tries); run `kernel-testbed down`")


def prefix_of(name: str) -> str | None:
    """The bed prefix of an object name we made, or None for anything else."""
    m = OBJECT_RE.match(name)
    return m.group(1) if m else None


def bridge_name(prefix: str) -> str:
    return f"{prefix}-br"


def host_name(prefix: str, index: int) -> str:
    """Host ``index`` (0-based) of a bed; also its netns, root-side veth and cgroup name."""
    name = f"{prefix}-h{index + 1:03d}"
    if len(name) > IFNAMSIZ:
        raise ValueError(f"host index {index} too large for an interface name")
    return name


def subnet_size_for(hosts: int) -> int:
    """Prefix length of the smallest subnet holding gateway + ``hosts`` (at least a /24)."""
    if hosts < 1:
        raise ValueError("a testbed needs at least one host")
    need = hosts + 3  # network, gateway, broadcast
    length = 24
    while 2 ** (32 - length) < need:
        length -= 1
        if length < POOL.prefixlen:
            raise ValueError(f"{hosts} hosts do not fit in {POOL}")
    return length


def allocate_subnet(used: Iterable[ipaddress.IPv4Network], hosts: int) -> ipaddress.IPv4Network:
    """The first subnet of the pool big enough for ``hosts`` that overlaps none in ``used``."""
    taken = list(used)
    for candidate in POOL.subnets(new_prefix=subnet_size_for(hosts)):
        if not any(candidate.overlaps(u) for u in taken):
            return candidate
    raise ValueError(f"no free subnet in {POOL}; run `kernel-testbed down --all` for leftovers")


def gateway_ip(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """The root namespace's address on the bed's bridge (where the server listens)."""
    return subnet.network_address + 1


def host_ip(subnet: ipaddress.IPv4Network, index: int) -> ipaddress.IPv4Address:
    addr = subnet.network_address + 2 + index
    if addr >= subnet.broadcast_address:
        raise ValueError(f"host index {index} does not fit in {subnet}")
    return addr


def capacity(subnet: ipaddress.IPv4Network) -> int:
    """How many hosts fit next to the gateway."""
    return subnet.num_addresses - 3


def agent_url(ip: ipaddress.IPv4Address | str) -> str:
    return f"http://{ip}:{AGENT_PORT}"
