#!/usr/bin/env python3
"""DuckDB converting CloudTrail delivery files to Parquet: the peer figure for keytrail ingest.

usage: duckdb_convert.py DATA_DIR OUT_DIR [THREADS] [plain|partitioned|sorted]

Runs DuckDB's fastest correct form for this job: `read_json` with `records=true`, an explicit
schema (CloudTrail's top-level fields; nested objects as JSON text, as keytrail keeps them), then
`COPY (SELECT unnest(Records) ...) TO ... (FORMAT parquet, COMPRESSION zstd)`:
- plain: one unsorted file (the form the issue names);
- partitioned: Hive partitions by UTC date, as keytrail's lake;
- sorted: partitioned and ordered by access key then time, as keytrail's files are.
Prints events, seconds, events/s and peak RSS of this process (DuckDB runs in-process)."""
import glob as globmod, os, resource, shutil, sys, time

import duckdb

data, out = sys.argv[1], sys.argv[2]
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
mode = sys.argv[4] if len(sys.argv) > 4 else "plain"
shutil.rmtree(out, ignore_errors=True)
os.makedirs(out, exist_ok=True)
target = os.path.join(out, "events.parquet") if mode == "plain" else os.path.join(out, "events")

fields = [
    "eventVersion VARCHAR", "userIdentity JSON", "eventTime VARCHAR", "eventSource VARCHAR",
    "eventName VARCHAR", "awsRegion VARCHAR", "sourceIPAddress VARCHAR", "userAgent VARCHAR",
    "errorCode VARCHAR", "errorMessage VARCHAR", "requestParameters JSON", "responseElements JSON",
    "additionalEventData JSON", "requestID VARCHAR", "eventID VARCHAR", "readOnly BOOLEAN",
    "resources JSON", "eventType VARCHAR", "apiVersion VARCHAR", "managementEvent BOOLEAN",
    "recipientAccountId VARCHAR", "serviceEventDetails JSON", "sharedEventID VARCHAR",
    "vpcEndpointId VARCHAR", "eventCategory VARCHAR", "tlsDetails JSON",
]
schema = "STRUCT(" + ", ".join(fields) + ")[]"
con = duckdb.connect()
con.execute(f"SET threads={threads}")
glob = os.path.join(data, "**", "*.json.gz")
source = f"""
  SELECT unnest(Records, recursive := true)
  FROM read_json('{glob}', format = 'auto', records = true,
                 columns = {{Records: '{schema}'}}, maximum_object_size = 1073741824)"""
if mode == "plain":
    query = f"COPY ({source}) TO '{target}' (FORMAT parquet, COMPRESSION zstd)"
else:
    order = "ORDER BY userIdentity->>'accessKeyId', eventTime" if mode == "sorted" else ""
    query = (f"COPY (SELECT *, CAST(CAST(eventTime AS TIMESTAMP) AS DATE) AS date FROM ({source}) {order}) "
             f"TO '{target}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date))")
t = time.time()
con.execute(query)
secs = time.time() - t
files = os.path.join(target, "*", "*.parquet") if mode != "plain" else target
n = con.sql(f"SELECT count(*) FROM read_parquet('{files}')").fetchall()[0][0]
size = sum(os.path.getsize(f) for f in globmod.glob(files))
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(f"duckdb {duckdb.__version__} COPY to parquet ({mode}): {n} events in {secs:.2f}s = {n / secs:.0f} events/s, "
      f"threads {threads}, peak RSS {rss / 2**20:.0f} MiB, parquet {size / 1e6:.1f} MB")
