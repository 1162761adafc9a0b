"""IPv4 addresses carried inside IPv6 ones are judged as the IPv4 they carry (found by an
attacker: a 6to4 address embedding 169.254.169.254 was accepted)."""

import ipaddress

import pytest

from notifications.webhook_urls import address_refusal


@pytest.mark.parametrize(
    "address",
    [
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254 (cloud metadata)
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "::ffff:10.0.0.1",  # IPv4-mapped private
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    ],
)
def test_embedded_private_ipv4_is_refused(address):
    assert address_refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["2606:4700::1111", "8.8.8.8", "2002:0808:0808::"])
def test_public_addresses_pass(address):
    assert address_refusal(ipaddress.ip_address(address)) is None
