//! Where a table's files are read from: the only thing a [`LakeTable`](crate::LakeTable) of a
//! lake in S3 does differently from one of a lake on disk. Both plan from the same snapshot;
//! they differ in the URL and object path of each file and in how the key index is read.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreUrl;
use keytrail_lake::{IndexEntry, Relation, Snapshot};

use crate::error::EngineError;
use crate::remote::RemoteLake;

/// How a snapshot's files are reached.
#[derive(Clone, Debug, Default)]
pub(crate) enum Storage {
    /// A lake directory, read through [`crate::store::LakeStore`] as `file:///`.
    #[default]
    Local,
    /// A lake in an object store, read through its store registered under its URL.
    Remote(Arc<RemoteLake>),
}

impl Storage {
    /// The URL DataFusion finds the store by.
    pub(crate) fn url(&self) -> ObjectStoreUrl {
        match self {
            Storage::Local => ObjectStoreUrl::local_filesystem(),
            Storage::Remote(r) => r.url().clone(),
        }
    }

    /// The object path of the file `rel` (relative to the lake root) in that store.
    pub(crate) fn location(
        &self,
        snapshot: &Snapshot,
        rel: &str,
    ) -> Result<object_store::path::Path, DataFusionError> {
        match self {
            Storage::Local => object_store::path::Path::from_absolute_path(snapshot.path(rel))
                .map_err(|e| DataFusionError::External(Box::new(e))),
            Storage::Remote(r) => r
                .path(rel)
                .map_err(|e| DataFusionError::External(Box::new(e))),
        }
    }

    /// Where `keys` are in the snapshot's indexed `events` files.
    pub(crate) async fn lookup(
        &self,
        snapshot: &Snapshot,
        keys: &[&str],
        relation: Relation,
    ) -> Result<Vec<IndexEntry>, EngineError> {
        match self {
            Storage::Local => Ok(snapshot.lookup(keys, relation)?),
            Storage::Remote(r) => r.lookup(snapshot, keys, relation).await,
        }
    }
}

/// Key-index lookups kept by a session.
const KEPT_LOOKUPS: usize = 4;

/// The last few key-index lookups of a session (shared by its tables), so that queries asking
/// for the same keys again read the index once: an investigation reads its timeline a chunk of
/// days at a time, each chunk a query of the whole chain's keys (49,234 keys read the 17 MB
/// index of a 10M-event lake twice per chunk before).
#[derive(Debug, Default)]
pub(crate) struct Lookups {
    recent: Mutex<VecDeque<Lookup>>,
}

#[derive(Debug)]
struct Lookup {
    /// Held so that no other snapshot can take its address.
    snapshot: Arc<Snapshot>,
    /// Sorted, without duplicates.
    keys: Vec<String>,
    entries: Arc<Vec<IndexEntry>>,
}

impl Lookups {
    /// Every entry of `keys` (both relations) in `snapshot`'s indexed `events` files, read
    /// through `storage` unless a recent lookup asked for the same keys of the same snapshot.
    pub(crate) async fn any(
        &self,
        storage: &Storage,
        snapshot: &Arc<Snapshot>,
        keys: &[&str],
    ) -> Result<Arc<Vec<IndexEntry>>, EngineError> {
        let mut sorted: Vec<&str> = keys.to_vec();
        if !sorted.is_sorted() {
            sorted.sort_unstable();
        }
        sorted.dedup();
        let same = |l: &Lookup| {
            Arc::ptr_eq(&l.snapshot, snapshot)
                && l.keys.len() == sorted.len()
                && l.keys.iter().zip(&sorted).all(|(a, b)| a == b)
        };
        if let Some(hit) = self
            .recent
            .lock()
            .ok()
            .and_then(|r| r.iter().find(|l| same(l)).map(|l| Arc::clone(&l.entries)))
        {
            return Ok(hit);
        }
        let entries = Arc::new(storage.lookup(snapshot, &sorted, Relation::Any).await?);
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == KEPT_LOOKUPS {
                recent.pop_front();
            }
            recent.push_back(Lookup {
                snapshot: Arc::clone(snapshot),
                keys: sorted.iter().map(|k| (*k).to_owned()).collect(),
                entries: Arc::clone(&entries),
            });
        }
        Ok(entries)
    }
}
