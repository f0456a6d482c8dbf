"""Pure naming and address plans."""

import ipaddress
import itertools

import pytest

from kernel.testbed import names

NET = ipaddress.IPv4Network


def test_new_prefix_avoids_taken_ones():
    tokens = itertools.chain(["abcd", "abcd", "0001"])
    assert names.new_prefix({"ktabcd"}, lambda _n: next(tokens)) == "kt0001"


def test_new_prefix_gives_up_when_everything_is_taken():
    with pytest.raises(ValueError, match="no free testbed prefix"):
        names.new_prefix({"ktabcd"}, lambda _n: "abcd")


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("kt12ab", "kt12ab"),
        ("kt12ab-br", "kt12ab"),
        ("kt12ab-h001", "kt12ab"),
        ("eth0", None),
        ("kt12ab-", None),
        ("kt12abc-h001", None),
        ("ktXYZW-h001", None),
        ("xkt12ab", None),
        ("kt12ab-h001;rm", None),
    ],
)
def test_prefix_of_recognises_only_our_names(name, prefix):
    assert names.prefix_of(name) == prefix


def test_interface_names_fit_the_kernel_limit():
    assert names.host_name("kt12ab", 0) == "kt12ab-h001"
    assert len(names.host_name("kt12ab", 9998)) <= names.IFNAMSIZ
    assert len(names.bridge_name("kt12ab")) <= names.IFNAMSIZ


@pytest.mark.parametrize(("hosts", "length"), [(1, 24), (253, 24), (254, 23), (1000, 22)])
def test_subnet_size_grows_with_hosts(hosts, length):
    assert names.subnet_size_for(hosts) == length


@pytest.mark.parametrize("hosts", [0, -1, 70000])
def test_subnet_size_refuses_impossible_counts(hosts):
    with pytest.raises(ValueError):
        names.subnet_size_for(hosts)


def test_allocate_skips_used_and_overlapping_subnets():
    used = [NET("10.231.0.0/24"), NET("10.231.1.128/25"), NET("192.168.1.0/24")]
    assert names.allocate_subnet(used, 3) == NET("10.231.2.0/24")
    # a /23 must not straddle the used /24s
    assert names.allocate_subnet(used, 300) == NET("10.231.2.0/23")


def test_allocate_never_leaves_the_pool():
    used = list(names.POOL.subnets(new_prefix=24))[:-1]
    assert names.allocate_subnet(used, 10) == NET("10.231.255.0/24")
    with pytest.raises(ValueError, match="no free subnet"):
        names.allocate_subnet([names.POOL], 1)


def test_a_wider_root_address_blocks_the_whole_pool():
    with pytest.raises(ValueError):
        names.allocate_subnet([NET("10.0.0.0/8")], 1)


def test_addresses_within_the_subnet():
    subnet = NET("10.231.7.0/24")
    assert str(names.gateway_ip(subnet)) == "10.231.7.1"
    assert str(names.host_ip(subnet, 0)) == "10.231.7.2"
    assert str(names.host_ip(subnet, 252)) == "10.231.7.254"
    assert names.capacity(subnet) == 253
    with pytest.raises(ValueError):
        names.host_ip(subnet, 253)
    assert names.agent_url(names.host_ip(subnet, 0)) == "http://10.231.7.2:8001"
