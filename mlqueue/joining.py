"""The HQ's side of joining, started with it: machine access restored, the LAN told, a first invite.

``Door.open`` runs once the HQ's servers are up: it re-creates the joined machines' broker users (Redis
keeps ACLs in memory only), advertises the HQ with mDNS when it listens beyond loopback, and mints the
invite code the banner shows first. ``close`` withdraws the advertisement.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from mlqueue import invites, machines
from mlqueue.servers import is_loopback
from mlqueue.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Door:
    settings: Settings
    code: str | None = None
    advert: Any = None
    notes: list[str] = field(default_factory=list)

    def open(self, hq_id: str, http_port: int) -> Door:
        restored = machines.restore_access(self.settings)
        if restored:
            log.info("broker access restored for %d joined machines", restored)
        self.code = invites.create(by="hq banner", settings=self.settings)["code"]
        if not is_loopback(self.settings.bind):
            from mlqueue import discovery

            try:
                self.advert = discovery.advertise(hq_id, http_port, self.settings.bind)
            except Exception as exc:  # noqa: BLE001 - joining by address still works without mDNS
                self.notes.append(f"  (not advertised on the LAN: {exc}; join with the address instead)")
        return self

    def banner_lines(self, address: str) -> list[str]:
        from pathlib import Path

        from mlqueue.machines_cli import mlqueue_command

        home = self.settings.home
        me = ("" if home == Path.home() / ".mlqueue" else f"MLQUEUE_HOME={home} ") + mlqueue_command()
        lines = [
            "Add a machine to the house (this code works once, for 10 minutes):",
            f"  on the other machine:  mlqueue join {address} --code {self.code}",
            f"  or from here, over SSH: {me} machines add user@host",
            f"  another code: {me} invite      the machines: {me} machines ls",
        ]
        return lines + self.notes + [""]

    def close(self) -> None:
        if self.advert is not None:
            self.advert.close()
            self.advert = None


def open_door(settings: Settings, config: dict[str, Any]) -> Door:
    """What ``mlqueue hq`` calls once its servers are up."""
    from mlqueue.discovery import hq_id_for

    return Door(settings).open(hq_id_for(config["token"]), config["http_port"])


def join_address(host: str, http_port: int) -> str:
    """HOST or HOST:PORT, as ``mlqueue join`` takes it (the default port left out)."""
    from mlqueue.machines_cli import DEFAULT_HTTP_PORT

    return host if http_port == DEFAULT_HTTP_PORT else f"{host}:{http_port}"
