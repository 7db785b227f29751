//! A lake read in place from an object store (here a local folder served by object_store's
//! `LocalFileSystem`, standing for S3): the same answers as the lake directory, and a one-key
//! question fetches only the data files the key index names.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keytrail_engine::datafusion::execution::object_store::ObjectStoreUrl;
use keytrail_engine::object_store::local::LocalFileSystem;
use keytrail_engine::rows::csv;
use keytrail_engine::{LakeSession, SessionOptions, StoreLocation, block_on, sql};
use keytrail_ingest::{IngestOptions, NoProgress, ingest};
use keytrail_lake::{Lake, Relation};

/// A session key of the sample, used on one day only.
const ONE_DAY: &str = "ASIARTXV5AHDYHPGSGN6";
const ABSENT: &str = "AKIAZZZZZZZZZZZZZZZZ";

fn sample_lake() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/sample");
    let summary =
        ingest(&IngestOptions::new(vec![sample], lake.clone()), &NoProgress).expect("ingest");
    assert_eq!(summary.events.written, 1279);
    (tmp, lake)
}

/// The lake `lake` (a folder under `store_root`) as a lake in an object store.
fn store_location(store_root: &Path, prefix: &str) -> StoreLocation {
    StoreLocation {
        store: Arc::new(LocalFileSystem::new_with_prefix(store_root).expect("store")),
        url: ObjectStoreUrl::parse("s3://fixture").expect("url"),
        prefix: prefix.to_owned(),
        name: format!("s3://fixture/{prefix}"),
    }
}

fn opts() -> SessionOptions {
    SessionOptions {
        threads: 2,
        ..SessionOptions::default()
    }
}

fn answer(lake: impl Into<keytrail_engine::LakeLocation>, q: &str) -> String {
    let (schema, batches) = sql(lake, q, &opts()).expect("sql");
    csv(&schema, &batches).expect("csv")
}

#[test]
fn a_lake_in_an_object_store_answers_as_the_directory_does() {
    let (tmp, lake) = sample_lake();
    let remote = store_location(tmp.path(), "lake");
    for q in [
        "SELECT accesskeyid, count(*) AS n, min(eventtime) AS first, max(eventtime) AS last FROM events GROUP BY 1 ORDER BY 1",
        "SELECT date, count(*) AS n FROM events WHERE accesskeyid = 'AKIARTXV5AHDZMKNCBCQ' GROUP BY 1 ORDER BY 1",
        "SELECT accesskeyid, date, events FROM key_daily ORDER BY 1, 2",
        "SELECT eventtype FROM insights",
    ] {
        let local = answer(&lake, q);
        assert!(local.lines().count() > 1, "{q}: {local}");
        assert_eq!(answer(remote.clone(), q), local, "{q}");
    }
    let local = keytrail_engine::verify(&lake).expect("verify");
    let listed = keytrail_engine::verify(remote).expect("verify");
    assert!(listed.problems.is_empty(), "{:?}", listed.problems);
    assert_eq!(
        (listed.commits, listed.files, &listed.rows),
        (local.commits, local.files, &local.rows)
    );
}

