#!/usr/bin/env python3
"""DuckDB converting CloudTrail delivery files to Parquet: the peer figure for keytrail ingest.

usage: duckdb_convert.py DATA_DIR OUT_DIR [THREADS]

Runs DuckDB's fastest correct form for this job: `read_json` with `records=true`, an explicit
schema (CloudTrail's top-level fields; nested objects as JSON text, as keytrail keeps them), then
`COPY (SELECT unnest(Records) ...) TO ... (FORMAT parquet)`. Prints events, seconds, events/s and
peak RSS of this process (DuckDB runs in-process)."""
import os, resource, sys, time

import duckdb

data, out = sys.argv[1], sys.argv[2]
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
os.makedirs(out, exist_ok=True)
target = os.path.join(out, "events.parquet")
if os.path.exists(target):
    os.remove(target)

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
t = time.time()
con.execute(f"""
COPY (
  SELECT unnest(Records, recursive := true)
  FROM read_json('{glob}', format = 'auto', records = true,
                 columns = {{Records: '{schema}'}}, maximum_object_size = 1073741824)
) TO '{target}' (FORMAT parquet, COMPRESSION zstd)
""")
secs = time.time() - t
n = con.sql(f"SELECT count(*) FROM read_parquet('{target}')").fetchall()[0][0]
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(f"duckdb {duckdb.__version__} COPY to parquet: {n} events in {secs:.2f}s = {n / secs:.0f} events/s, "
      f"threads {threads}, peak RSS {rss / 2**20:.0f} MiB, parquet {os.path.getsize(target) / 1e6:.1f} MB")
