#!/usr/bin/env python3
"""Runs the statements `keytrail lake ddl` prints in another engine, over a lake keytrail wrote,
and checks that engine's answers against keytrail's own (`keytrail sql`): rows per table and
per day, one key's events (IDs, times, names, partitions), nested fields (structs, lists of
structs, lists of strings), booleans, timestamps, and that the types the engine gives every
column are the types in the files.

usage: check_ddl.py duckdb|spark KEYTRAIL LAKE [--key ID] [--typed-ddl FILE]

  KEYTRAIL     the keytrail binary (target/debug/keytrail)
  LAKE         a lake directory keytrail wrote (e.g. from testdata/sample)
  --typed-ddl  DuckDB only: a DuckDB form that declares every table as a typed empty view
               (what `keytrail lake ddl` prints for a table with no files); its column types
               must equal the types DuckDB reads from the files.

Prints what it compared; exit status 0 when everything agrees, 1 when something differs.
The Spark check needs pyspark (requirements-spark.txt) and Java 17 or later."""
import argparse, json, subprocess, sys, time

# (name, keytrail SQL, DuckDB SQL, Spark SQL). Each returns rows to compare as they are.
def queries(key):
    k = f"'{key}'"
    return [
        ("rows per table",
         "SELECT 'events', count(*) FROM events UNION ALL SELECT 'insights', count(*) FROM insights "
         "UNION ALL SELECT 'key_daily', count(*) FROM key_daily ORDER BY 1",
         None, None),
        ("events per day",
         'SELECT CAST("date" AS VARCHAR), count(*) FROM events GROUP BY 1 ORDER BY 1',
         'SELECT CAST("date" AS VARCHAR), count(*) FROM events GROUP BY 1 ORDER BY 1',
         "SELECT CAST(`date` AS STRING), count(*) FROM events GROUP BY 1 ORDER BY 1"),
        (f"events of {key}",
         f'SELECT eventid, CAST(eventtime AS BIGINT), eventname, useridentity.arn, CAST("date" AS VARCHAR) '
         f"FROM events WHERE accesskeyid = {k} ORDER BY 2, 1",
         f'SELECT eventid, epoch_ms(eventtime), eventname, useridentity.arn, CAST("date" AS VARCHAR) '
         f"FROM events WHERE accesskeyid = {k} ORDER BY 2, 1",
         f"SELECT eventid, unix_millis(eventtime), eventname, useridentity.arn, CAST(`date` AS STRING) "
         f"FROM events WHERE accesskeyid = {k} ORDER BY 2, 1"),
        ("nested fields and booleans",
         "SELECT count(useridentity.sessioncontext.sessionissuer.arn), count(resources), "
         "sum(cardinality(resources)), count(DISTINCT resources[1]['arn']), "
         "sum(CASE WHEN readonly THEN 1 ELSE 0 END), sum(CASE WHEN managementevent THEN 1 ELSE 0 END), "
         "min(CAST(eventtime AS BIGINT)), max(CAST(eventtime AS BIGINT)) FROM events",
         "SELECT count(useridentity.sessioncontext.sessionissuer.arn), count(resources), "
         "sum(len(resources)), count(DISTINCT resources[1].arn), "
         "sum(CASE WHEN readonly THEN 1 ELSE 0 END), sum(CASE WHEN managementevent THEN 1 ELSE 0 END), "
         "min(epoch_ms(eventtime)), max(epoch_ms(eventtime)) FROM events",
         "SELECT count(useridentity.sessioncontext.sessionissuer.arn), count(resources), "
         "sum(CASE WHEN resources IS NOT NULL THEN size(resources) END), count(DISTINCT try_element_at(resources, 1).arn), "
         "sum(CASE WHEN readonly THEN 1 ELSE 0 END), sum(CASE WHEN managementevent THEN 1 ELSE 0 END), "
         "min(unix_millis(eventtime)), max(unix_millis(eventtime)) FROM events"),
        (f"key_daily of {key}",
         f'SELECT CAST("date" AS VARCHAR), events, errors, cardinality(sourceipaddresses), '
         f"CAST(lasteventtime AS BIGINT), lasteventname FROM key_daily WHERE accesskeyid = {k} ORDER BY 1",
         f'SELECT CAST("date" AS VARCHAR), events, errors, len(sourceipaddresses), '
         f"epoch_ms(lasteventtime), lasteventname FROM key_daily WHERE accesskeyid = {k} ORDER BY 1",
         f"SELECT CAST(`date` AS STRING), events, errors, size(sourceipaddresses), "
         f"unix_millis(lasteventtime), lasteventname FROM key_daily WHERE accesskeyid = {k} ORDER BY 1"),
        ("insights",
         'SELECT eventid, CAST(eventtime AS BIGINT), CAST("date" AS VARCHAR) FROM insights ORDER BY 1',
         'SELECT eventid, epoch_ms(eventtime), CAST("date" AS VARCHAR) FROM insights ORDER BY 1',
         "SELECT eventid, unix_millis(eventtime), CAST(`date` AS STRING) FROM insights ORDER BY 1"),
    ]

def keytrail_rows(binary, lake, sql):
    out = subprocess.run([binary, "sql", sql, "--lake", lake, "--format", "json"],
                         check=True, capture_output=True, text=True).stdout
    return [tuple(r.values()) for r in json.loads(out)]

