"""Path traversal, tried on every name a user or a script supplies: nothing is read or written outside its directory."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from conftest import Farm

from mlqueue import artifacts, datasets, jobs, names, scripts, store

EVIL = "../../../../tmp/x.csv"


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "../x", "..\\x", "/etc/passwd", "a\x00b", "x" * 300])
def test_a_file_name_is_one_plain_name(bad: str) -> None:
    with pytest.raises(names.UnsafeName):
        names.file_name(bad)
    assert names.file_name("wine data-1.csv") == "wine data-1.csv"


@pytest.mark.parametrize("bad", ["/abs.py", "../up.py", "a/../../up.py", "C:/x.py", "a\\..\\..\\x"])
def test_a_relative_path_stays_inside(bad: str, tmp_path: Path) -> None:
    with pytest.raises(names.UnsafeName):
        names.relative_path(bad)
    assert names.inside(tmp_path, "pkg/main.py") == (tmp_path / "pkg" / "main.py").resolve()
    with pytest.raises(names.UnsafeName):
        names.inside(tmp_path, "/etc/passwd")
    (tmp_path / "link").symlink_to("/etc")
    with pytest.raises(names.UnsafeName):
        names.inside(tmp_path, "link/passwd")


def test_data_push_refuses_a_climbing_name_and_stores_nothing(farm: Farm, tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    done = farm.run_cli("data", "push", str(tmp_path / "x.csv"), "--name", EVIL)
    assert done.returncode == 2 and "not a plain file name" in done.stderr and "Traceback" not in done.stderr
    done = farm.run_cli("data", "push", str(tmp_path / "x.csv"), "--project", "../p")
    assert done.returncode == 2 and "project name" in done.stderr
    assert farm.db["datasets.files"].count_documents({}) == 0


def _store_dataset_as_if_before_the_check(farm: Farm, project: str, name: str, content: bytes) -> None:
    meta = {"project": project, "name": name, "sha256": datasets.hashlib.sha256(content).hexdigest(),
            "size": len(content), "source": "push"}
    store.bucket(datasets.BUCKET, farm.settings).upload_from_stream(f"{project}/{name}", io.BytesIO(content),
                                                                    metadata=meta)


def test_an_unsafe_stored_name_is_refused_at_submit_and_never_written_by_a_worker(farm: Farm, tmp_path: Path) -> None:
    _store_dataset_as_if_before_the_check(farm, "p", EVIL, b"a,b\n1,2\n")
    with pytest.raises(jobs.JobError, match="not a plain file name"):
        farm.submit({"scriptName": "toy", "projectName": "p", "dataFileName": EVIL})
    with pytest.raises(jobs.JobError, match="not a plain file name"):
        farm.submit({"scriptName": "toy", "projectName": "p", "dataFileNames": ["ok.csv", EVIL]})
    assert farm.db.jobs.count_documents({}) == 0
    cache = datasets.Cache(farm.settings)
    with pytest.raises(datasets.DatasetError, match="not a plain file name"):
        cache.path_for("p", EVIL)
    with pytest.raises(datasets.DatasetError):
        datasets.pull("p", EVIL, tmp_path)
    assert not list(tmp_path.rglob("x.csv"))


def test_a_stored_hash_that_climbs_is_refused_by_the_cache(farm: Farm) -> None:
    content = b"a\n1\n"
    store.bucket(datasets.BUCKET, farm.settings).upload_from_stream(
        "p/d.csv", io.BytesIO(content), metadata={"project": "p", "name": "d.csv", "sha256": "../../..", "size": 4})
    with pytest.raises(datasets.DatasetError, match="unsafe"):
        datasets.Cache(farm.settings).path_for("p", "d.csv")


def _store_bundle(farm: Farm, members: dict[str, str], entry: str) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for member, text in members.items():
            zf.writestr(member, text)
    payload = buf.getvalue()
    meta = {"name": "evil", "sha256": scripts._hash_bytes(payload), "entry": entry, "kind": "module"}
    store.bucket(scripts.BUCKET, farm.settings).upload_from_stream("evil.zip", io.BytesIO(payload), metadata=meta)


@pytest.mark.parametrize("members, entry", [
    ({"main.py": "def run(job, report):\n    return {}\n", "../../../escaped.py": "x = 1\n"}, "main.py"),
    ({"/abs/escaped.py": "x = 1\n"}, "main.py"),
    ({"main.py": "def run(job, report):\n    return {}\n"}, "../../../../escaped.py"),
])
def test_a_bundle_with_climbing_or_absolute_entries_is_refused(farm: Farm, members: dict[str, str],
                                                               entry: str) -> None:
    _store_bundle(farm, members, entry)
    with pytest.raises(scripts.ScriptNotFound, match="refused"):
        scripts.resolve("evil", farm.settings)
    home = Path(farm.settings.home)
    assert not list(home.parent.rglob("escaped.py"))


def test_a_pushed_folder_leaves_out_symlinks_to_elsewhere(farm: Farm, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("do not ship")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "main.py").write_text("def run(job, report):\n    return {'status': 200}\n")
    (tmp_path / "pkg" / "key").symlink_to(tmp_path / "secret")
    scripts.push(tmp_path / "pkg", settings=farm.settings)
    doc = farm.db["scripts.files"].find_one({"metadata.name": "pkg"})
    buf = io.BytesIO()
    store.bucket(scripts.BUCKET, farm.settings).download_to_stream(doc["_id"], buf)
    assert zipfile.ZipFile(buf).namelist() == ["main.py"]


def test_artifact_names_cannot_climb_on_upload_or_download(farm: Farm, tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(b"weights")
    with pytest.raises(artifacts.ArtifactError, match="not a plain file name"):
        artifacts.upload("j1", tmp_path / "w.bin", "../../w.bin", farm.settings)
    file_id = store.bucket(artifacts.BUCKET, farm.settings).upload_from_stream(
        "j1/x", io.BytesIO(b"x"), metadata={"jobId": "j1", "name": "../../escaped.bin", "sha256": "", "size": 1})
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(artifacts.ArtifactError, match="unsafe name"):
        artifacts.download(str(file_id), out, farm.settings)
    assert not list(tmp_path.rglob("escaped.bin"))


LEAKY = '''
from pathlib import Path


def run(job, report):
    out = Path(job["writePath"])
    (out / "a.csv").write_text("a,b\\n1,2\\n")
    (out / "m.bin").write_text("model")
    return {"status": 200, "loss": 0.0, "metric": 1.0,
            "artifacts": [{"name": "hostname", "path": "/etc/hostname"},
                          {"name": "../../m.bin", "path": str(out / "m.bin")},
                          {"name": "ok.bin", "path": str(out / "m.bin")}],
            "datasets": [{"fileName": "../../../a.csv", "path": str(out / "a.csv")},
                         {"fileName": "b.csv", "path": str(out / ".." / ".." / ".." / "elsewhere.csv")}]}
'''


def test_a_worker_collects_only_files_inside_the_jobs_write_path(farm: Farm, tmp_path: Path) -> None:
    (tmp_path / "leaky.py").write_text(LEAKY)
    scripts.push(tmp_path / "leaky.py", settings=farm.settings)
    farm.start_worker("w1")
    [job_id] = farm.submit({"scriptName": "leaky"})
    order = farm.wait_final(job_id)
    assert order["state"] == "succeeded"
    host, climbing, ok = order["outcome"]["artifacts"]
    assert "outside the Job's writePath" in host["error"] and "fileId" not in host
    assert "not a plain file name" in climbing["error"] and ok["name"] == "ok.bin" and ok["fileId"]
    bad_name, elsewhere = order["outcome"]["datasets"]
    assert "not a plain file name" in bad_name["error"] and "outside" in elsewhere["error"]
    assert [a["name"] for a in artifacts.for_job(job_id, farm.settings)] == ["ok.bin"]
    assert farm.db["datasets.files"].count_documents({}) == 0


def test_a_sweep_whose_base_names_a_climbing_dataset_is_refused(farm: Farm) -> None:
    from mlqueue import sweeps
    from mlqueue.sweeps import driver as sweep_driver

    text = ("base: {scriptName: toy, projectName: p, dataFileName: '../../../../tmp/x.csv'}\n"
            "space: {x: {float: [0, 1]}}\nobjective: loss\nmethod: random\nbudget: {maxTrials: 2}\n")
    sweep = sweeps.parse_text(text, "evil.yaml", farm.settings)
    with pytest.raises(jobs.JobError, match="not a plain file name"):
        sweep_driver.create(sweep, text, "evil.yaml", settings=farm.settings)
    assert farm.db.jobs.count_documents({}) == 0 and farm.db.sweeps.count_documents({}) == 0
