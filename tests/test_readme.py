"""The README's own example works as printed: its command-line script, pushed and run as its Job says."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import ROOT, Farm

from mlqueue import datasets, scripts


def _block(text: str, starting: str) -> str:
    """The fenced code block of the README whose first line starts with ``starting``."""
    for body in re.findall(r"```[a-z]*\n(.*?)```", text, re.DOTALL):
        if body.startswith(starting):
            return body
    raise AssertionError(f"the README has no code block starting with {starting!r}")


def test_the_readme_command_line_script_runs_as_its_job_says(farm: Farm, tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    script = tmp_path / "my_encoder.py"
    script.write_text(_block(readme, "# my_encoder.py"))
    submit = _block(readme, ".venv/bin/mlqueue scripts push my_encoder.py")
    job = json.loads(re.search(r"echo '(\{.*?\})'", submit, re.DOTALL).group(1))
    (tmp_path / job["dataFileName"]).write_text("con_a,cat_b\n1,x\n2,y\n")
    datasets.push(tmp_path / job["dataFileName"], job["projectName"], settings=farm.settings)
    scripts.push(script, settings=farm.settings)
    farm.start_worker("w1")
    [job_id] = farm.submit(job)
    order = farm.wait_final(job_id)
    assert order["state"] == "succeeded", order.get("outcome")
    assert order["outcome"]["rows"] == 2 and order["outcome"]["datasets"][0]["fileName"] == "clean_wine_raw.csv"
