//! `keytrail lake ddl`: the DuckDB form run in DuckDB over a lake keytrail wrote, its answers
//! compared with `keytrail sql` (`scripts/check_ddl.py`, which `.ci/run` also runs with Spark);
//! the lake's first day and its empty tables read from a local lake and from a lake in S3.
//! The Athena, Glue, Trino and Spark forms are pinned by snapshots in `keytrail-lake`.

use std::path::Path;
use std::process::Command;

use keytrail_lake::{DdlOptions, Engine};
use keytrail_model::Table;

use crate::s3::{cli, s3_env, sample, sample_server};
use crate::util::*;

const LEAKED: &str = "AKIARTXV5AHDZMKNCBCQ";

fn ddl(lake: &Path, args: &[&str], code: i32) -> (String, String) {
    let out = run_code(
        keytrail()
            .args(["lake", "ddl", "--lake"])
            .arg(lake)
            .args(args),
        code,
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `scripts/check_ddl.py duckdb`: its output, insisting that it succeeded.
fn check_in_duckdb(lake: &Path, extra: &[&str]) -> String {
    let script = testdata().join("../scripts/check_ddl.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg("duckdb")
        .arg(env!("CARGO_BIN_EXE_keytrail"))
        .arg(lake)
        .args(extra)
        .output()
        .expect(
            "python3 runs (install the test requirements: pip install -r requirements-test.txt)",
        );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the DuckDB form disagrees with keytrail:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn duckdb_runs_the_generated_views_and_answers_as_keytrail_does() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    ingest_json(&[&sample()], &lake, &[], 0);

    // The typed empty views (the form for tables without files), every table declared: their
    // types must be the types DuckDB reads from the files.
    let abs = std::fs::canonicalize(&lake).expect("abs");
    let typed = keytrail_lake::ddl::ddl(&DdlOptions {
        engine: Engine::DuckDb,
        location: format!("file://{}", abs.display()),
        database: None,
        table_prefix: String::new(),
        first_day: None,
        empty_tables: Table::ALL.into(),
    })
    .expect("ddl");
    let typed_path = tmp.path().join("typed.sql");
    std::fs::write(&typed_path, typed).expect("write");

    let text = check_in_duckdb(&lake, &["--typed-ddl", typed_path.to_str().expect("utf-8")]);
    for line in [
        "duckdb: ran 3 statements",
        "agree: rows per table: [('events', 1279), ('insights', 1), ('key_daily', 122)]",
        "agree: events per day: 7 rows",
        &format!("agree: events of {LEAKED}: 54 rows"),
        &format!("agree: key_daily of {LEAKED}: 7 rows"),
        "agree: nested fields and booleans",
        "agree: insights: [('ea474a72-c744-4716-95ce-7680ab0bbbd6', 1732936500000, '2024-11-30')]",
        "ok in",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
    // Every column of the schema, and the partition column.
    for table in Table::ALL {
        let line = format!(
            "agree: types of {}: {} columns",
            table.name(),
            table.schema().fields().len() + 1
        );
        assert!(text.contains(&line), "no `{line}` in:\n{text}");
    }
}

#[test]
fn a_table_without_files_is_an_empty_view_with_its_columns() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    // The Stratus captures hold no Insights events.
    ingest_json(&[&testdata().join("stratus")], &lake, &[], 0);
    let (text, _) = ddl(&lake, &["--engine", "duckdb"], 0);
    assert!(
        text.contains("-- insights: no files yet")
            && text.contains("CREATE OR REPLACE VIEW \"insights\" AS\nSELECT\n  CAST(NULL AS VARCHAR) AS \"eventversion\","),
        "{text}"
    );
    assert!(text.contains("read_parquet('file://"), "{text}");
    let out = check_in_duckdb(&lake, &[]);
    assert!(out.contains("agree: insights: []"), "{out}");
    assert!(
        out.contains("read every column of insights: 0 rows"),
        "{out}"
    );
    // Spark and Trino: no partition discovery on a directory that does not exist.
    let (spark, _) = ddl(&lake, &["--engine", "spark"], 0);
    assert!(spark.contains("MSCK REPAIR TABLE `events`;"), "{spark}");
    assert!(!spark.contains("MSCK REPAIR TABLE `insights`;"), "{spark}");
    assert!(spark.contains(
        "-- insights: no files yet; once an ingest writes some, run MSCK REPAIR TABLE `insights`"
    ));
}

#[test]
fn the_first_day_and_the_location_come_from_the_lake() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    ingest_json(&[&sample()], &lake, &[], 0);

    let (athena, _) = ddl(
        &lake,
        &[
            "--engine",
            "athena",
            "--location",
            "s3://bucket/kt/",
            "--database",
            "sec",
        ],
        0,
    );
    assert!(
        athena.contains("'projection.date.range' = '2024-11-24,NOW'"),
        "{athena}"
    );
    assert!(athena.contains("CREATE EXTERNAL TABLE `sec`.`key_daily` ("));
    assert!(athena.contains("LOCATION 's3://bucket/kt/events/'"));
    let (glue, _) = ddl(
        &lake,
        &[
            "--engine",
            "glue",
            "--location",
            "s3://bucket/kt",
            "--first-day",
            "2024-01-01",
        ],
        0,
    );
    assert!(
        glue.contains("\"projection.date.range\": \"2024-01-01,NOW\""),
        "{glue}"
    );
    assert!(glue.contains("aws glue create-table --database-name default --table-input '{"));

    // The default location is the lake's own: a local lake is a file:// URI, which Athena
    // cannot read.
    let (trino, _) = ddl(&lake, &["--engine", "trino", "--table-prefix", "ct_"], 0);
    let abs = std::fs::canonicalize(&lake).expect("abs");
    assert!(
        trino.contains(&format!(
            "external_location = 'file://{}/events/'",
            abs.display()
        )),
        "{trino}"
    );
    assert!(trino.contains("CREATE TABLE \"default\".\"ct_insights\" ("));
    let (_, err) = ddl(&lake, &["--engine", "athena"], 2);
    assert!(err.contains("Amazon S3 only"), "{err}");

    // Usage errors.
    for (args, says) in [
        (
            &[
                "--engine",
                "glue",
                "--location",
                "s3://b/p",
                "--first-day",
                "24/11/2024",
            ][..],
            "--first-day 24/11/2024",
        ),
        (
            &["--engine", "spark", "--shard", "1/2"][..],
            "--shard has no meaning",
        ),
        (
            &["--engine", "spark", "--database", "My-DB"][..],
            "database \"My-DB\"",
        ),
        (&["--engine", "oracle"][..], "invalid value 'oracle'"),
    ] {
        let (_, err) = ddl(&lake, args, 2);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let (_, err) = ddl(&tmp.path().join("nothing"), &["--engine", "spark"], 2);
    assert!(err.contains("not a keytrail lake"), "{err}");

    // A lake with no data yet: the projecting forms need a first day, the others do not.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(tmp.path().join("no-logs")).expect("mkdir");
    ingest_json(&[&tmp.path().join("no-logs")], &empty, &[], 0);
    let (_, err) = ddl(&empty, &["--engine", "athena", "--location", "s3://b/p"], 2);
    assert!(
        err.contains("no data yet") && err.contains("--first-day"),
        "{err}"
    );
    let (spark, _) = ddl(&empty, &["--engine", "spark"], 0);
    assert_eq!(
        spark.matches("MSCK REPAIR").count(),
        3,
        "only in comments: {spark}"
    );
    assert!(!spark.lines().any(|l| l.starts_with("MSCK")), "{spark}");
}

#[test]
fn a_lake_in_s3_is_read_without_being_changed() {
    let server = sample_server();
    let metadata = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    run_code(
        cli(&server, &metadata).args(["s3://trail", "--lake", "s3://lake/kt", "--quiet"]),
        0,
    );
    server.take_log();
    let lake_ddl = |lake: &str, code| {
        run_code(
            s3_env(&metadata).args([
                "lake",
                "ddl",
                "--lake",
                lake,
                "--engine",
                "athena",
                "--endpoint-url",
                &server.endpoint,
            ]),
            code,
        )
    };
    let out = lake_ddl("s3://lake/kt", 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("LOCATION 's3://lake/kt/events/'"), "{text}");
    assert!(
        text.contains("'projection.date.range' = '2024-11-24,NOW'"),
        "{text}"
    );
    assert!(
        text.contains("'storage.location.template' = 's3://lake/kt/key_daily/date=${date}/'"),
        "{text}"
    );
    // Read only: lake.json and the commit records.
    let log = server.take_log();
    assert!(!log.is_empty());
    for l in &log {
        assert!(l.method == "GET", "{} {}", l.method, l.path);
        assert!(
            l.path.contains("/kt/_keytrail/") || l.query.contains("prefix=kt%2F_keytrail%2F"),
            "{} {}?{}",
            l.method,
            l.path,
            l.query
        );
    }
    let out = lake_ddl("s3://lake/none", 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("s3://lake/none") && err.contains("not a keytrail lake"),
        "{err}"
    );
    assert!(
        !server.bucket("lake").join("none").exists(),
        "nothing created"
    );
}
