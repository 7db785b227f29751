#!/usr/bin/env python3
"""Reads a keytrail lake with DuckDB, independently of keytrail, and checks it against the raw
CloudTrail JSON it came from: the same number of events per access key, Hive partitions that
match each event's UTC day, and the schema version stamped in every file.

usage: independent_reader.py LAKE INPUT_DIR...
Exit status 0 when everything agrees; prints what differs otherwise."""
import collections, glob, gzip, json, os, sys

import duckdb

def events_in(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig") as f:
        text = f.read()
    stripped = text.lstrip()
    if stripped.startswith("["):
        return json.loads(text)
    first = stripped.split("\n", 1)[0]
    try:
        json.loads(first)
        docs = [json.loads(l) for l in stripped.splitlines() if l.strip()]
    except ValueError:
        docs = [json.loads(text)]
    out = []
    for d in docs:
        out.extend(d["Records"] if "Records" in d else [d])
    return out

def main():
    lake, inputs = sys.argv[1], sys.argv[2:]
    want = collections.Counter()
    for root in inputs:
        for path in glob.glob(os.path.join(root, "**", "*"), recursive=True):
            name = os.path.basename(path)
            if not (name.endswith(".json") or name.endswith(".json.gz") or name.endswith(".jsonl")):
                continue
            for e in events_in(path):
                key = (e.get("userIdentity") or {}).get("accessKeyId") or None
                want[key] += 1
    con = duckdb.connect()
    files = os.path.join(lake, "events", "*", "*.parquet")
    got = collections.Counter(dict(con.sql(
        f"SELECT accesskeyid, count(*) FROM read_parquet('{files}', hive_partitioning=true) GROUP BY ALL"
    ).fetchall()))
    bad_days = con.sql(
        f"SELECT count(*) FROM read_parquet('{files}', hive_partitioning=true) "
        "WHERE CAST(date AS DATE) <> CAST(eventtime AT TIME ZONE 'UTC' AS DATE)"
    ).fetchall()[0][0]
    versions = con.sql(
        f"SELECT DISTINCT decode(value) FROM parquet_kv_metadata('{files}') "
        "WHERE decode(key) = 'keytrail.schema_version'"
    ).fetchall()
    total = sum(got.values())
    print(f"events {total}")
    ok = True
    if got != want:
        ok = False
        for k in sorted(set(got) | set(want), key=lambda k: k or ""):
            if got[k] != want[k]:
                print(f"key {k}: lake {got[k]}, input {want[k]}")
    else:
        print(f"keys {len(want)} agree")
    if bad_days:
        ok = False
        print(f"{bad_days} events in the wrong date partition")
    if versions != [("2",)]:
        ok = False
        print(f"schema versions stamped: {versions}")
    sys.exit(0 if ok else 1)

main()
