#!/usr/bin/env python3
"""Count detections on benign activity after each key's (and each principal's) first week.

The noise figures of docs/rules.md ("Noise on benign activity") and docs/benchmarks.md come
from this script:

    keytrail-bench gen DIR --events 1000000 --days 28 --admin
    keytrail ingest --lake LAKE DIR
    keytrail detect --lake LAKE --min-severity info --format jsonl > FINDINGS.jsonl
    python3 benches/scripts/noise_count.py LAKE FINDINGS.jsonl

Definitions (one lake written by one ingest run: every Parquet file under LAKE/events is live):

- per key: the events made with an access key at or after that key's first event + 7 days;
  the findings whose key is such a key and whose first event is at or after that time.
- per principal: the principal is userIdentity.arn (else principalId), a role session's ARN
  cut to its role (`arn:aws:sts::ACCOUNT:assumed-role/ROLE`), as keytrail's detectors do; the
  events and findings at or after the principal's first event + 7 days.
- whole lake: every event, every finding.

Findings are counted at low or above ("low", "medium", "high", "critical"). Needs the duckdb
Python package (reads the lake's Parquet files directly).
"""

import collections
import json
import sys
from datetime import datetime, timedelta, timezone

import duckdb

WEEK_MS = 7 * 86_400_000
LOW_OR_ABOVE = {"low", "medium", "high", "critical"}


def principal_of(arn):
    """A role session's ARN cut to its role; any other ARN as it is (detectors.rs)."""
    if arn is None:
        return None
    i = arn.find(":assumed-role/")
    if i >= 0:
        j = arn.find("/", i + 14)
        if j >= 0:
            return arn[:j]
    return arn


def millis(ts):
    return int(ts.timestamp() * 1000)


def parse_time(s):
    return millis(datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(timezone.utc))


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: noise_count.py LAKE FINDINGS.jsonl")
    lake, findings_path = sys.argv[1], sys.argv[2]
    con = duckdb.connect()
    con.execute(
        "CREATE VIEW ev AS SELECT accesskeyid AS k, "
        "coalesce(useridentity.arn, useridentity.principalid) AS arn, eventtime AS t "
        f"FROM read_parquet('{lake}/events/**/*.parquet', hive_partitioning=false)"
    )
    total = con.execute("SELECT count(*) FROM ev").fetchone()[0]
    key_first = {
        k: millis(t)
        for k, t in con.execute(
            "SELECT k, min(t) FROM ev WHERE k IS NOT NULL GROUP BY k"
        ).fetchall()
    }
    key_events = con.execute(
        "SELECT count(*) FROM ev JOIN (SELECT k, min(t) AS f FROM ev WHERE k IS NOT NULL GROUP BY k) m "
        "USING (k) WHERE ev.t >= m.f + INTERVAL 7 DAY"
    ).fetchone()[0]
    # Principal: the role for role sessions (regexp as principal_of above).
    con.execute(
        "CREATE VIEW pev AS SELECT coalesce(regexp_extract(arn, '^(.*?:assumed-role/[^/]+)/', 1), '') AS r, "
        "arn, t FROM ev WHERE arn IS NOT NULL"
    )
    con.execute(
        "CREATE VIEW pev2 AS SELECT CASE WHEN r = '' THEN arn ELSE r END AS p, t FROM pev"
    )
    principal_first = {
        p: millis(t)
        for p, t in con.execute("SELECT p, min(t) FROM pev2 GROUP BY p").fetchall()
    }
    principal_events = con.execute(
        "SELECT count(*) FROM pev2 JOIN (SELECT p, min(t) AS f FROM pev2 GROUP BY p) m "
        "USING (p) WHERE pev2.t >= m.f + INTERVAL 7 DAY"
    ).fetchone()[0]

    counts = {w: collections.Counter() for w in ("key", "principal", "all")}
    n_all = 0
    with open(findings_path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            x = json.loads(line)
            n_all += 1
            if x["severity"] not in LOW_OR_ABOVE:
                continue
            what = (x["rule"], x["severity"])
            counts["all"][what] += 1
            t = parse_time(x["time"])
            k = x.get("key")
            if k is not None and k in key_first and t >= key_first[k] + WEEK_MS:
                counts["key"][what] += 1
            p = principal_of(x.get("principal"))
            if p is not None and p in principal_first and t >= principal_first[p] + WEEK_MS:
                counts["principal"][what] += 1

    print(f"findings (any severity): {n_all}")
    print("| counted | benign events | findings >= low | per 100k events |")
    print("|---|---:|---:|---:|")
    for name, which, events in (
        ("after each key's first week", "key", key_events),
        ("after each principal's first week", "principal", principal_events),
        ("the whole lake", "all", total),
    ):
        n = sum(counts[which].values())
        print(f"| {name} | {events:,} | {n:,} | {n * 100_000 / events:.1f} |")
    for name in ("key", "principal"):
        print(f"\nafter each {name}'s first week, by rule and severity:")
        for (rule, sev), n in sorted(counts[name].items(), key=lambda kv: (-kv[1], kv[0])):
            print(f"  {n:6} {rule} {sev}")


if __name__ == "__main__":
    main()
