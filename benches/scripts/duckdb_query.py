#!/usr/bin/env python3
"""DuckDB answering one question over keytrail's lake: the peer figure for `benches/query.sh`.

usage: duckdb_query.py LAKE THREADS fetch "SQL"          run SQL, fetch every row
       duckdb_query.py LAKE THREADS copy  "SQL" OUT FMT  COPY (SQL) TO OUT (FORMAT FMT): json or csv
       duckdb_query.py LAKE THREADS investigate KEY OUT  the investigation's query sequence

`events`, `insights` and `key_daily` are views over the lake's Hive-partitioned Parquet files,
the same files keytrail reads. The investigation follows minted credentials with the lake's
`mintedkeyid` fact (the same column keytrail reads), looks up deactivations with `targetkeyid`
and `keystatus`, then writes the timeline (every column, in time order) as JSON lines, as
`keytrail investigate --format json` writes it. Prints rows and seconds on stdout; peak memory
is measured around the process by the caller."""
import os
import glob
import sys
import time

import duckdb


def connect(lake, threads):
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute("SET TimeZone = 'UTC'")
    for table in ("events", "insights", "key_daily"):
        files = os.path.join(lake, table, "*", "*.parquet")
        if not glob.glob(files):
            # A lake without Insights events has no insights files to read.
            continue
        con.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{files}', hive_partitioning = true)"
        )
    return con


def investigate(con, key, out):
    """The investigation's query sequence: follow minted keys from `key` (a semi-join against a
    table of the keys found so far, DuckDB's fast form for thousands of keys), then the chain's
    key-lifecycle events and its timeline, written as JSON."""
    con.execute("CREATE TEMP TABLE chain (k VARCHAR)")
    con.execute("CREATE TEMP TABLE frontier (k VARCHAR)")
    con.execute("INSERT INTO chain VALUES (?)", [key])
    con.execute("INSERT INTO frontier VALUES (?)", [key])
    depth = 0
    while depth < 32:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE frontier AS SELECT DISTINCT mintedkeyid AS k FROM events "
            "WHERE accesskeyid IN (SELECT k FROM frontier) AND mintedkeyid IS NOT NULL "
            "AND mintedkeyid NOT IN (SELECT k FROM chain)"
        )
        (n,) = con.execute("SELECT count(*) FROM frontier").fetchone()
        if n == 0:
            break
        con.execute("INSERT INTO chain SELECT k FROM frontier")
        depth += 1
    con.execute(
        "SELECT targetkeyid, keystatus, eventtime, eventid FROM events "
        "WHERE targetkeyid IN (SELECT k FROM chain) AND keystatus IS NOT NULL "
        "ORDER BY eventtime, eventid"
    ).fetchall()
    con.execute(
        "COPY (SELECT * FROM events WHERE accesskeyid IN (SELECT k FROM chain) "
        "OR targetkeyid IN (SELECT k FROM chain) OR mintedkeyid IN (SELECT k FROM chain) "
        f"ORDER BY eventtime, eventid) TO '{out}' (FORMAT json)"
    )
    (n,) = con.execute("SELECT count(*) FROM chain").fetchone()
    return n


def main():
    lake, threads, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    start = time.perf_counter()
    con = connect(lake, threads)
    if mode == "fetch":
        rows = con.execute(sys.argv[4]).fetchall()
        what = f"{len(rows)} rows"
        if len(rows) == 1:
            what += f": {rows[0]}"
    elif mode == "copy":
        sql, out, fmt = sys.argv[4], sys.argv[5], sys.argv[6]
        con.execute(f"COPY ({sql}) TO '{out}' (FORMAT {fmt})")
        what = f"written to {out}"
    elif mode == "investigate":
        n = investigate(con, sys.argv[4], sys.argv[5])
        what = f"{n} keys in the chain"
    else:
        sys.exit(f"unknown mode {mode}")
    print(f"duckdb {duckdb.__version__} {mode}: {what} in {time.perf_counter() - start:.3f}s")


main()
