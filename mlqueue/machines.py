"""Machines of the house: each joined machine has its own credentials, and the HQ can take them back.

A machine joins with an invite code (``mlqueue.invites``) and receives credentials of its own, never
the HQ's: a Redis ACL user ``machine-NAME`` on the embedded broker and, when the store requires
authentication (the HQ listens beyond loopback), a store user ``machine-NAME`` with ``readWrite`` on the
mlqueue database only. Neither can administer the servers (no ``CONFIG``, ``ACL``, ``FLUSHALL``, no user
management). The HQ keeps only the SHA-256 of the Redis password — what ``ACL SETUSER ... #HASH`` takes —
and re-applies the users on every start (Redis ACLs live in memory; the store keeps its users on disk).

Revoking (``mlqueue machines remove NAME``) deletes both users: Redis drops the machine's connections at
once (so it takes no more Jobs), and the store's connections authenticated as that user are closed with
``killOp`` (so it reads nothing more). A Job the machine was running is then lost to it and requeued by
the reaper once its heartbeats stop — nothing is lost. When the store runs without authentication (HQ on
loopback only) the store half cannot be revoked; ``revoke`` says so.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlsplit

import redis
from pymongo.errors import OperationFailure

from mlqueue import brokers, invites, store
from mlqueue.errors import ConfigError, InvalidInput, MlqueueError, NotFound, Unreachable
from mlqueue.settings import HOME_CONFIG_NAME, Settings, get_settings, read_json_file
from mlqueue.store import workers as worker_store

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
USER_PREFIX = "machine-"
ACTIVE, REVOKED = "active", "revoked"
# What a worker needs from the broker (Celery/kombu: lists, sets, sorted sets, pub/sub, Lua for the
# unacked index) and nothing that administers it.
REDIS_RULES = ("~*", "&*", "+@all", "-@admin", "-@dangerous")


class MachineError(MlqueueError):
    """A machine operation that cannot be done (e.g. a name already in the house); the message says why."""

    status = 409


class BadMachineName(MachineError, InvalidInput):
    status = 422


class UnknownMachine(MachineError, NotFound):
    status = 404


class BrokerRefused(MachineError, Unreachable):
    """The broker would not create or delete a machine's user (an external Redis without ACL rights)."""

    status = 503


def now() -> datetime:
    return datetime.now(UTC)


def check_name(name: str) -> str:
    clean = name.strip().lower()
    if not NAME_PATTERN.match(clean):
        raise BadMachineName(f"{name!r} is not a usable machine name: use lowercase letters, digits and dashes "
                           "(at most 40), e.g. --name laptop-2")
    return clean


def default_name() -> str:
    """This machine's host name, made into a valid machine name."""
    import socket

    cleaned = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().split(".")[0].lower()).strip("-")
    return (cleaned or "machine")[:40]


