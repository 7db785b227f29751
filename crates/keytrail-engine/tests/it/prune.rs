//! What the lake's own knowledge prunes: an absent key opens no data file, a key's rows come
//! from the key index's row ranges and equal a full scan's, named keys, time windows, counts
//! from the manifest, the lake's time range over days from the commit records, a scan of key
//! changes opens only the files holding one, a query planned before a compaction still reads
//! its files, and a sort of a key's pruned rows is given them in compact batches.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keytrail_engine::datafusion::physical_plan::{ExecutionPlan, collect, displayable};
use keytrail_engine::rows::cells;
use keytrail_engine::{LakeSession, SessionOptions, block_on};
use keytrail_ingest::{IngestOptions, NoProgress, ingest};

fn opts() -> SessionOptions {
    SessionOptions {
        threads: 2,
        ..SessionOptions::default()
    }
}

/// The sample, ingested in two runs (two files and two key indexes per day where both have
/// events), so lookups cross index files.
fn sample_lake() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/sample");
    // us-east-1 first, then everything (the manifest skips what the first run read).
    for input in [
        sample.join("AWSLogs/111111111111/CloudTrail/us-east-1"),
        sample,
    ] {
        let s =
            ingest(&IngestOptions::new(vec![input], lake.clone()), &NoProgress).expect("ingest");
        assert_eq!(s.objects.failed, 0);
    }
    (tmp, lake)
}

async fn plan(s: &LakeSession, sql: &str) -> Arc<dyn ExecutionPlan> {
    s.sql(sql)
        .await
        .expect("sql")
        .create_physical_plan()
        .await
        .expect("plan")
}

fn text(plan: &Arc<dyn ExecutionPlan>) -> String {
    displayable(plan.as_ref()).indent(true).to_string()
}

async fn one(s: &LakeSession, sql: &str) -> Vec<Vec<String>> {
    let df = s.sql(sql).await.expect("sql");
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.expect("collect");
    cells(&schema, &batches).expect("cells").1
}

fn run<T>(lake: &Path, f: impl AsyncFnOnce(&LakeSession) -> T) -> T {
    block_on::<_, keytrail_engine::EngineError>(2, async {
        let s = LakeSession::open(lake, &opts()).await?;
        Ok(f(&s).await)
    })
    .expect("session")
}

#[test]
fn an_absent_key_opens_no_data_file() {
    let (_tmp, lake) = sample_lake();
    run(&lake, async |s| {
        let p = plan(s, "SELECT count(*), max(eventtime) FROM events WHERE accesskeyid = 'AKIAZZZZZZZZZZZZZZZZ'").await;
        let t = text(&p);
        assert!(!t.contains("DataSourceExec"), "{t}");
        assert_eq!(
            one(
                s,
                "SELECT count(*) FROM events WHERE accesskeyid = 'AKIAZZZZZZZZZZZZZZZZ'"
            )
            .await,
            [["0"]]
        );
    });
}

#[test]
fn a_keys_rows_from_the_index_equal_a_full_scan() {
    let (_tmp, lake) = sample_lake();
    run(&lake, async |s| {
        let keys = one(s, "SELECT DISTINCT accesskeyid FROM key_daily ORDER BY 1").await;
        assert_eq!(keys.len(), 22);
        for k in keys.iter().map(|r| r[0].clone()) {
            let pruned = one(
                s,
                &format!("SELECT eventid FROM events WHERE accesskeyid = '{k}' ORDER BY 1"),
            )
            .await;
            let full = one(
                s,
                &format!(
                    "SELECT eventid FROM events WHERE concat(accesskeyid, '') = '{k}' ORDER BY 1"
                ),
            )
            .await;
            assert!(!pruned.is_empty());
            assert_eq!(pruned, full, "{k}");
        }
        // One key reads only the files whose index holds it, with a row selection.
        let p = plan(
            s,
            "SELECT * FROM events WHERE accesskeyid = 'AKIARTXV5AHDZMKNCBCQ'",
        )
        .await;
        let files = text(&p).matches(".parquet").count();
        let all = one(s, "SELECT count(DISTINCT sourceobject) FROM events").await;
        assert!(
            files > 0 && files < 20,
            "{files} files of the lake's: {all:?}"
        );
        // A key's count and time range come from the index alone: no page is read.
        let q = "SELECT count(*), min(eventtime), max(eventtime) FROM events WHERE";
        let p = plan(s, &format!("{q} accesskeyid = 'AKIARTXV5AHDZMKNCBCQ'")).await;
        assert!(!text(&p).contains("DataSourceExec"), "{}", text(&p));
        assert_eq!(
            one(s, &format!("{q} accesskeyid = 'AKIARTXV5AHDZMKNCBCQ'")).await,
            one(
                s,
                &format!("{q} concat(accesskeyid, '') = 'AKIARTXV5AHDZMKNCBCQ'")
            )
            .await
        );
        // With another condition the rows are read (and that condition applied to them).
        let p = plan(
            s,
            &format!("{q} accesskeyid = 'AKIARTXV5AHDZMKNCBCQ' AND denied"),
        )
        .await;
        assert!(text(&p).contains("DataSourceExec"), "{}", text(&p));
        assert_eq!(
            one(
                s,
                &format!("{q} accesskeyid = 'AKIARTXV5AHDZMKNCBCQ' AND denied")
            )
            .await[0][0],
            "16"
        );
        // A set of keys, and keys named by events (the deactivation of the leaked key).
        let both = one(s, "SELECT count(*) FROM events WHERE accesskeyid IN ('AKIARTXV5AHDZMKNCBCQ', 'AKIARTXV5AHDRQSG4VCH')").await;
        assert_eq!(both, [["55"]]);
        let named = one(
            s,
            "SELECT eventname, keystatus FROM events WHERE targetkeyid = 'AKIARTXV5AHDZMKNCBCQ'",
        )
        .await;
        assert_eq!(named, [["UpdateAccessKey", "Inactive"]]);
        let either = one(s, "SELECT count(*) FROM events WHERE accesskeyid = 'AKIARTXV5AHDZMKNCBCQ' OR targetkeyid = 'AKIARTXV5AHDZMKNCBCQ'").await;
        assert_eq!(either, [["55"]]);
    });
}

