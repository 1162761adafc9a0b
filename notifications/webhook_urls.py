"""Where a webhook may post: public addresses only (no server-side request forgery).

A URL is refused when its host is, or resolves to, an address that is link-local (the cloud
metadata service 169.254.169.254 is one), private, loopback, multicast, reserved, unspecified or
otherwise not global; IPv4, IPv6 and IPv4-mapped IPv6 (`::ffff:127.0.0.1`) alike, and the
legacy numeric forms (`2130706433`, `0x7f.1`) that resolvers accept. Checked when a webhook is
saved (the host as written) and again at delivery (every address the name resolves to; the
connection then goes to the address that was checked, so DNS cannot swap it in between).
`settings.GASTOWN_WEBHOOK_ALLOW_PRIVATE` (env `GASTOWN_WEBHOOK_ALLOW_PRIVATE=1`) turns it off,
for receivers on the same host or network.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Names of metadata services and of this machine that resolve to forbidden addresses anyway,
# refused by name too (a resolver that answers otherwise is not trusted with them).
FORBIDDEN_NAMES = ("localhost", "metadata", "metadata.google.internal", "instance-data")
_FLAGS = ("link_local", "private", "loopback", "multicast", "reserved", "unspecified")


class AddressRefused(ValueError):
    """A delivery's URL, or an address its host resolves to, is not allowed."""


def private_allowed() -> bool:
    return bool(getattr(settings, "GASTOWN_WEBHOOK_ALLOW_PRIVATE", False))


def address_refusal(address: IPAddress) -> str | None:
    """Why a webhook may not post to `address` (None: it may)."""
    if isinstance(address, ipaddress.IPv6Address):
        # IPv4 inside IPv6 (mapped, 6to4, Teredo's server): judged as the IPv4 it carries
        embedded = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
        for inner in (a for a in embedded if a is not None):
            if (why := address_refusal(inner)) is not None:
                return f"{address} carries {inner}: {why}"
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
    for flag in _FLAGS:
        if getattr(address, f"is_{flag}"):
            return f"{address} is a {flag.replace('_', '-')} address"
    if not address.is_global:
        return f"{address} is not a public address"
    return None


def _literal(host: str) -> IPAddress | None:
    """The host as an IP address when it is written as one (legacy IPv4 forms included)."""
    try:
        return ipaddress.ip_address(host.split("%")[0])  # (an IPv6 zone id names no other host)
    except ValueError:
        pass
    try:  # 2130706433, 0x7f.1, 0177.0.0.1: what inet_aton (and so the resolver) accepts
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def url_refusal(url: str) -> str | None:
    """Why a webhook may not have this URL, from the URL alone (None: it may)."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".").lower()
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    if parts.scheme not in ("http", "https") or not host:
        return "only http(s) URLs with a host are delivered"
    if private_allowed():
        return None
    if host in FORBIDDEN_NAMES or host.endswith(".localhost"):
        return f"{host} is this machine or a metadata service"
    address = _literal(host)
    return address_refusal(address) if address is not None else None


def validate_webhook_url(url: str) -> None:
    """Model and form validator: a 400 naming the field in the API, a form error in the admin."""
    refusal = url_refusal(url)
    if refusal:
        raise ValidationError(f"webhooks may not post here: {refusal}.", code="forbidden_address")


def resolve_checked(url: str) -> tuple[str, int, str]:
    """(host, port, the address to connect to) for a delivery, or AddressRefused saying why not.
    Every address the host resolves to must be allowed, not only the one that is used."""
    refusal = url_refusal(url)
    if refusal:
        raise AddressRefused(refusal)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve {host}: {exc}") from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    if not private_allowed():
        for address in addresses:
            refusal = address_refusal(address)
            if refusal:
                raise AddressRefused(f"{host} resolves to {refusal}")
    return host, port, str(addresses[0])
