"""A command-line script that checkpoints by printing: `metric: epoch=N checkpoint=PATH`, resumes from `resumeFrom`."""

import json
import os
import sys
import time

job = json.loads(sys.argv[1])
start = 0
if job.get("resumeFrom"):
    with open(job["resumeFrom"]) as fh:
        start = json.load(fh)["epoch"]
for epoch in range(start + 1, job["epochs"] + 1):
    time.sleep(job["sleepSeconds"] / job["epochs"])
    path = os.path.join(job["checkpointDir"], f"state-{epoch}.json")   # a new file per checkpoint
    with open(path, "w") as fh:
        json.dump({"epoch": epoch}, fh)
    print(f"metric: epoch={epoch} loss={1 / epoch:.4f} checkpoint={path}", flush=True)
print(json.dumps({"status": 200, "loss": 1 / job["epochs"], "startEpoch": start + 1}))
