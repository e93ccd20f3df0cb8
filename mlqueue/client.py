"""One client interface for everything the CLI asks of an HQ, over HTTP or in-process.

``HttpClient`` talks to a remote HQ's API (``mlqueue --hq http://hq.local:8350 ...``), so a laptop needs
neither the broker nor the store. ``LocalClient`` calls ``mlqueue.service`` in-process, as the API's routes do,
on the HQ's own machine. Both return the same shapes (datetimes as ``datetime``), and both
raise ``ClientError`` with a message a person can act on, so the CLI has one code path.

Over 400 lines on purpose: the two classes mirror each other method for method (and the ``Client``
protocol lists the methods once), so keeping them side by side keeps a missing mirror visible; the
contract tests (tests/test_client_contract.py) check it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote

import httpx

from mlqueue import names, orders, ranking, service
from mlqueue.errors import MlqueueError
from mlqueue.settings import Settings, get_settings

PAGE = 1000
IDS_PER_REQUEST = 100
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


class ClientError(MlqueueError):
    """Raised when an HQ refused or could not do something; ``status`` is the HTTP-style code (404, 409, 422...)."""

    status: int | None = None  # type: ignore[assignment] - None: the HQ was not reached


class Client(Protocol):
    def submit(self, jobs: list[dict[str, Any]], where: list[str] | None = None) -> list[str]: ...
    def states(self, job_ids: list[str]) -> dict[str, str]: ...
    def orders(self, state: str | None = None, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]: ...
    def order(self, job_id: str) -> dict[str, Any]: ...
    def cancel(self, job_id: str) -> dict[str, Any]: ...
    def requeue(self, job_id: str) -> str: ...
    def results(self, sort: str = "loss", descending: bool = False, state: str | None = None,
                limit: int | None = None, ids: list[str] | None = None) -> list[dict[str, Any]]: ...
    def status(self) -> dict[str, Any]: ...
    def workers(self) -> list[dict[str, Any]]: ...
    def worker_command(self, name: str, action: str) -> dict[str, Any]: ...
    def log(self, job_id: str, after: int = 0) -> dict[str, Any]: ...
    def follow_log(self, job_id: str, after: int = 0) -> Iterator[dict[str, Any]]: ...
    def invite(self) -> dict[str, Any]: ...
    def machines(self) -> list[dict[str, Any]]: ...
    def remove_machine(self, name: str) -> dict[str, Any]: ...

    def datasets(self, project: str | None = None) -> list[dict[str, Any]]: ...
    def dataset_push(self, path: Path, project: str = "default", name: str | None = None) -> dict[str, Any]: ...
    def dataset_pull(self, name: str, project: str = "default", output: Path = Path(".")) -> Path: ...
    def scripts(self) -> list[dict[str, Any]]: ...
    def script_push(self, path: Path, name: str | None = None) -> dict[str, Any]: ...
    def artifacts(self, job_id: str) -> dict[str, Any]: ...
    def artifact_download(self, file_id: str, output: Path = Path(".")) -> Path: ...
    def sweeps(self) -> list[dict[str, Any]]: ...
    def sweep_start(self, text: str, where: str = "sweep") -> dict[str, Any]: ...
    def sweep_status(self, sweep_id: str | None = None, trials: bool = False) -> dict[str, Any]: ...
    def sweep_best(self, sweep_id: str | None = None) -> dict[str, Any]: ...
    def sweep_stop(self, sweep_id: str) -> dict[str, Any]: ...


def connect(hq_url: str | None = None, token: str | None = None, settings: Settings | None = None) -> Client:
    """An ``HttpClient`` when an HQ URL is given, else a ``LocalClient`` on this machine's settings."""
    if hq_url:
        settings = settings or get_settings()
        return HttpClient(hq_url, token or settings.token)
    return LocalClient(settings)


def _by() -> str:
    return f"cli@{os.uname().nodename}"


