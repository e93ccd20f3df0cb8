"""A script in the seeds' positional style: dataFileName dataPath writePath '<json>'; prints JSON last."""
import csv
import json
import os
import sys

data_file, data_path, write_path, execution = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
with open(os.path.join(data_path, data_file)) as fh:
    rows = list(csv.reader(fh))
print(f"read {len(rows) - 1} rows from {data_file}")
with open(os.path.join(write_path, "upper_" + data_file), "w", newline="") as fh:
    csv.writer(fh).writerows([[c.upper() for c in rows[0]], *rows[1:]])
print(json.dumps({"status": 200, "rows": len(rows) - 1, "tag": execution.get("tag")}))
