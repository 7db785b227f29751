//! The object store a session reads a local lake through: the local file system, except that a
//! data file a later commit replaced (a compaction, an upgrade, a new day's `key_daily`) is
//! found where the commit retired it, `_keytrail/retired/<run>/<path>`. A query planned before
//! such a commit therefore reads the files of its own snapshot to the end, while every reader
//! of the table directories sees each row once.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// A local file system that falls back to a lake's retired files.
pub struct LakeStore {
    inner: Arc<LocalFileSystem>,
    /// The lake root, as an object path.
    root: Path,
    /// `_keytrail/retired` of the lake.
    retired: PathBuf,
}

impl LakeStore {
    pub fn new(root: &std::path::Path, retired: PathBuf) -> Result<LakeStore> {
        Ok(LakeStore {
            inner: Arc::new(LocalFileSystem::new()),
            root: Path::from_absolute_path(root)?,
            retired,
        })
    }

    /// Where a retired copy of `location` is, if one is.
    fn retired_copy(&self, location: &Path) -> Option<Path> {
        let rel: Vec<String> = location
            .prefix_match(&self.root)?
            .map(|p| p.as_ref().to_owned())
            .collect();
        let runs = std::fs::read_dir(&self.retired).ok()?;
        for run in runs.flatten() {
            let candidate = rel.iter().fold(run.path(), |p, part| p.join(part));
            if candidate.is_file() {
                return Path::from_absolute_path(candidate).ok();
            }
        }
        None
    }
}

impl fmt::Debug for LakeStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LakeStore({})", self.root)
    }
}

impl fmt::Display for LakeStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[async_trait]
impl ObjectStore for LakeStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        match self.inner.get_opts(location, options.clone()).await {
            Err(object_store::Error::NotFound { .. }) if self.retired_copy(location).is_some() => {
                let Some(copy) = self.retired_copy(location) else {
                    return self.inner.get_opts(location, options).await;
                };
                tracing::debug!(%location, "reading a retired file");
                self.inner.get_opts(&copy, options).await
            }
            other => other,
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