class LocalClient:
    """The client interface over ``mlqueue.service`` itself (the HQ's machine, or any with store access)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings

    @property
    def settings(self) -> Settings:
        settings = self._settings or get_settings()
        settings.require_urls()
        return settings

    def submit(self, jobs: list[dict[str, Any]], where: list[str] | None = None) -> list[str]:
        with _reported():
            return service.submit(jobs, _by(), self.settings, where=where)

    def states(self, job_ids: list[str]) -> dict[str, str]:
        with _reported():
            return service.states(job_ids, self.settings)

    def orders(self, state: str | None = None, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        with _reported():
            return service.orders_page(self.settings, {"state": state} if state else {}, offset, limit)

    def order(self, job_id: str) -> dict[str, Any]:
        with _reported():
            return service.show(job_id, self.settings)

    def cancel(self, job_id: str) -> dict[str, Any]:
        with _reported():
            return service.cancel(job_id, _by(), self.settings)

    def requeue(self, job_id: str) -> str:
        with _reported():
            return service.requeue(job_id, _by(), self.settings)["jobId"]

    def results(self, sort: str = "loss", descending: bool = False, state: str | None = None,
                limit: int | None = None, ids: list[str] | None = None) -> list[dict[str, Any]]:
        with _reported():
            return service.results(self.settings, sort=sort, descending=descending, state=state, limit=limit,
                                   ids=ids)

    def status(self) -> dict[str, Any]:
        with _reported():
            return service.status(self.settings)

    def workers(self) -> list[dict[str, Any]]:
        with _reported():
            return service.workers(self.settings)

    def worker_command(self, name: str, action: str) -> dict[str, Any]:
        with _reported():
            return service.worker_command(name, action, _by(), self.settings)

    def log(self, job_id: str, after: int = 0) -> dict[str, Any]:
        """A Job's printed lines numbered above ``after`` (see ``live_log.read``)."""
        with _reported():
            return service.order_log(job_id, after, self.settings)

    def follow_log(self, job_id: str, after: int = 0) -> Iterator[dict[str, Any]]:
        """Chunks of new lines as the script prints them, the last one ``final`` when the Job has ended."""
        with _reported():
            yield from service.follow_order_log(job_id, after, self.settings)

    def invite(self) -> dict[str, Any]:
        with _reported():
            return service.create_invite(_by(), self.settings)

    def machines(self) -> list[dict[str, Any]]:
        with _reported():
            return service.machines_list(self.settings)

    def remove_machine(self, name: str) -> dict[str, Any]:
        with _reported():
            return service.remove_machine(name, self.settings)

    # ------------------------------------------------------------ data, scripts, artifacts, sweeps

    def datasets(self, project: str | None = None) -> list[dict[str, Any]]:
        with _reported():
            return service.datasets_list(self.settings, project)

    def dataset_push(self, path: Path, project: str = "default", name: str | None = None) -> dict[str, Any]:
        with _reported():
            return service.dataset_push(Path(path), project, name, self.settings)

    def dataset_pull(self, name: str, project: str = "default", output: Path = Path(".")) -> Path:
        with _reported():
            return service.dataset_pull(project, name, Path(output), self.settings)

    def scripts(self) -> list[dict[str, Any]]:
        with _reported():  # built-in scripts are listed even with no store configured
            return service.scripts_list(self._settings or get_settings())

    def script_push(self, path: Path, name: str | None = None) -> dict[str, Any]:
        with _reported():
            return service.script_push(Path(path), name, self.settings)

    def artifacts(self, job_id: str) -> dict[str, Any]:
        with _reported():
            return service.artifacts_of(job_id, self.settings)

    def artifact_download(self, file_id: str, output: Path = Path(".")) -> Path:
        with _reported():
            return service.artifact_download(file_id, Path(output), self.settings)

    def sweeps(self) -> list[dict[str, Any]]:
        with _reported():
            return service.sweeps_list(self.settings)

    def sweep_start(self, text: str, where: str = "sweep") -> dict[str, Any]:
        with _reported():
            return service.sweep_start(text, where, _by(), self.settings)

    def sweep_status(self, sweep_id: str | None = None, trials: bool = False) -> dict[str, Any]:
        with _reported():
            return service.sweep_status(sweep_id, self.settings, trials=trials)

    def sweep_best(self, sweep_id: str | None = None) -> dict[str, Any]:
        with _reported():
            return service.sweep_best(sweep_id, self.settings)

    def sweep_stop(self, sweep_id: str) -> dict[str, Any]:
        with _reported():
            return service.sweep_stop(sweep_id, _by(), self.settings)


@contextmanager
def _reported() -> Iterator[None]:
    """Service errors as ``ClientError`` with the same status the API would answer with."""
    try:
        yield
    except ClientError:
        raise
    except MlqueueError as exc:
        raise ClientError(str(exc), exc.status) from None


