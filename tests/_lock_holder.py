"""Subprocess helper: hold a DuckDB file open (and so its lock) for SECONDS (python _lock_holder.py PATH SECONDS)."""

import sys
import time

import duckdb

con = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
