//! A reader's view of the lake: the files live at one moment of its history, taken from the
//! manifest (never by listing directories), with what the commit records know of each.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use keytrail_model::Table;
use keytrail_model::time::parse_day;

use crate::error::LakeError;
use crate::index::{INDEX_TABLE, IndexEntry, Relation, lookup};
use crate::lake::{Lake, rel_to_path};
use crate::manifest::{FileRecord, Manifest};

/// A live data file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataFile {
    pub table: Table,
    /// The UTC day of its partition (`date=`).
    pub day: i32,
    pub record: FileRecord,
    /// Whether a key index file lists where its keys are.
    pub indexed: bool,
}

/// The live files of a lake at the last commit.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub root: PathBuf,
    /// The sequence number of the last commit.
    pub seq: u64,
    pub files: Vec<DataFile>,
    /// The live key index files.
    pub index_files: Vec<PathBuf>,
    /// The same files' records (path relative to the root, size, the files each covers).
    pub index: Vec<FileRecord>,
}

impl Snapshot {
    /// The live files of `table`.
    pub fn table_files(&self, table: Table) -> impl Iterator<Item = &DataFile> {
        self.files.iter().filter(move |f| f.table == table)
    }

    /// The absolute path of a file.
    pub fn path(&self, rel: &str) -> PathBuf {
        rel_to_path(&self.root, rel)
    }

    /// Where `keys` are in the indexed `events` files (entries of files no longer live are
    /// left out).
    pub fn lookup(&self, keys: &[&str], relation: Relation) -> Result<Vec<IndexEntry>, LakeError> {
        let live: HashSet<&str> = self
            .table_files(Table::Events)
            .map(|f| f.record.path.as_str())
            .collect();
        let mut out = lookup(&self.index_files, keys, relation)?;
        out.retain(|e| live.contains(e.file.as_str()));
        Ok(out)
    }
}

impl Snapshot {
    /// The live files of `manifest`, a lake at `root` (a directory, or for a lake in S3 its
    /// `s3://` URI, used only to name files in messages).
    pub fn from_manifest(root: PathBuf, manifest: &Manifest) -> Result<Snapshot, LakeError> {
        let live = manifest.live_files();
        let covered: HashSet<&str> = live
            .iter()
            .filter(|f| f.table == INDEX_TABLE)
            .flat_map(|f| f.covers.iter().map(String::as_str))
            .collect();
        let mut files = Vec::new();
        let mut index = Vec::new();
        let mut days: HashMap<&str, i32> = HashMap::new();
        for f in &live {
            if f.table == INDEX_TABLE {
                index.push((*f).clone());
                continue;
            }
            let Some(table) = Table::from_name(&f.table) else {
                continue;
            };
            let day = match days.get(f.path.as_str()) {
                Some(d) => *d,
                None => f
                    .path
                    .split('/')
                    .find_map(|p| p.strip_prefix("date="))
                    .and_then(parse_day)
                    .ok_or_else(|| LakeError::Manifest {
                        path: rel_to_path(&root, &f.path),
                        reason: "a data file outside a date= partition".into(),
                    })?,
            };
            days.insert(&f.path, day);
            files.push(DataFile {
                table,
                day,
                indexed: covered.contains(f.path.as_str()),
                record: (*f).clone(),
            });
        }
        files.sort_by(|a, b| {
            (a.table, a.day, &a.record.path).cmp(&(b.table, b.day, &b.record.path))
        });
        Ok(Snapshot {
            index_files: index.iter().map(|f| rel_to_path(&root, &f.path)).collect(),
            index,
            root,
            seq: manifest.last_seq(),
            files,
        })
    }
}

impl Lake {
    /// The lake as the manifest says it is now.
    pub fn snapshot(&self) -> Result<Snapshot, LakeError> {
        Snapshot::from_manifest(self.root().to_path_buf(), &self.manifest()?)
    }
}