class HttpClient:
    """The client interface over a remote HQ's REST API (see ``mlqueue.api``)."""

    def __init__(self, url: str, token: str | None, timeout: float = 60.0) -> None:
        if not token:
            raise ClientError("no token for the HQ: pass --token or set MLQUEUE_TOKEN to the `token` in the "
                              "HQ's config.json (on the HQ machine: ~/.mlqueue/config.json)", 401)
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; errors become ``ClientError`` carrying the API's own message."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            self._refused(response)
        return revive(response.json())

    def _unreachable(self, exc: Exception) -> ClientError:
        return ClientError(f"cannot reach the HQ at {self.url} ({type(exc).__name__}: {exc}); is "
                           "`mlqueue hq` running there, and is its port open to this machine?")

    @staticmethod
    def _refused(response: httpx.Response) -> None:
        """Raise the API's own message for an error response."""
        try:
            message = response.json().get("error") or response.text
        except ValueError:
            message = response.text or response.reason_phrase
        raise ClientError(f"{message} (HTTP {response.status_code})", response.status_code)

    def _pages(self, path: str, params: dict[str, Any], limit: int | None) -> list[dict[str, Any]]:
        """Follow a listing's pages until it ends or ``limit`` rows are in."""
        rows: list[dict[str, Any]] = []
        while limit is None or len(rows) < limit:
            size = PAGE if limit is None else min(PAGE, limit - len(rows))
            page = self.call("GET", path, params={**params, "offset": len(rows), "limit": size})
            rows += page["items"]
            if page.get("next") is None:
                break
        return rows

    def submit(self, jobs: list[dict[str, Any]], where: list[str] | None = None) -> list[str]:
        try:
            return self.call("POST", "/jobs", json=jobs)["jobIds"]
        except ClientError as exc:
            if where and exc.status == 422:
                message = re.sub(r"jobs\[(\d+)\]", lambda m: where[int(m.group(1))], str(exc))
                raise ClientError(message, 422) from None
            raise

    def states(self, job_ids: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for chunk in _chunks(job_ids) if job_ids else []:
            for o in self._pages("/orders", {"jobId": chunk}, None):
                found[o["jobId"]] = o["state"]
        return found

    def orders(self, state: str | None = None, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        params = {"offset": offset, "limit": limit, **({"state": state} if state else {})}
        return self.call("GET", "/orders", params=params)["items"]

    def order(self, job_id: str) -> dict[str, Any]:
        return self.call("GET", f"/orders/{job_id}", params={"metrics": orders.METRICS_KEPT})

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.call("POST", f"/orders/{job_id}/cancel")

    def requeue(self, job_id: str) -> str:
        return self.call("POST", f"/orders/{job_id}/requeue")["jobId"]

    def results(self, sort: str = "loss", descending: bool = False, state: str | None = None,
                limit: int | None = None, ids: list[str] | None = None) -> list[dict[str, Any]]:
        """``outcomes.results`` over HTTP: finished Jobs from /outcomes, unfinished ones from /orders."""
        rows: list[dict[str, Any]] = []
        for chunk in _chunks(ids) if ids else [None]:
            only = {"jobId": chunk} if chunk else {}
            if state is None or state in orders.FINAL:
                rows += self._pages("/outcomes", {"sort": sort, "desc": descending, **only,
                                                  **({"state": state} if state else {})}, limit)
            if state is None or state in orders.ACTIVE:
                active = self._pages("/orders", {"state": [state] if state else list(orders.ACTIVE), **only}, limit)
                rows += [{"jobId": o["jobId"], "state": o["state"], "outcome": None, "job": o.get("job") or {},
                          "createdDate": o.get("createdDate"), "worker": o.get("worker"),
                          "attempts": o.get("attempts", 0)} for o in active]
        ranked = ranking.rank_rows(rows, sort, descending)
        return ranked[:limit] if limit else ranked

    def status(self) -> dict[str, Any]:
        return self.call("GET", "/status")

    def workers(self) -> list[dict[str, Any]]:
        return self.call("GET", "/workers")

    def worker_command(self, name: str, action: str) -> dict[str, Any]:
        return self.call("POST", f"/workers/{name}/{action}")

    def log(self, job_id: str, after: int = 0) -> dict[str, Any]:
        return self.call("GET", f"/orders/{job_id}/log", params={"after": after})

    def follow_log(self, job_id: str, after: int = 0) -> Iterator[dict[str, Any]]:
        """``GET /orders/{id}/log?follow=true`` (server-sent events), reconnecting where it broke off."""
        from mlqueue import live_log

        job_id = self.log(job_id, after)["jobId"]  # a 404 (or a prefix) is settled before streaming
        for _ in range(1000):
            try:
                with self.http.stream("GET", f"/orders/{job_id}/log", params={"follow": "true", "after": after},
                                      timeout=httpx.Timeout(30.0, read=None)) as response:
                    if response.status_code >= 400:
                        raise ClientError(f"{response.read().decode(errors='replace')} "
                                          f"(HTTP {response.status_code})", response.status_code)
                    for event, data in live_log.parse_sse(response.iter_lines()):
                        if event == "line":
                            after = data["seq"]
                            yield {"jobId": job_id, "lines": [revive(data)], "final": False}
                        elif event == "end":
                            yield {"jobId": job_id, "lines": [], "final": True, "state": data["state"]}
                            return
            except httpx.HTTPError:
                time.sleep(0.5)  # the connection dropped: reconnect after the last line received
        raise ClientError(f"lost the log stream of job {job_id} too many times; is the HQ at {self.url} up?")

    def invite(self) -> dict[str, Any]:
        return self.call("POST", "/invites")

    def machines(self) -> list[dict[str, Any]]:
        return self.call("GET", "/machines")

    def remove_machine(self, name: str) -> dict[str, Any]:
        return self.call("POST", f"/machines/{quote(name, safe='')}/remove")

    # ------------------------------------------------------------ data, scripts, artifacts, sweeps

    def download(self, path: str, output: Path, default_name: str) -> Path:
        """GET a file route into ``output`` (a file, or a directory to put it in under its own name)."""
        output = Path(output)
        try:
            with self.http.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    self._refused(response)
                name = _attachment_name(response.headers.get("content-disposition")) or default_name
                target = output / names.file_name(name, "downloaded file name") if output.is_dir() else output
                with open(target, "wb") as fh:
                    for chunk in response.iter_bytes():
                        fh.write(chunk)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        except names.UnsafeName as exc:
            raise ClientError(f"the HQ sent an unsafe file name ({exc}); nothing was written") from None
        return target

    def datasets(self, project: str | None = None) -> list[dict[str, Any]]:
        return self._pages("/datasets", {"project": project} if project else {}, None)

    def dataset_push(self, path: Path, project: str = "default", name: str | None = None) -> dict[str, Any]:
        path = Path(path)
        if not path.is_file():
            raise ClientError(f"{path}: no such file", 404)
        with open(path, "rb") as fh:
            return self.call("POST", "/datasets", params={"project": project, "name": name or path.name},
                             content=fh, headers={"Content-Type": "application/octet-stream"})

    def dataset_pull(self, name: str, project: str = "default", output: Path = Path(".")) -> Path:
        return self.download(f"/datasets/{quote(project, safe='')}/{quote(name, safe='')}", output, name)

    def scripts(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in s.items() if k != "run"} for s in self.call("GET", "/scripts")]

    def script_push(self, path: Path, name: str | None = None) -> dict[str, Any]:
        """A file is sent as it is; a folder as the same deterministic zip ``scripts.push`` makes."""
        from mlqueue import scripts

        path = Path(path)
        if path.is_dir():
            try:
                _, payload = scripts.bundle_of(path)
            except scripts.ScriptNotFound as exc:
                raise ClientError(str(exc), 404) from None
            params = {"folder": path.name}
        elif path.is_file():
            payload, params = path.read_bytes(), {"filename": path.name}
        else:
            raise ClientError(f"{path}: no such file or folder", 404)
        return self.call("POST", "/scripts", params={**params, **({"name": name} if name else {})},
                         content=payload, headers={"Content-Type": "application/octet-stream"})

    def artifacts(self, job_id: str) -> dict[str, Any]:
        return self.call("GET", f"/jobs/{job_id}/artifacts")

    def artifact_download(self, file_id: str, output: Path = Path(".")) -> Path:
        return self.download(f"/artifacts/{file_id}", output, file_id)

    def sweeps(self) -> list[dict[str, Any]]:
        return self.call("GET", "/sweeps")

    def sweep_start(self, text: str, where: str = "sweep") -> dict[str, Any]:
        return self.call("POST", "/sweeps", json={"text": text, "where": where})

    def sweep_status(self, sweep_id: str | None = None, trials: bool = False) -> dict[str, Any]:
        return self.call("GET", f"/sweeps/{sweep_id or 'latest'}", params={"trials": trials})

    def sweep_best(self, sweep_id: str | None = None) -> dict[str, Any]:
        return self.call("GET", f"/sweeps/{sweep_id or 'latest'}/best")

    def sweep_stop(self, sweep_id: str) -> dict[str, Any]:
        return self.call("POST", f"/sweeps/{sweep_id}/stop")


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[i:i + IDS_PER_REQUEST] for i in range(0, len(ids), IDS_PER_REQUEST)]


def revive(value: Any) -> Any:
    """The API's ISO-8601 UTC strings back to datetimes, so both clients return the same types."""
    if isinstance(value, dict):
        return {k: revive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [revive(v) for v in value]
    if isinstance(value, str) and ISO_UTC.match(value):
        return datetime.fromisoformat(value)
    return value


def _attachment_name(disposition: str | None) -> str | None:
    """The file name in a ``Content-Disposition: attachment; filename*=UTF-8''NAME`` header."""
    if disposition and "filename*=UTF-8''" in disposition:
        return unquote(disposition.split("filename*=UTF-8''", 1)[1].split(";", 1)[0])
    return None