def statements(text):
    """Split on lines that end with `;` (the form `keytrail lake ddl` promises)."""
    out, cur = [], []
    for line in text.splitlines():
        cur.append(line)
        if line.endswith(";"):
            out.append("\n".join(cur)[:-1])
            cur = []
    if "".join(cur).strip():
        raise SystemExit(f"text after the last statement: {cur}")
    return out

def norm(rows):
    return [tuple(int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                  for v in r) for r in rows]

class DuckDb:
    def __init__(self):
        import duckdb
        self.duckdb = duckdb
        self.con = duckdb.connect()

    def run(self, stmt):
        self.con.execute(stmt)

    def rows(self, sql):
        return [tuple(r) for r in self.con.sql(sql).fetchall()]

    def types(self, con, table):
        return [(r[0], r[1]) for r in con.sql(f'DESCRIBE "{table}"').fetchall()]

class Spark:
    def __init__(self):
        from pyspark.sql import SparkSession
        self.spark = (SparkSession.builder.master("local[2]").appName("keytrail-ddl-check")
                      .config("spark.sql.session.timeZone", "UTC")
                      .config("spark.ui.enabled", "false")
                      .config("spark.ui.showConsoleProgress", "false")
                      .config("spark.sql.shuffle.partitions", "2")
                      .getOrCreate())
        self.spark.sparkContext.setLogLevel("ERROR")

    def run(self, stmt):
        self.spark.sql(stmt).collect()

    def rows(self, sql):
        return [tuple(r) for r in self.spark.sql(sql).collect()]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("engine", choices=["duckdb", "spark"])
    ap.add_argument("keytrail")
    ap.add_argument("lake")
    ap.add_argument("--key", default="AKIARTXV5AHDZMKNCBCQ")
    ap.add_argument("--typed-ddl")
    a = ap.parse_args()
    started = time.time()

    args = [a.keytrail, "lake", "ddl", "--lake", a.lake, "--engine", a.engine]
    if a.engine == "spark":
        args += ["--database", "keytrail_check", "--table-prefix", "kt_"]
    ddl = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    stmts = statements(ddl)
    engine = DuckDb() if a.engine == "duckdb" else Spark()
    if a.engine == "spark":
        # The prefixed names in a database of their own, as a user would ask for them; the
        # queries below use the plain names through views.
        for s in stmts:
            engine.run(s)
        for t in ["events", "insights", "key_daily"]:
            engine.run(f"CREATE TEMPORARY VIEW {t} AS SELECT * FROM keytrail_check.kt_{t}")
    else:
        for s in stmts:
            engine.run(s)
    print(f"{a.engine}: ran {len(stmts)} statements")

    ok = True
    for name, kt_sql, duck_sql, spark_sql in queries(a.key):
        want = norm(keytrail_rows(a.keytrail, a.lake, kt_sql))
        sql = {"duckdb": duck_sql, "spark": spark_sql}[a.engine] or kt_sql
        got = norm(engine.rows(sql))
        if got == want:
            shown = want if len(want) <= 3 else f"{len(want)} rows"
            print(f"agree: {name}: {shown}")
        else:
            ok = False
            print(f"DIFFER: {name}:\n  keytrail {want}\n  {a.engine} {got}")

    # Every column read in full: a declared type the files do not hold fails here.
    for t in ["events", "insights", "key_daily"]:
        n = len(engine.rows(f"SELECT * FROM {t}"))
        print(f"read every column of {t}: {n} rows")

    if a.engine == "spark":
        # The declared schema against the one Spark infers from the files themselves.
        for t in ["events", "insights", "key_daily"]:
            loc = engine.spark.sql(f"DESCRIBE FORMATTED keytrail_check.kt_{t}").collect()
            location = [r.data_type for r in loc if r.col_name == "Location"][0]
            declared = engine.spark.table(f"keytrail_check.kt_{t}").schema
            inferred = engine.spark.read.parquet(location).schema
            d = {f.name: f.dataType.simpleString() for f in declared.fields}
            i = {f.name: f.dataType.simpleString() for f in inferred.fields}
            if d == i:
                print(f"agree: types of {t}: {len(d)} columns")
            else:
                ok = False
                for c in sorted(set(d) | set(i)):
                    if d.get(c) != i.get(c):
                        print(f"DIFFER: {t}.{c}: declared {d.get(c)}, files {i.get(c)}")
    if a.typed_ddl:
        import duckdb
        typed = duckdb.connect()
        with open(a.typed_ddl) as f:
            for s in statements(f.read()):
                typed.execute(s)
        for t in ["events", "insights", "key_daily"]:
            real, declared = engine.types(engine.con, t), engine.types(typed, t)
            if real == declared:
                print(f"agree: types of {t}: {len(real)} columns")
            else:
                ok = False
                for r, d in zip(real, declared):
                    if r != d:
                        print(f"DIFFER: {t}: files {r}, declared {d}")
                if len(real) != len(declared):
                    print(f"DIFFER: {t}: {len(real)} columns in the files, {len(declared)} declared")
    print(f"{'ok' if ok else 'FAILED'} in {time.time() - started:.1f}s")
    sys.exit(0 if ok else 1)

main()