#[test]
fn a_one_key_question_fetches_only_the_files_the_index_names() {
    let (tmp, lake) = sample_lake();
    let remote = store_location(tmp.path(), "lake");
    let events_files: BTreeSet<String> = Lake::open(&lake)
        .expect("lake")
        .snapshot()
        .expect("snapshot")
        .table_files(keytrail_model::Table::Events)
        .map(|f| f.record.path.clone())
        .collect();
    assert!(events_files.len() > 2, "{events_files:?}");
    let named: BTreeSet<String> = Lake::open(&lake)
        .expect("lake")
        .snapshot()
        .expect("snapshot")
        .lookup(&[ONE_DAY], Relation::Any)
        .expect("lookup")
        .into_iter()
        .map(|e| e.file)
        .collect();
    assert!(
        !named.is_empty() && named.len() < events_files.len(),
        "{named:?}"
    );

    block_on::<_, keytrail_engine::EngineError>(2, async {
        // A key the lake has never seen: the index answers, no data file is fetched.
        let s = LakeSession::open(remote.clone(), &opts()).await?;
        let batches = s
            .sql(&format!(
                "SELECT count(*) AS n FROM events WHERE accesskeyid = '{ABSENT}'"
            ))
            .await?
            .collect()
            .await?;
        assert_eq!(
            keytrail_engine::arrow::util::pretty::pretty_format_batches(&batches)
                .expect("fmt")
                .to_string()
                .lines()
                .nth(3),
            Some("| 0 |")
        );
        let io = s.io_stats().expect("counted");
        assert_eq!(io.under("events/").count(), 0, "{io:#?}");
        assert!(io.total_under("_keytrail/index/").requests > 0, "{io:#?}");
        assert!(
            io.total_under("_keytrail/manifest/").requests > 0,
            "{io:#?}"
        );

        // A key it holds: exactly the files the index names.
        let s = LakeSession::open(remote.clone(), &opts()).await?;
        s.sql(&format!(
            "SELECT eventid FROM events WHERE accesskeyid = '{ONE_DAY}'"
        ))
        .await?
        .collect()
        .await?;
        let io = s.io_stats().expect("counted");
        let fetched: BTreeSet<String> = io.under("events/").map(|(k, _)| k.to_owned()).collect();
        assert_eq!(fetched, named);
        assert_eq!(io.under("key_daily/").count(), 0, "{io:#?}");
        // The session's lookup agrees with the local one, and is the query's, kept: the index
        // is not read again for the same keys; it is for others.
        let index_reads = |s: &LakeSession| {
            s.io_stats()
                .expect("counted")
                .total_under("_keytrail/index/")
                .requests
        };
        let before = index_reads(&s);
        let entries = s.lookup(&[ONE_DAY], Relation::Any).await?;
        let looked: BTreeSet<String> = entries.into_iter().map(|e| e.file).collect();
        assert_eq!(looked, named);
        assert_eq!(index_reads(&s), before);
        let entries = s.lookup(&[ONE_DAY, ABSENT], Relation::Held).await?;
        assert!(index_reads(&s) > before);
        assert!(!entries.is_empty() && entries.iter().all(|e| !e.named));
        Ok(())
    })
    .expect("remote session");
}

#[test]
fn a_prefix_without_a_lake_is_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(tmp.path().join("empty")).expect("mkdir");
    let err = sql(store_location(tmp.path(), "empty"), "SELECT 1", &opts())
        .expect_err("not a lake")
        .to_string();
    assert!(err.contains("s3://fixture/empty"), "{err}");
    assert!(err.contains("_keytrail/lake.json"), "{err}");
}

#[test]
fn a_file_replaced_after_the_session_read_the_manifest_is_named() {
    let (tmp, lake) = sample_lake();
    let remote = store_location(tmp.path(), "lake");
    let daily: Vec<String> = Lake::open(&lake)
        .expect("lake")
        .snapshot()
        .expect("snapshot")
        .table_files(keytrail_model::Table::KeyDaily)
        .map(|f| f.record.path.clone())
        .collect();
    let gone = daily.first().expect("a key_daily file").clone();
    let err = block_on::<_, keytrail_engine::EngineError>(2, async {
        let s = LakeSession::open(remote, &opts()).await?;
        // As the publish of a later ingest deletes the key_daily files its commit replaced.
        std::fs::remove_file(lake.join(&gone)).expect("delete");
        s.sql("SELECT sum(events) FROM key_daily")
            .await?
            .collect()
            .await?;
        Ok(())
    })
    .expect_err("the file is gone")
    .to_string();
    assert!(
        err.contains(&format!("s3://fixture/lake/{gone} is gone")),
        "{err}"
    );
    assert!(err.contains("run the query again"), "{err}");
}
