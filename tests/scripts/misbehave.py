"""A command-line script (whole Job as one JSON argument) that misbehaves as the Job asks."""
import json
import sys
import time

job = json.loads(sys.argv[1])
print("starting", flush=True)
if job.get("hang"):
    time.sleep(600)
if job.get("exitCode"):
    print("something broke", file=sys.stderr)
    sys.exit(job["exitCode"])
if job.get("garbage"):
    print("Epoch 3/3 - loss: 0.2 (not json)")
    sys.exit(0)
print(json.dumps({"status": 200, "loss": job.get("x", 0) ** 2}))
