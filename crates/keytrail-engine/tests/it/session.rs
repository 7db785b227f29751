//! The lake's tables as DataFusion sees them.

use std::path::PathBuf;

use keytrail_engine::rows::csv;
use keytrail_engine::{SessionOptions, sql};
use keytrail_ingest::{IngestOptions, NoProgress, ingest};

fn sample_lake() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/sample");
    let summary =
        ingest(&IngestOptions::new(vec![sample], lake.clone()), &NoProgress).expect("ingest");
    assert_eq!(summary.events.written, 1279);
    (tmp, lake)
}

#[test]
fn tables_are_registered_with_partitions_and_answer_sql() {
    let (_tmp, lake) = sample_lake();
    let opts = SessionOptions {
        threads: 2,
        ..SessionOptions::default()
    };
    let (schema, batches) = sql(
        &lake,
        "SELECT count(*) AS events, count(DISTINCT accesskeyid) AS keys, min(date) AS first_day, max(date) AS last_day FROM events",
        &opts,
    )
    .expect("sql");
    let text = csv(&schema, &batches).expect("csv");
    assert_eq!(
        text,
        "events,keys,first_day,last_day\n1279,22,2024-11-24,2024-11-30\n"
    );

    // key_daily agrees with events.
    let (schema, batches) = sql(
        &lake,
        "SELECT k.accesskeyid, k.events, e.n FROM key_daily k JOIN (SELECT accesskeyid, date, count(*) AS n FROM events WHERE accesskeyid IS NOT NULL GROUP BY 1, 2) e ON k.accesskeyid = e.accesskeyid AND k.date = e.date WHERE k.events <> e.n",
        &opts,
    )
    .expect("sql");
    assert_eq!(
        csv(&schema, &batches).expect("csv"),
        "accesskeyid,events,n\n"
    );

    // The insights table holds the one Insights event; nested columns and JSON functions work.
    let (schema, batches) = sql(
        &lake,
        "SELECT eventtype, json_get_str(insightdetails, 'insightType') AS kind FROM insights",
        &opts,
    )
    .expect("sql");
    assert_eq!(
        csv(&schema, &batches).expect("csv"),
        "eventtype,kind\nAwsCloudTrailInsight,ApiErrorRateInsight\n"
    );
    let (schema, batches) = sql(
        &lake,
        "SELECT useridentity.username AS who, count(*) AS n FROM events WHERE accesskeyid = 'AKIARTXV5AHDZMKNCBCQ' GROUP BY 1",
        &opts,
    )
    .expect("sql");
    assert_eq!(
        csv(&schema, &batches).expect("csv"),
        "who,n\nci-deploy,54\n"
    );
}

#[test]
fn a_lake_without_insights_still_has_the_table() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/stratus/aws.defense-evasion.cloudtrail-stop.json");
    ingest(&IngestOptions::new(vec![file], lake.clone()), &NoProgress).expect("ingest");
    let (schema, batches) = sql(
        &lake,
        "SELECT count(*) AS n FROM insights",
        &SessionOptions {
            threads: 1,
            ..SessionOptions::default()
        },
    )
    .expect("sql");
    assert_eq!(csv(&schema, &batches).expect("csv"), "n\n0\n");
}
