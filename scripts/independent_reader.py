#!/usr/bin/env python3
"""Reads a keytrail lake with DuckDB, independently of keytrail, and checks it against the raw
CloudTrail JSON it came from: the same number of events per access key, Hive partitions that
match each event's UTC day, the schema version stamped in every file, the key facts (denied,
the minted key, the key acted on and its new status) derived here from the raw JSON the way
docs/schema.md defines them, every `key_daily` row (events, errors, first and last time, the
distinct addresses, regions, services and actions of each key on each day) recomputed from the
raw events, and the Insights events (by ID). Digest files are passed over; Insights files and
events go to the insights table.

usage: independent_reader.py LAKE INPUT_DIR...
Exit status 0 when everything agrees; prints what differs otherwise."""
import collections, datetime, glob, gzip, json, os, sys

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

DENIED = ("accessdenied", "unauthorized", "forbidden", "notauthorized",
          "authorizationerror", "authorizationfailure")
STS_MINTING = {"AssumeRole", "AssumeRoleWithSAML", "AssumeRoleWithWebIdentity", "AssumeRoot",
               "GetSessionToken", "GetFederationToken"}

def text(v):
    return v.strip() or None if isinstance(v, str) else None

def facts(e):
    """(denied, mintedkeyid, targetkeyid, keystatus) of a raw event, per docs/schema.md."""
    code = e.get("errorCode")
    denied = isinstance(code, str) and any(m in code.lower() for m in DENIED)
    ok = not code
    service = (e.get("eventSource") or "").removesuffix(".amazonaws.com")
    name = e.get("eventName")
    req = e.get("requestParameters") if isinstance(e.get("requestParameters"), dict) else {}
    resp = e.get("responseElements") if isinstance(e.get("responseElements"), dict) else {}
    minted = target = status = None
    if service == "sts" and name in STS_MINTING and ok:
        minted = text((resp.get("credentials") or {}).get("accessKeyId"))
    if service == "iam" and name == "CreateAccessKey":
        target = text((resp.get("accessKey") or {}).get("accessKeyId"))
        if ok:
            minted = target
            status = text((resp.get("accessKey") or {}).get("status")) or "Active"
    if (service == "iam" and name in ("UpdateAccessKey", "DeleteAccessKey", "GetAccessKeyLastUsed")) \
            or (service == "sts" and name == "GetAccessKeyInfo"):
        target = text(req.get("accessKeyId"))
    if ok and service == "iam" and name == "DeleteAccessKey":
        status = "Deleted"
    if ok and service == "iam" and name == "UpdateAccessKey":
        s = text(req.get("status"))
        status = {"active": "Active", "inactive": "Inactive"}.get((s or "").lower())
    return (denied, minted, target, status)

def millis(text):
    t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return int(t.timestamp() * 1000)

def main():
    lake, inputs = sys.argv[1], sys.argv[2:]
    want = collections.Counter()
    want_facts = {}
    want_insights = set()
    # (key, day) -> [events, errors, first, last, ips, regions, sources, names]
    daily = {}
    for root in inputs:
        for path in glob.glob(os.path.join(root, "**", "*"), recursive=True):
            name = os.path.basename(path)
            if not (name.endswith(".json") or name.endswith(".json.gz") or name.endswith(".jsonl")):
                continue
            if "CloudTrail-Digest" in path:
                continue
            for e in events_in(path):
                if "CloudTrail-Insight" in path or e.get("eventType") == "AwsCloudTrailInsight" \
                        or "insightDetails" in e:
                    want_insights.add(e.get("eventID"))
                    continue
                key = (e.get("userIdentity") or {}).get("accessKeyId") or None
                want[key] += 1
                if e.get("eventID"):
                    want_facts[e["eventID"]] = facts(e)
                if key is None:
                    continue
                t = millis(e.get("eventTime") or e["@timestamp"])
                day = datetime.datetime.fromtimestamp(t / 1000, datetime.timezone.utc).date().isoformat()
                d = daily.setdefault((key, day), [0, 0, t, t, set(), set(), set(), set()])
                d[0] += 1
                d[1] += 1 if e.get("errorCode") else 0
                d[2], d[3] = min(d[2], t), max(d[3], t)
                for i, field in ((4, "sourceIPAddress"), (5, "awsRegion"), (6, "eventSource"), (7, "eventName")):
                    if e.get(field) is not None:
                        d[i].add(str(e[field]))
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
    got_facts = {
        r[0]: tuple(r[1:])
        for r in con.sql(
            f"SELECT eventid, denied, mintedkeyid, targetkeyid, keystatus "
            f"FROM read_parquet('{files}', hive_partitioning=true) WHERE eventid IS NOT NULL"
        ).fetchall()
    }
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
    wrong = [(i, want_facts[i], got_facts.get(i)) for i in sorted(want_facts)
             if got_facts.get(i) != want_facts[i]]
    if wrong:
        ok = False
        for w in wrong[:10]:
            print(f"facts of {w[0]}: raw {w[1]}, lake {w[2]}")
    else:
        n = {k: sum(1 for f in want_facts.values() if f[j]) for j, k in enumerate(("denied", "minted", "target", "status"))}
        print(f"facts agree: {len(want_facts)} events, {n['denied']} denied, {n['minted']} minted, "
              f"{n['target']} with a target key, {n['status']} with a key status")
    if versions != [("2",)]:
        ok = False
        print(f"schema versions stamped: {versions}")
    kd_files = os.path.join(lake, "key_daily", "*", "*.parquet")
    got_daily = {}
    if glob.glob(kd_files):
        for row in con.sql(
            f"SELECT accesskeyid, CAST(date AS VARCHAR), events, errors, epoch_ms(firsteventtime), "
            f"epoch_ms(lasteventtime), sourceipaddresses, awsregions, eventsources, eventnames "
            f"FROM read_parquet('{kd_files}', hive_partitioning=true)"
        ).fetchall():
            got_daily[(row[0], row[1])] = [row[2], row[3], row[4], row[5]] + [set(x or []) for x in row[6:]]
    if got_daily != daily:
        ok = False
        for k in sorted(set(got_daily) | set(daily)):
            if got_daily.get(k) != daily.get(k):
                print(f"key_daily {k}: lake {got_daily.get(k)}, input {daily.get(k)}")
    else:
        print(f"key_daily {len(daily)} rows agree")
    in_files = os.path.join(lake, "insights", "*", "*.parquet")
    got_insights = set()
    if glob.glob(in_files):
        got_insights = {r[0] for r in con.sql(f"SELECT eventid FROM read_parquet('{in_files}')").fetchall()}
    if got_insights != want_insights:
        ok = False
        print(f"insights: lake {sorted(got_insights)}, input {sorted(want_insights)}")
    else:
        print(f"insights {len(want_insights)} agree")
    sys.exit(0 if ok else 1)

main()
