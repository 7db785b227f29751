#!/usr/bin/env python3
"""DuckDB doing what `keytrail investigate KEY --lake LAKE` does, on the same Parquet files:
follow minted credentials with `accesskeyid IN (...)` queries until nothing new appears, look up
deactivations, then fetch the timeline. Prints the chain size, timeline rows and seconds.

usage: duckdb_investigate.py LAKE KEY [--threads N]
"""
import sys
import time

import duckdb

lake, key = sys.argv[1], sys.argv[2]
threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 2
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
src = f"read_parquet('{lake}/events/*/*.parquet', hive_partitioning = true)"
minting = "('AssumeRole','AssumeRoleWithSAML','AssumeRoleWithWebIdentity','AssumeRoot','GetSessionToken','GetFederationToken','CreateAccessKey','GetRoleCredentials')"

t0 = time.perf_counter()
keys, frontier = {key}, {key}
while frontier:
    lst = ",".join(f"'{k}'" for k in sorted(frontier))
    rows = con.execute(
        f"""SELECT coalesce(json_extract_string(responseelements, '$.credentials.accessKeyId'),
                            json_extract_string(responseelements, '$.accessKey.accessKeyId'))
            FROM {src} WHERE accesskeyid IN ({lst}) AND errorcode IS NULL AND eventname IN {minting}"""
    ).fetchall()
    frontier = {r[0] for r in rows if r[0]} - keys
    keys |= frontier
lst = ",".join(f"'{k}'" for k in sorted(keys))
con.execute(
    f"""SELECT * FROM {src} WHERE eventsource = 'iam.amazonaws.com'
        AND eventname IN ('UpdateAccessKey','DeleteAccessKey') AND errorcode IS NULL
        AND json_extract_string(requestparameters, '$.accessKeyId') IN ({lst})"""
).fetchall()
timeline = con.execute(
    f"""SELECT * FROM {src} WHERE accesskeyid IN ({lst})
        OR (eventsource = 'iam.amazonaws.com' AND eventname IN ('UpdateAccessKey','DeleteAccessKey','CreateAccessKey')
            AND json_extract_string(requestparameters, '$.accessKeyId') IN ({lst}))
        ORDER BY eventtime, eventid"""
).fetchall()
secs = time.perf_counter() - t0
print(f"duckdb investigate: {len(keys)} keys in the chain, {len(timeline)} timeline rows, {secs:.2f}s")
