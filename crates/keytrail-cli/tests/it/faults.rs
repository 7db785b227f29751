//! Issue 13, part 5: faults on every path. A damaged lake is caught by `keytrail lake verify`,
//! each damage named, exit status 1.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::*;

/// The bundled sample's lake, made once; each test damages its own copy.
fn sample_lake() -> &'static Path {
    use std::sync::OnceLock;
    static LAKE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &LAKE
        .get_or_init(|| {
            let tmp = tempfile::tempdir().expect("tmp");
            let lake = tmp.path().join("lake");
            ingest_json(&[&testdata().join("sample")], &lake, &[], 0);
            (tmp, lake)
        })
        .1
}

fn copy_of_lake(tmp: &Path) -> PathBuf {
    let lake = tmp.join("lake");
    copy_tree(sample_lake(), &lake);
    lake
}

/// `lake verify`: its exit status and problem lines.
fn verify(lake: &Path) -> (i32, Vec<String>) {
    let out = run(keytrail()
        .args(["lake", "verify", "--json", "--lake"])
        .arg(lake));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let problems = v["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p.as_str().expect("text").to_owned())
        .collect();
    (out.status.code().expect("exited"), problems)
}

/// The lake-relative path of a file of a table (the `n`th, in name order).
fn rel(lake: &Path, table: &str, n: usize) -> String {
    let f = &table_files(lake, table)[n];
    f.strip_prefix(lake)
        .expect("in the lake")
        .to_string_lossy()
        .replace('\\', "/")
}

#[test]
fn an_undamaged_lake_verifies() {
    let (code, problems) = verify(sample_lake());
    assert_eq!((code, problems), (0, Vec::<String>::new()));
}

#[test]
fn every_kind_of_damage_is_named_and_fails_verify() {
    type Damage = fn(&Path) -> Vec<String>;
    let cases: [(&str, Damage); 7] = [
        ("missing", |lake| {
            let r = rel(lake, "events", 0);
            fs::remove_file(lake.join(&r)).expect("rm");
            vec![format!("{r}: missing")]
        }),
        ("extra", |lake| {
            let r = rel(lake, "events", 0);
            let extra = r.replace(".parquet", "-copy.parquet");
            fs::copy(lake.join(&r), lake.join(&extra)).expect("cp");
            vec![format!("{extra}: not in the manifest")]
        }),
        ("truncated", |lake| {
            let r = rel(lake, "events", 1);
            let f = fs::OpenOptions::new()
                .write(true)
                .open(lake.join(&r))
                .expect("open");
            let len = f.metadata().expect("meta").len();
            f.set_len(len / 2).expect("truncate");
            vec![format!(
                "{r}: not a readable Parquet file (truncated or overwritten?)"
            )]
        }),
        ("foreign", |lake| {
            let r = rel(lake, "events", 0);
            let dir = r.rsplit_once('/').expect("dir").0.to_owned();
            fs::write(lake.join(&dir).join("notes.txt"), b"hello").expect("write");
            fs::create_dir_all(lake.join("insights/tmp")).expect("mkdir");
            vec![
                format!("{dir}/notes.txt: a foreign file, not in the manifest"),
                "insights/tmp: not a date partition".to_owned(),
            ]
        }),
        ("wrong row count", |lake| {
            // The commit record says one row more than the file holds.
            let r = rel(lake, "events", 0);
            let dir = lake.join("_keytrail/manifest");
            let record = fs::read_dir(&dir)
                .expect("manifest")
                .map(|e| e.expect("entry").path())
                .find(|p| p.extension().is_some_and(|e| e == "json"))
                .expect("a commit record");
            let mut commit: serde_json::Value =
                serde_json::from_slice(&fs::read(&record).expect("read")).expect("json");
            let file = commit["files"]
                .as_array_mut()
                .expect("files")
                .iter_mut()
                .find(|f| f["path"] == r.as_str())
                .expect("the file's record");
            let rows = file["rows"].as_u64().expect("rows");
            file["rows"] = (rows + 1).into();
            fs::write(&record, serde_json::to_vec(&commit).expect("json")).expect("write");
            vec![format!(
                "{r}: {rows} rows, the manifest recorded {}",
                rows + 1
            )]
        }),
        ("wrong partition", |lake| {
            let r = rel(lake, "events", 0);
            let (dir, name) = r.rsplit_once('/').expect("dir");
            let other = rel(lake, "events", table_files(lake, "events").len() - 1);
            let other_dir = other.rsplit_once('/').expect("dir").0;
            assert_ne!(dir, other_dir);
            fs::rename(lake.join(&r), lake.join(other_dir).join(name)).expect("mv");
            vec![
                format!("{r}: missing"),
                format!(
                    "{other_dir}/{name}: not in the manifest, which has this file at {r} (moved to the wrong partition?)"
                ),
            ]
        }),
        ("rows of another day", |lake| {
            // A file replaced by one of another day under its own name: the rows and the
            // partition disagree (and so does the row count).
            let files = table_files(lake, "key_daily");
            fs::copy(&files[files.len() - 1], &files[0]).expect("cp");
            let r = rel(lake, "key_daily", 0);
            vec![format!("{r}: holds rows of ")]
        }),
    ];
    for (what, damage) in cases {
        let tmp = tempfile::tempdir().expect("tmp");
        let lake = copy_of_lake(tmp.path());
        let want = damage(&lake);
        let (code, problems) = verify(&lake);
        assert_eq!(code, 1, "{what}: {problems:?}");
        for w in &want {
            assert!(
                problems.iter().any(|p| p.starts_with(w.as_str())),
                "{what}: no problem starting {w:?} in {problems:?}"
            );
        }
        // Nothing but the damage is reported.
        assert!(
            problems.len() <= want.len() + 1,
            "{what}: {problems:?} for {want:?}"
        );
    }
}
