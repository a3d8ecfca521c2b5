"""Subprocess helper for tests/test_memory.py: one 'kernel' storing and retrieving memories.

usage: _memory_worker.py HOME TAG N MODE   (MODE: share | kill)
share: store N global memories while retrieving, then wait until the other worker's memories
       are visible too; prints each id, then "saw <count>".
kill:  store N memories, print each id, then "done" and sleep (the test SIGKILLs it).
"""

import sys
import time

from cognitionos_kit.memory import Memory

home, tag, n, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
m = Memory(home)
for i in range(n):
    mid = m.store(tag, f"{tag} observation {i}: the sensor in room {i} read {i * 7 % 31} degrees", scope="global")
    print(mid, flush=True)
    if mode == "share" and i % 5 == 0:
        m.retrieve(tag, f"what did the sensor in room {i} read?", k=3)
if mode == "kill":
    print("done", flush=True)
    time.sleep(120)
else:
    deadline = time.time() + 90
    while len(m) < 2 * n and time.time() < deadline:
        m.retrieve(tag, "sensor reading", k=1)
        time.sleep(0.05)
    other = m.retrieve(tag, "observation from the other kernel", k=2 * n)
    print("saw", len(m), len({h.user_id for h in other}), flush=True)
