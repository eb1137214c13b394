import ipaddress

import pytest

from raycrawl.fetch.netguard import AddressGuard, classify


@pytest.mark.parametrize("address, kind", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"),
    ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("169.254.169.254", "metadata"),
    ("169.254.1.1", "link-local"), ("fe80::1", "link-local"), ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("100.64.0.1", "cgnat"), ("fc00::1", "private"), ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.0.0.1", "private"), ("240.0.0.1", "reserved"), ("fd00:ec2::254", "metadata"),
    ("2002:7f00:1::", "6to4"), ("2002:0808:0808::1", "6to4"), ("fec0::1", "site-local"),
])
def test_refused_ranges(address, kind):
    assert classify(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert classify(ipaddress.ip_address(address)) is None
    assert AddressGuard().refusal(address) is None


def test_allow_network_opens_a_range_only():
    guard = AddressGuard(("127.0.0.0/8",))
    assert guard.refusal("127.0.0.5") is None
    assert guard.refusal("::ffff:127.0.0.5") is None  # IPv4-mapped spelling of the same
    assert guard.refusal("10.0.0.1") == "private address 10.0.0.1"
    assert guard.check_host_literal("[::1]") == "loopback address ::1"
    assert guard.check_host_literal("example.com") is None  # names are checked on resolve


def test_a_host_literal_answer_is_kept_and_the_memory_bounded(monkeypatch):
    monkeypatch.setattr("raycrawl.fetch.netguard.LITERALS_KEPT", 8)
    guard = AddressGuard(("127.0.0.0/8",))
    hosts = [f"10.0.0.{i}" for i in range(20)] + ["127.1.2.3", "example.com", "[::1]"]
    for _ in range(2):  # asked again: the same answers, from memory or not
        assert [guard.check_host_literal(h) for h in hosts] == (
            [f"private address 10.0.0.{i}" for i in range(20)]
            + [None, None, "loopback address ::1"])
        assert len(guard._literals) <= 8
