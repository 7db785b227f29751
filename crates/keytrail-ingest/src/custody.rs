//! Log-file integrity validation (`keytrail-custody`) over keytrail's inputs: S3 as an
//! [`ObjectStore`] (listing CloudTrail's layout as ingest does, bodies streamed, a digest's
//! signature read from its `x-amz-meta-signature` metadata), and the validation that
//! `ingest --verify-logs` runs before it reads.

use std::io::Read;
use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use keytrail_custody::{
    CustodyError, LocalStore, Metadata, ObjectStore, ReadError, Report, Scope, StoredObject,
    VerifyOptions, verify,
};
use keytrail_model::TimeWindow;

use crate::Input;
use crate::error::IngestError;
use crate::s3::{self, S3Options, S3Source, S3Uri};

/// An S3 bucket (or prefix) holding a trail.
pub struct S3Store {
    rt: Arc<tokio::runtime::Runtime>,
    client: Client,
    source: S3Source,
    uri: S3Uri,
}

impl S3Store {
    pub fn new(
        rt: Arc<tokio::runtime::Runtime>,
        client: Client,
        opts: S3Options,
        uri: S3Uri,
    ) -> S3Store {
        S3Store {
            rt,
            source: S3Source::new(client.clone(), opts),
            client,
            uri,
        }
    }
}

/// A body read in a stream, chunk by chunk, from a thread outside the runtime.
struct Body {
    rt: Arc<tokio::runtime::Runtime>,
    stream: ByteStream,
    chunk: bytes::Bytes,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rt.block_on(self.stream.try_next()) {
                Ok(Some(b)) => self.chunk = b,
                Ok(None) => return Ok(0),
                Err(e) => {
                    return Err(std::io::Error::other(format!(
                        "reading the body broke off: {}",
                        DisplayErrorContext(e)
                    )));
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        bytes::Buf::advance(&mut self.chunk, n);
        Ok(n)
    }
}

impl ObjectStore for S3Store {
    fn name(&self) -> String {
        self.uri.to_string()
    }

    fn list(&self, scope: &Scope) -> Result<Vec<StoredObject>, CustodyError> {
        let window = TimeWindow {
            since: scope.since,
            until: scope.until,
        };
        let listing = self
            .rt
            .block_on(self.source.list(&self.uri, &window))
            .map_err(|e| CustodyError::List {
                store: self.name(),
                reason: e.to_string(),
            })?;
        Ok(listing
            .objects
            .into_iter()
            .filter_map(|o| match o.location {
                crate::Location::S3 { bucket, key } => Some(StoredObject {
                    display: format!("s3://{bucket}/{key}"),
                    key,
                    size: o.size,
                }),
                crate::Location::Local(_) => None,
            })
            .collect())
    }

    fn open(&self, object: &StoredObject) -> Result<Box<dyn Read + Send + '_>, ReadError> {
        let out = self
            .rt
            .block_on(
                self.client
                    .get_object()
                    .bucket(&self.uri.bucket)
                    .key(&object.key)
                    .send(),
            )
            .map_err(|e| {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    ReadError::NotFound
                } else {
                    ReadError::Io(format!("GET failed: {}", DisplayErrorContext(e)))
                }
            })?;
        Ok(Box::new(Body {
            rt: Arc::clone(&self.rt),
            stream: out.body,
            chunk: bytes::Bytes::new(),
        }))
    }

    fn metadata(&self, object: &StoredObject) -> Result<Option<Metadata>, ReadError> {
        let out = self
            .rt
            .block_on(
                self.client
                    .head_object()
                    .bucket(&self.uri.bucket)
                    .key(&object.key)
                    .send(),
            )
            .map_err(|e| {
                if e.as_service_error().is_some_and(|s| s.is_not_found()) {
                    ReadError::NotFound
                } else {
                    ReadError::Io(format!("HEAD failed: {}", DisplayErrorContext(e)))
                }
            })?;
        Ok(Some(
            out.metadata()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        ))
    }
}

/// Validate the trail (or copies) under `inputs`: local paths and `s3://` locations
/// (`Input::Object`s are not validated). `client` stands for the one built from `s3`.
pub fn verify_inputs(
    inputs: &[Input],
    s3_opts: &S3Options,
    client: Option<Client>,
    opts: &VerifyOptions,
) -> Result<Report, IngestError> {
    let mut local = Vec::new();
    let mut uris = Vec::new();
    for i in inputs {
        match i {
            Input::Local(p) => local.push(LocalStore::new(p)),
            Input::S3(u) => uris.push(u.clone()),
            Input::Object(_) => {}
        }
    }
    let mut remote = Vec::new();
    if !uris.is_empty() {
        let rt = Arc::new(s3::runtime("keytrail-custody")?);
        let client = match client {
            Some(c) => c,
            None => rt.block_on(s3::connect(s3_opts)),
        };
        for uri in uris {
            remote.push(S3Store::new(
                Arc::clone(&rt),
                client.clone(),
                s3_opts.clone(),
                uri,
            ));
        }
    }
    let stores: Vec<&dyn ObjectStore> = local
        .iter()
        .map(|s| s as &dyn ObjectStore)
        .chain(remote.iter().map(|s| s as &dyn ObjectStore))
        .collect();
    verify(&stores, opts).map_err(|e| IngestError::Config(e.to_string()))
}
