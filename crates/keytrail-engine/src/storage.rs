//! Where a table's files are read from: the only thing a [`LakeTable`](crate::LakeTable) of a
//! lake in S3 does differently from one of a lake on disk. Both plan from the same snapshot;
//! they differ in the URL and object path of each file and in how the key index is read.

use std::sync::Arc;

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
