"""The store refuses anonymous clients whenever it is reachable beyond this machine."""

from __future__ import annotations

import json
from pathlib import Path

import pymongo
import pytest
from pymongo.errors import OperationFailure

from mlqueue.hq import HQ
from mlqueue.servers import MongoServer, ServerError


def test_mongo_with_auth_refuses_anonymous_and_wrong_password_and_keeps_its_user(tmp_path: Path) -> None:
    server = MongoServer(tmp_path / "db", tmp_path / "db.log", auth=True, password="s3cret/:@pw").start()
    try:
        assert "mlqueue:s3cret%2F%3A%40pw@" in server.url
        with pymongo.MongoClient(server.url) as client:
            client.mlq.things.insert_one({"a": 1})
        anonymous = f"mongodb://127.0.0.1:{server.port}/?directConnection=true"
        with pymongo.MongoClient(anonymous, serverSelectionTimeoutMS=3000) as client:
            with pytest.raises(OperationFailure) as refused:
                client.mlq.things.insert_one({"b": 2})
            assert refused.value.code == 13
            with pytest.raises(OperationFailure):
                client.mlq.things.find_one()
        wrong = server.url.replace("s3cret%2F%3A%40pw", "guess")
        with pymongo.MongoClient(wrong, serverSelectionTimeoutMS=3000) as client, pytest.raises(OperationFailure):
            client.mlq.things.find_one()
        server.stop()
        server.start()  # provisioned again: the user and the data are still there
        with pymongo.MongoClient(server.url) as client:
            assert client.mlq.things.count_documents({}) == 1
    finally:
        server.stop()


def test_auth_follows_the_bind_address_unless_forced() -> None:
    def server(bind: str, auth: bool | None = None) -> MongoServer:
        return MongoServer(Path("/nonexistent"), Path("/nonexistent.log"), bind=bind, auth=auth, password="p")

    assert not server("127.0.0.1").requires_auth and not server("localhost").requires_auth
    assert server("0.0.0.0").requires_auth and server("192.168.1.20").requires_auth
    assert server("127.0.0.1", auth=True).requires_auth and not server("0.0.0.0", auth=False).requires_auth
    assert "@" not in server("127.0.0.1").url and "mlqueue:p@" in server("0.0.0.0").url
    with pytest.raises(ServerError, match="password"):
        MongoServer(Path("/nonexistent"), Path("/x.log"), auth=True).start()


def test_hq_puts_store_credentials_in_its_config_and_join_command(tmp_path: Path) -> None:
    hq = HQ(home=tmp_path / "home", redis_port=0, mongo_port=0, http_port=0, mongo_auth=True)
    hq.prepare()
    try:
        hq.start_servers()
        config = json.loads(hq.config_path.read_text())
        assert config["mongo_password"] and f"mlqueue:{config['mongo_password']}@" in config["mongo_url"]
        assert f"mlqueue:{config['mongo_password']}@" in hq.join_command()
        with pymongo.MongoClient(config["mongo_url"]) as client:
            client.admin.command("ping")
            client.mlq.x.insert_one({})
        assert "(needs user and password)" in hq.banner() and config["mongo_password"] not in hq.banner().split(
            "paste:")[0]
    finally:
        hq.shutdown()


def test_a_lan_hq_banner_gives_one_address_everywhere_and_the_ml_extra(tmp_path: Path) -> None:
    hq = HQ(home=tmp_path / "home", bind="0.0.0.0")
    hq.config = {"broker_url": "redis://:pw@127.0.0.1:6390/0", "http_port": 8350, "flower_port": 5555,
                 "mongo_url": "mongodb://mlqueue:pw@127.0.0.1:27027/?directConnection=true&authSource=admin"}
    banner, host = hq.banner(), hq.public_host
    assert f"broker    : {host}:6390\n" in banner and f"store     : {host}:27027  (needs" in banner
    assert f"@{host}:6390/0" in hq.join_command() and "127.0.0.1" not in banner
    assert "pip install '.[ml]'" in banner and "pw" not in banner.split("paste:")[0]