def fingerprint() -> str:
    """What tells this computer from another: its machine-id where it has one, else its MAC address."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            seed = Path(path).read_text().strip()
        except OSError:
            continue
        if seed:
            return hashlib.sha256(f"mlqueue-machine:{seed}".encode()).hexdigest()[:16]
    return hashlib.sha256(f"mlqueue-machine:{uuid.getnode()}".encode()).hexdigest()[:16]


def check_identity(home: Path) -> None:
    """Refuse to start a worker with credentials that were joined from another computer.

    A home directory copied to a second machine would make two machines one identity — and revoking one
    would silently stop both. ``mlqueue join`` records the computer's fingerprint next to the credentials.
    """
    config = read_json_file(home / HOME_CONFIG_NAME)
    recorded = config.get("machine_fingerprint")
    if recorded and recorded != fingerprint():
        raise ConfigError(
            f"{home / HOME_CONFIG_NAME} holds the credentials of machine {config.get('machine')!r}, which joined "
            "from another computer: every machine needs its own. Get a code on the HQ (`mlqueue invite`) and run "
            "`mlqueue join --code CODE --name NEW-NAME` here; it replaces these credentials.")


def user_of(name: str) -> str:
    return USER_PREFIX + name


def _redis_admin(settings: Settings) -> redis.Redis:
    broker, _ = settings.require_urls()
    if not brokers.is_redis(broker):
        raise BrokerRefused(
            f"machines join with their own broker user on the HQ's Redis only; this HQ's broker is "
            f"{broker.split('://')[0]}:// (RabbitMQ). Give the machine a RabbitMQ user of its own (`rabbitmqctl "
            "add_user` and `set_permissions`) and set MLQUEUE_BROKER_URL, MLQUEUE_MONGO_URL (and MLQUEUE_REDIS_URL "
            "for sweeps) in its config/mlqueue.json or environment; see docs/scaling.md")
    return redis.Redis.from_url(broker, socket_timeout=10)


def store_requires_auth(settings: Settings) -> bool:
    _, mongo_url = settings.require_urls()
    return urlsplit(mongo_url).username is not None


def _apply_redis_user(conn: redis.Redis, name: str, password_sha256: str) -> None:
    try:
        conn.execute_command("ACL", "SETUSER", user_of(name), "reset", "on", f"#{password_sha256}", *REDIS_RULES)
    except redis.ResponseError as exc:
        raise BrokerRefused(f"the broker refused to create the user of machine {name!r} ({exc}): per-machine "
                            "credentials need Redis 6+ and a broker URL whose user may run ACL SETUSER (the HQ's "
                            "embedded Redis does)") from exc


def _urls_for(name: str, host: str, redis_password: str, store_password: str | None,
              settings: Settings) -> tuple[str, str]:
    """The broker and store URLs as ``name`` sees them: its own users, the HQ at ``host``."""
    broker, mongo_url = settings.require_urls()
    user = quote_plus(user_of(name))
    broker_url = f"redis://{user}:{quote_plus(redis_password)}@{host}:{urlsplit(broker).port}/0"
    mongo_port = urlsplit(mongo_url).port
    if store_password is None:
        return broker_url, f"mongodb://{host}:{mongo_port}/?directConnection=true"
    return broker_url, (f"mongodb://{user}:{quote_plus(store_password)}@{host}:{mongo_port}/"
                        "?directConnection=true&authSource=admin")


def get(name: str, settings: Settings | None = None) -> dict[str, Any] | None:
    return store.db(settings or get_settings()).machines.find_one({"_id": name})


def enroll(name: str, code: str, host: str, settings: Settings | None = None,
           address: str | None = None) -> dict[str, Any]:
    """Spend ``code`` and give machine ``name`` its own credentials; ``host`` is how it reaches the HQ.

    Checks first, spends second, creates third: a refused name does not burn the code.
    """
    settings = settings or get_settings()
    name = check_name(name)
    known = get(name, settings)
    if known and known.get("state") == ACTIVE:
        raise MachineError(f"a machine named {name!r} already belongs to the house; join under another name "
                           f"(--name), or remove the old one on the HQ with `mlqueue machines remove {name}`")
    _redis_admin(settings)  # a broker that cannot give the machine a user refuses before the code is spent
    invites.spend(code, name, settings)
    redis_password = secrets.token_urlsafe(24)
    password_sha256 = hashlib.sha256(redis_password.encode()).hexdigest()
    _apply_redis_user(_redis_admin(settings), name, password_sha256)
    store_password = secrets.token_urlsafe(24) if store_requires_auth(settings) else None
    if store_password is not None:
        _create_store_user(name, store_password, settings)
    store.db(settings).machines.replace_one({"_id": name}, {
        "_id": name, "state": ACTIVE, "joinedDate": now(), "address": address, "redisUser": user_of(name),
        "redisPasswordSha256": password_sha256, "storeUser": user_of(name) if store_password else None,
    }, upsert=True)
    broker_url, mongo_url = _urls_for(name, host, redis_password, store_password, settings)
    return {"machine": name, "broker_url": broker_url, "mongo_url": mongo_url, "mongo_db": settings.mongo_db,
            "queue": settings.queue, "storeRevocable": store_password is not None}


def _create_store_user(name: str, password: str, settings: Settings) -> None:
    admin = store.client(settings).admin
    roles = [{"role": "readWrite", "db": settings.mongo_db}]
    if admin.command("usersInfo", user_of(name)).get("users"):
        admin.command("updateUser", user_of(name), pwd=password, roles=roles)
    else:
        admin.command("createUser", user_of(name), pwd=password, roles=roles)


def revoke(name: str, settings: Settings | None = None) -> dict[str, Any]:
    """Take machine ``name``'s credentials back and cut its open connections. Returns what was done."""
    from mlqueue.access import require_write

    require_write("revoke machines")
    settings = settings or get_settings()
    machine = get(name, settings)
    if machine is None:
        raise UnknownMachine(f"no machine named {name!r}; `mlqueue machines ls` lists them")
    conn = _redis_admin(settings)
    conn.execute_command("ACL", "DELUSER", user_of(name))  # also closes its connections
    closed = 0
    if machine.get("storeUser"):
        closed = _drop_store_user(machine["storeUser"], settings)
    store.db(settings).machines.update_one({"_id": name}, {"$set": {"state": REVOKED, "revokedDate": now()}})
    return {"machine": name, "storeRevoked": bool(machine.get("storeUser")), "storeConnectionsClosed": closed}


def _drop_store_user(user: str, settings: Settings) -> int:
    admin = store.client(settings).admin
    try:
        admin.command("dropUser", user)
    except OperationFailure as exc:
        if exc.code != 11:  # UserNotFound: already gone
            raise
    closed = 0
    for op in admin.command("currentOp", {"$all": True}).get("inprog", []):
        if any(u.get("user") == user for u in op.get("effectiveUsers") or []):
            admin.command("killOp", op=op["opid"])
            closed += 1
    return closed


def restore_access(settings: Settings | None = None) -> int:
    """Re-create the Redis users of every active machine (after the HQ, and so Redis, restarted)."""
    settings = settings or get_settings()
    if not brokers.is_redis(settings.broker_url):
        return 0  # RabbitMQ keeps its users itself (machines cannot join there: ``_redis_admin``)
    conn = _redis_admin(settings)
    count = 0
    for machine in store.db(settings).machines.find({"state": ACTIVE}):
        _apply_redis_user(conn, machine["_id"], machine["redisPasswordSha256"])
        count += 1
    return count


def listing(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every machine with its state and, from its worker's registration, whether it is online now."""
    settings = settings or get_settings()
    d = store.db(settings)
    rows = []
    for machine in d.machines.find().sort("_id", 1):
        name = machine["_id"]
        workers = worker_store.of_machine(name, settings)
        online = [w for w in workers if worker_store.is_online(w, settings)]
        shown = online[0] if online else (workers[0] if workers else {})
        state = machine["state"] if machine["state"] == REVOKED else ("online" if online else "offline")
        rows.append({"name": name, "state": state, "joined": machine.get("joinedDate"),
                     "address": machine.get("address"), "worker": shown.get("name"),
                     "lastHeartbeat": shown.get("lastHeartbeat"), "capabilities": shown.get("capabilities") or {}})
    return rows
