#!/usr/bin/env python3
"""DuckDB running a report's statement over keytrail's lake: the peer figure.

usage: duckdb_report.py LAKE SQL_FILE RUNS THREADS

SQL_FILE is the statement in DuckDB's dialect, written by `report_sql` (the same plan as
keytrail's: key_daily for whole days, events for the partial days at the window's edges, and
for the unused and rotation reports events' key lifecycle columns).
`events` and `key_daily` are views over the lake's Hive-partitioned Parquet files. Each run is a
fresh connection (views created, statement run, every row fetched), like a fresh keytrail
session. Prints one line per run: `duckdb run N: S seconds, R rows`."""
import os, sys, time

import duckdb

lake, sql_file, runs, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
statement = open(sql_file, encoding="utf-8").read()
print(f"duckdb {duckdb.__version__}")
for run in range(1, runs + 1):
    start = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET threads={threads}")
    con.execute("SET TimeZone='UTC'")
    for table in ("events", "key_daily"):
        files = os.path.join(lake, table, "*", "*.parquet")
        con.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{files}', hive_partitioning = true)"
        )
    rows = con.execute(statement).fetchall()
    elapsed = time.perf_counter() - start
    con.close()
    print(f"duckdb run {run}: {elapsed:.3f} seconds, {len(rows)} rows")