#[test]
fn time_windows_and_counts_from_the_manifest() {
    let (_tmp, lake) = sample_lake();
    run(&lake, async |s| {
        let w = "eventtime >= TIMESTAMP '2024-11-30T03:00:00Z' AND eventtime < TIMESTAMP '2024-11-30T04:00:00Z'";
        let pruned = one(s, &format!("SELECT count(*) FROM events WHERE {w}")).await;
        let full = one(s, "SELECT count(*) FROM events WHERE CAST(eventtime AS VARCHAR) >= '2024-11-30T03' AND CAST(eventtime AS VARCHAR) < '2024-11-30T04'").await;
        assert_eq!(pruned, full);
        let p = plan(s, &format!("SELECT * FROM events WHERE {w}")).await;
        assert!(
            !text(&p).contains("date=2024-11-24"),
            "other days are not read"
        );
        // count(*) of a whole table is the manifest's: no file is read.
        let p = plan(s, "SELECT count(*) FROM events").await;
        assert!(!text(&p).contains("DataSourceExec"), "{}", text(&p));
        assert_eq!(one(s, "SELECT count(*) FROM events").await, [["1279"]]);
    });
}

#[test]
fn the_lakes_time_range_over_days_comes_from_the_commit_records() {
    let (_tmp, lake) = sample_lake();
    run(&lake, async |s| {
        // The reports' coverage: no file is opened, and the answer is a full scan's.
        let daily = "SELECT count(*), min(firsteventtime), max(lasteventtime) FROM key_daily WHERE";
        let q = format!("{daily} \"date\" < DATE '2024-11-30'");
        let t = text(&plan(s, &q).await);
        assert!(!t.contains("DataSourceExec"), "{t}");
        let answer = one(s, &q).await;
        assert_eq!(
            answer,
            [["101", "2024-11-24T00:00:03Z", "2024-11-29T22:52:55Z"]]
        );
        // The same condition in a form the pruning does not read: every file is scanned.
        let full = format!("{daily} CAST(\"date\" AS VARCHAR) < '2024-11-30'");
        assert!(text(&plan(s, &full).await).contains("DataSourceExec"));
        assert_eq!(one(s, &full).await, answer);

        let events = "SELECT count(*), min(eventtime), max(eventtime) FROM events WHERE";
        let q = format!("{events} \"date\" >= DATE '2024-11-25' AND \"date\" <= DATE '2024-11-29'");
        let t = text(&plan(s, &q).await);
        assert!(!t.contains("DataSourceExec"), "{t}");
        let full =
            format!("{events} CAST(\"date\" AS VARCHAR) BETWEEN '2024-11-25' AND '2024-11-29'");
        assert_eq!(one(s, &q).await, one(s, &full).await);
        // Any other condition is applied to the rows read.
        let q = format!("{daily} \"date\" < DATE '2024-11-30' AND keykind = 'long-term'");
        let t = text(&plan(s, &q).await);
        assert!(t.contains("DataSourceExec"), "{t}");
    });
}

