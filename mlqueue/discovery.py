"""Finding the HQ on the LAN with mDNS/DNS-SD, so ``mlqueue join --code CODE`` needs no address.

An HQ listening beyond loopback advertises ``_mlqueue._tcp.local.`` (python-zeroconf) with its API port
and TXT records ``id`` (stable per HQ home, derived from its token — not the token) and ``version``.
``browse`` listens for up to 3 seconds and returns every HQ that answered; the caller offers a choice
when there are several, and ``diagnosis`` explains what to check when there are none.
"""

from __future__ import annotations

import hashlib
import socket
import time
from dataclasses import dataclass

from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from mlqueue import __version__

SERVICE = "_mlqueue._tcp.local."
BROWSE_SECONDS = 3.0


@dataclass(frozen=True)
class FoundHQ:
    name: str
    host: str
    port: int
    hq_id: str
    version: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def label(self) -> str:
        return f"{self.name} at {self.host}:{self.port} (id {self.hq_id}, mlqueue {self.version})"


def hq_id_for(token: str) -> str:
    """A stable public id for an HQ home, that reveals nothing about its token."""
    return hashlib.sha256(f"mlqueue-hq-id:{token}".encode()).hexdigest()[:12]


def local_ipv4_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback."""
    import ifaddr

    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                found.append(ip.ip)
    return found


class Advert:
    """The HQ's advertisement while it runs; ``close`` withdraws it (a goodbye packet)."""

    def __init__(self, hq_id: str, port: int, bind: str) -> None:
        addresses = local_ipv4_addresses() if bind in ("0.0.0.0", "") else [bind]
        if not addresses:
            raise RuntimeError("this machine has no network address other than loopback")
        host = socket.gethostname().split(".")[0] or "hq"
        self.info = ServiceInfo(
            SERVICE, f"mlqueue HQ {host} {hq_id[:6]}.{SERVICE}", port=port,
            addresses=[socket.inet_aton(a) for a in addresses],
            properties={"id": hq_id, "version": __version__}, server=f"mlqueue-{host}-{hq_id[:6]}.local.")
        interfaces = InterfaceChoice.All if bind in ("0.0.0.0", "") else [bind]
        self.zeroconf = Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
        self.zeroconf.register_service(self.info)

    def close(self) -> None:
        try:
            self.zeroconf.unregister_service(self.info)
        finally:
            self.zeroconf.close()


def advertise(hq_id: str, port: int, bind: str) -> Advert:
    return Advert(hq_id, port, bind)


def browse(seconds: float = BROWSE_SECONDS) -> list[FoundHQ]:
    """Every HQ that answers within ``seconds`` (after the first answer, one second more for others)."""
    names: list[str] = []

    def seen(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Added and name not in names:
            names.append(name)

    zc = Zeroconf(interfaces=InterfaceChoice.All, ip_version=IPVersion.V4Only)
    try:
        browser = ServiceBrowser(zc, SERVICE, handlers=[seen])
        deadline = time.monotonic() + seconds
        first_seen: float | None = None
        while time.monotonic() < deadline:
            if names and first_seen is None:
                first_seen = time.monotonic()
            if first_seen is not None and time.monotonic() - first_seen > 1.0:
                break
            time.sleep(0.05)
        browser.cancel()
        return [hq for name in list(names) if (hq := _resolve(zc, name))]
    finally:
        zc.close()


def _resolve(zc: Zeroconf, name: str) -> FoundHQ | None:
    info = zc.get_service_info(SERVICE, name, timeout=1500)
    if info is None or not info.parsed_addresses():
        return None
    props = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
    return FoundHQ(name=name.removesuffix("." + SERVICE), host=info.parsed_addresses()[0], port=info.port or 0,
                   hq_id=props.get("id", "?"), version=props.get("version", "?"))


def diagnosis() -> str:
    """What to check when no HQ answered, and the manual form that always works."""
    addresses = local_ipv4_addresses()
    here = (f"this machine's addresses: {', '.join(addresses)}" if addresses else
            "this machine has no network address other than loopback — connect it to the house network first")
    return "\n".join([
        f"no mlqueue HQ answered on this network within {BROWSE_SECONDS:g} s ({here}). Check:",
        "  - the HQ listens beyond loopback: it must run as `mlqueue hq --bind 0.0.0.0` (loopback is not advertised);",
        "  - both machines are on the same network and subnet (a guest Wi-Fi, 'client isolation' or a VPN keeps "
        "multicast out; a machine with several interfaces may be listening on the wrong one);",
        "  - no firewall drops mDNS (UDP port 5353) on either machine.",
        "Or give the HQ's address, shown in its banner:  mlqueue join HOST[:PORT] --code CODE",
    ])
