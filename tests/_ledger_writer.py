"""Subprocess helper for tests/test_ledger.py (run as: python _ledger_writer.py MODE HOME N TAG).

concurrent: wait for HOME/go, record N rows one call at a time, calling usage() every 5 rows
            (checking it sees all of this process's rows), then print the row_ids as JSON.
sigkill:    record N rows one call at a time, print the row_ids as JSON, print "done", sleep.
"""

import json
import sys
import time
import uuid
from pathlib import Path

from cognitionos_kit.storage.ledger import Ledger

mode, home, n, tag = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ledger = Ledger(home)
ids = []
if mode == "concurrent":
    while not (Path(home) / "go").exists():
        time.sleep(0.002)
    for i in range(n):
        ids.append(uuid.uuid4().hex)
        ledger.record([{"row_id": ids[-1], "user_id": tag, "attempt": 1, "status": "ok", "cost_usd": 0.001}])
        if i % 5 == 0:
            seen = ledger.usage(user_id=tag)
            assert set(seen["row_id"]) == set(ids), f"{tag}: usage() missed rows after {i + 1} records"
    print(json.dumps(ids), flush=True)
elif mode == "sigkill":
    for i in range(n):
        ids.append(uuid.uuid4().hex)
        ledger.record([{"row_id": ids[-1], "user_id": tag, "attempt": i, "status": "ok"}])
    print(json.dumps(ids), flush=True)
    print("done", flush=True)
    time.sleep(600)
else:
    sys.exit(f"unknown mode {mode}")
