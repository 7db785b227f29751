//! Checking a lake known by a listing of its objects (a lake in S3, where nothing is a local
//! file) against its manifest: every live file present with the size its commit recorded, and
//! no data file under the table prefixes, nor key index file, that the manifest does not know.
//!
//! The local [`Lake::verify`](crate::Lake::verify) also opens every file's footer (row count,
//! schema version); a listing has only names and sizes, so the row counts of a listed lake's
//! [`Verification`] are the ones its commits recorded.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use keytrail_model::Table;
use keytrail_model::time::parse_day;

use crate::index::{INDEX_DIR, INDEX_TABLE};
use crate::lake::Verification;
use crate::manifest::Manifest;

/// Where a committed run's files wait until they are copied into place, relative to the root.
pub fn staged_path(run_id: &str, rel: &str) -> String {
    format!("_keytrail/staging/{run_id}/{rel}")
}

/// Check `objects` (every object under the lake's root: path relative to the root, and size)
/// against `manifest`.
pub fn verify_listing(manifest: &Manifest, objects: &BTreeMap<String, u64>) -> Verification {
    let mut v = Verification {
        commits: manifest.commits().len(),
        objects: manifest.index().objects(),
        ..Verification::default()
    };
    let added_by: HashMap<&str, &str> = manifest
        .commits()
        .iter()
        .flat_map(|c| {
            c.files
                .iter()
                .map(move |f| (f.path.as_str(), c.run_id.as_str()))
        })
        .collect();
    let live = manifest.live_files();
    let known: BTreeSet<&str> = live.iter().map(|f| f.path.as_str()).collect();
    for f in &live {
        match objects.get(&f.path) {
            None => {
                let staged = added_by
                    .get(f.path.as_str())
                    .filter(|run| objects.contains_key(&staged_path(run, &f.path)));
                v.problems.push(match staged {
                    Some(run) => format!(
                        "{}: missing (committed by run {run} and still staged: the next `keytrail ingest` into the lake finishes publishing it)",
                        f.path
                    ),
                    None => format!("{}: missing", f.path),
                });
                continue;
            }
            Some(&size) if size != f.bytes => v.problems.push(format!(
                "{}: {size} bytes, the manifest recorded {}",
                f.path, f.bytes
            )),
            Some(_) => {}
        }
        *v.rows.entry(f.table.clone()).or_default() += f.rows;
        v.files += 1;
    }
    let mut bad_partitions = BTreeSet::new();
    for rel in objects.keys() {
        let mut parts = rel.split('/');
        let (Some(top), Some(second)) = (parts.next(), parts.next()) else {
            continue;
        };
        let name = rel.rsplit('/').next().unwrap_or("");
        let parquet = name.ends_with(".parquet") && !name.starts_with('.');
        if format!("{top}/{second}") == INDEX_DIR {
            if parquet && !known.contains(rel.as_str()) {
                v.problems.push(format!("{rel}: not in the manifest"));
            }
            continue;
        }
        if Table::from_name(top).is_none() || top == INDEX_TABLE {
            continue;
        }
        let partition = second
            .strip_prefix("date=")
            .and_then(parse_day)
            .filter(|_| parts.next().is_some());
        if partition.is_none() {
            bad_partitions.insert(format!("{top}/{second}"));
            continue;
        }
        if parquet && !known.contains(rel.as_str()) {
            v.problems.push(format!("{rel}: not in the manifest"));
        }
    }
    v.problems.extend(
        bad_partitions
            .into_iter()
            .map(|p| format!("{p}: not a date partition")),
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{COMMIT_FORMAT, Commit, FileRecord};

    fn file(table: &str, path: &str, bytes: u64) -> FileRecord {
        FileRecord {
            table: table.into(),
            path: path.into(),
            rows: 10,
            bytes,
            stats: None,
            covers: Vec::new(),
        }
    }

    fn commit(seq: u64, run: &str, files: Vec<FileRecord>, replaced: Vec<String>) -> Commit {
        Commit {
            format: COMMIT_FORMAT,
            seq,
            run_id: run.into(),
            committed_at: "2024-12-01T00:00:00Z".into(),
            writer: "test".into(),
            schema_version: 2,
            filter: Default::default(),
            objects: Vec::new(),
            files,
            replaced,
        }
    }

    #[test]
    fn sizes_missing_staged_unknown_and_partitions() {
        let manifest = Manifest::from_commits(vec![
            commit(
                1,
                "r1",
                vec![
                    file("events", "events/date=2024-01-01/a.parquet", 100),
                    file("key_daily", "key_daily/date=2024-01-01/k1.parquet", 7),
                    file("key_index", "_keytrail/index/r1.parquet", 5),
                ],
                vec![],
            ),
            commit(
                2,
                "r2",
                vec![
                    file("events", "events/date=2024-01-02/b.parquet", 200),
                    file("key_daily", "key_daily/date=2024-01-01/k2.parquet", 8),
                ],
                vec!["key_daily/date=2024-01-01/k1.parquet".into()],
            ),
        ]);
        let mut objects: BTreeMap<String, u64> = [
            ("_keytrail/lake.json", 50),
            ("_keytrail/manifest/0000000001.json", 50),
            ("events/date=2024-01-01/a.parquet", 100),
            ("key_daily/date=2024-01-01/k2.parquet", 8),
            ("_keytrail/index/r1.parquet", 5),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        // Still staged: committed, not yet copied into place.
        objects.insert(
            "_keytrail/staging/r2/events/date=2024-01-02/b.parquet".into(),
            200,
        );
        let v = verify_listing(&manifest, &objects);
        assert_eq!(v.commits, 2);
        assert_eq!(v.files, 3);
        assert_eq!(v.rows.get("events"), Some(&10));
        assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
        assert!(
            v.problems[0].starts_with(
                "events/date=2024-01-02/b.parquet: missing (committed by run r2 and still staged"
            ),
            "{:?}",
            v.problems
        );

        objects.insert("events/date=2024-01-02/b.parquet".into(), 199);
        objects.insert("events/date=2024-01-02/stray.parquet".into(), 1);
        objects.insert("events/date=2024-01-02/.hidden.parquet".into(), 1);
        objects.insert("_keytrail/index/stray.parquet".into(), 1);
        objects.insert("insights/whatever/x.parquet".into(), 1);
        objects.insert("key_daily/date=2024-01-01".into(), 1);
        let v = verify_listing(&manifest, &objects);
        assert_eq!(
            v.problems,
            vec![
                "events/date=2024-01-02/b.parquet: 199 bytes, the manifest recorded 200",
                "_keytrail/index/stray.parquet: not in the manifest",
                "events/date=2024-01-02/stray.parquet: not in the manifest",
                "insights/whatever: not a date partition",
                "key_daily/date=2024-01-01: not a date partition",
            ]
        );
    }
}