#[test]
fn a_scan_of_key_changes_opens_only_files_holding_one() {
    let (_tmp, lake) = sample_lake();
    run(&lake, async |s| {
        let q = "SELECT eventname, targetkeyid, keystatus FROM events WHERE";
        let pruned = one(
            s,
            &format!("{q} keystatus IS NOT NULL ORDER BY eventtime, eventid"),
        )
        .await;
        // The same filter in a form the pruning does not read: every file is scanned.
        let full = one(
            s,
            &format!("{q} concat(keystatus, '') <> '' ORDER BY eventtime, eventid"),
        )
        .await;
        assert_eq!(pruned, full);
        assert_eq!(
            pruned,
            [
                ["CreateAccessKey", "AKIARTXV5AHDRQSG4VCH", "Active"],
                ["UpdateAccessKey", "AKIARTXV5AHDZMKNCBCQ", "Inactive"],
            ]
        );
        // The partition folder of each file in the plan.
        let files = |t: String| -> Vec<String> {
            t.split('/')
                .filter(|c| c.starts_with("date="))
                .map(str::to_owned)
                .collect()
        };
        // Of the sample's 12 events files, only the one of 2024-11-30 holds them.
        let t = text(&plan(s, &format!("{q} keystatus IS NOT NULL")).await);
        assert_eq!(files(t), ["date=2024-11-30"]);
        let t = text(&plan(s, &format!("{q} concat(keystatus, '') <> ''")).await);
        assert_eq!(files(t).len(), 12);
    });
}

#[test]
fn a_query_planned_before_a_compaction_reads_its_own_files() {
    let (_tmp, lake) = sample_lake();
    run(&lake, async |s| {
        let p = plan(
            s,
            "SELECT count(*) FROM events WHERE accesskeyid IS NOT NULL OR accesskeyid IS NULL",
        )
        .await;
        let r = keytrail_lake::compact::compact(&lake).expect("compact");
        assert!(r.partitions > 0, "{r:?}");
        let batches = collect(p, s.context().task_ctx()).await.expect("runs");
        let schema = batches[0].schema();
        assert_eq!(cells(&schema, &batches).expect("cells").1, [["1279"]]);
    });
    // And a new session sees the compacted lake, with the same answer.
    run(&lake, async |s| {
        assert_eq!(
            one(s, "SELECT count(*), count(DISTINCT eventid) FROM events").await,
            [["1279", "1279"]]
        );
    });
}

/// The batches the node `node` produced, from the text of `EXPLAIN ANALYZE`.
fn batches_out(analyzed: &str, node: &str) -> usize {
    let line = analyzed
        .lines()
        .find(|l| l.trim_start().starts_with(node))
        .unwrap_or_else(|| panic!("no {node} in {analyzed}"));
    let n = line
        .split("output_batches=")
        .nth(1)
        .unwrap_or_else(|| panic!("no output_batches in {line}"));
    n.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{line}"))
}

#[test]
fn a_sort_is_given_compact_batches_not_the_scans_slivers() {
    let (_tmp, lake) = sample_lake();
    run(&lake, async |s| {
        // A key's rows are a few in each of the files that hold it: the scan gives one small
        // batch per file, which the sort is given gathered into one batch per partition.
        let q = "SELECT * FROM events WHERE accesskeyid = 'AKIARTXV5AHDZMKNCBCQ' ORDER BY eventtime, eventid";
        let p = plan(s, q).await;
        let t = text(&p);
        assert!(t.contains("SortExec") && t.contains("CompactExec"), "{t}");
        let batches = collect(Arc::clone(&p), s.context().task_ctx())
            .await
            .expect("runs");
        let schema = batches[0].schema();
        let rows = cells(&schema, &batches).expect("cells").1;
        assert_eq!(rows.len(), 54);
        let analyzed = one(s, &format!("EXPLAIN ANALYZE {q}")).await;
        let analyzed = &analyzed[0][1];
        let scanned = batches_out(analyzed, "DataSourceExec");
        let given = batches_out(analyzed, "CompactExec");
        assert!(
            scanned > 2 && (1..=2).contains(&given),
            "scan {scanned}, sort given {given}: {analyzed}"
        );
        // The same rows, in the same order, as without the index's pruning.
        let full = one(s, "SELECT * FROM events WHERE concat(accesskeyid, '') = 'AKIARTXV5AHDZMKNCBCQ' ORDER BY eventtime, eventid").await;
        assert_eq!(rows, full);
        // A top-k keeps only its k rows: it is left as it is.
        let p = plan(s, &format!("{q} LIMIT 3")).await;
        assert!(!text(&p).contains("CompactExec"), "{}", text(&p));
    });
}
