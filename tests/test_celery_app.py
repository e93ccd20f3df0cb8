"""The broker speaks JSON only: a pickled message (which would run code on unpickling) is refused and logged."""

from __future__ import annotations

import pickle

import pytest
from conftest import Farm, wait_for
from kombu import Connection, Exchange, Queue

from mlqueue.celery_app import app


def test_the_app_accepts_json_only() -> None:
    assert app.conf.accept_content == ["json"] and app.conf.task_serializer == "json"


def test_a_pickled_message_is_refused_logged_and_the_worker_keeps_working(farm: Farm) -> None:
    worker = farm.start_worker("w1")
    queue = Queue(farm.settings.queue, Exchange(farm.settings.queue), routing_key=farm.settings.queue)
    with Connection(farm.settings.broker_url) as conn:
        producer = conn.Producer(serializer="pickle")
        body = ((), {"job_id": "x", "delivery": "y"}, {"callbacks": None, "errbacks": None, "chain": None})
        assert pickle.dumps(body)  # what an attacker would put on the queue, here harmless
        producer.publish(body, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue],
                         headers={"task": "mlqueue.run_order", "id": "pickled-1", "lang": "py", "argsrepr": "",
                                  "kwargsrepr": ""}, serializer="pickle")
    log = farm.home / "worker-w1.log"
    wait_for(lambda: "untrusted content of type pickle" in log.read_text(), timeout=60,
             what="the worker to refuse the pickled message")
    [job_id] = farm.submit({"scriptName": "toy"})
    assert farm.wait_final(job_id)["state"] == "succeeded" and worker.poll() is None


def test_the_broker_refuses_a_client_without_its_password(farm: Farm) -> None:
    import redis

    url = farm.settings.broker_url
    assert "@" in url, "Redis always runs with a password"
    anonymous = redis.Redis.from_url("redis://" + url.split("@", 1)[1])
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    wrong = redis.Redis.from_url("redis://:wrong@" + url.split("@", 1)[1])
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
