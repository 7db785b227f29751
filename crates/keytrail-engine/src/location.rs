//! Where a lake is: a directory, or a prefix of an S3 bucket (or of any object store).
//!
//! A lake in S3 is reached with explicit settings only: the caller (the CLI, which finds
//! credentials as the AWS CLI does) hands over a region, a credentials provider and, for
//! S3-compatible stores, an endpoint. Nothing here reads the environment or asks the instance
//! metadata service, so a query never waits on either.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::object_store::ObjectStoreUrl;
use object_store::aws::{AwsCredential, AwsCredentialProvider};
use object_store::{ObjectStore, StaticCredentialProvider};

/// How to reach S3: explicit values, nothing looked up.
#[derive(Clone)]
pub struct S3Access {
    /// The client's region (the lake bucket's).
    pub region: String,
    /// An S3-compatible endpoint (`http://127.0.0.1:9000`): path-style addressing, and plain
    /// HTTP allowed when the URL says `http://`.
    pub endpoint: Option<String>,
    /// What requests are signed with, asked for before each request: static credentials
    /// ([`S3Access::new`]), or a provider that renews temporary ones (the CLI's, from the AWS
    /// SDK: `keytrail_ingest::s3access::SdkCredentials`).
    pub credentials: AwsCredentialProvider,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Retries of a request that failed with a retryable error (throttling, 5xx, a broken
    /// connection), with exponential backoff.
    pub max_retries: usize,
    /// No retry starts after this long from the first attempt.
    pub retry_timeout: Duration,
    /// Time allowed for one request.
    pub timeout: Duration,
}

impl S3Access {
    /// Access with these static credentials and region, and keytrail's defaults for the rest.
    pub fn new(
        region: impl Into<String>,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> S3Access {
        S3Access::with_credentials(
            region,
            None,
            Arc::new(StaticCredentialProvider::new(AwsCredential {
                key_id: access_key_id.into(),
                secret_key: secret_access_key.into(),
                token: None,
            })),
        )
    }

    /// Access to `endpoint` (AWS's when `None`) in `region`, signed with what `credentials`
    /// gives, and keytrail's defaults for the rest.
    pub fn with_credentials(
        region: impl Into<String>,
        endpoint: Option<String>,
        credentials: AwsCredentialProvider,
    ) -> S3Access {
        S3Access {
            region: region.into(),
            endpoint,
            credentials,
            concurrency: 32,
            max_retries: 5,
            retry_timeout: Duration::from_secs(120),
            timeout: Duration::from_secs(60),
        }
    }
}

/// Secrets are never printed: the credentials' own `Debug` shows the key ID at most.
impl fmt::Debug for S3Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Access")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("credentials", &self.credentials)
            .field("concurrency", &self.concurrency)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

/// A lake under `s3://bucket/prefix`.
#[derive(Clone, Debug)]
pub struct S3Location {
    pub bucket: String,
    /// Without leading or trailing `/`; may be empty.
    pub prefix: String,
    pub access: S3Access,
}

impl S3Location {
    pub fn new(bucket: impl Into<String>, prefix: &str, access: S3Access) -> S3Location {
        S3Location {
            bucket: bucket.into(),
            prefix: prefix.trim_matches('/').to_owned(),
            access,
        }
    }
}

/// A lake under a prefix of an object store the caller built (another cloud's, or a test's).
#[derive(Clone)]
pub struct StoreLocation {
    pub store: Arc<dyn ObjectStore>,
    /// The URL DataFusion knows the store by, e.g. `s3://bucket`.
    pub url: ObjectStoreUrl,
    /// The lake's root in the store (`""` for the store's root).
    pub prefix: String,
    /// How messages name the lake, e.g. `s3://bucket/prefix`.
    pub name: String,
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreLocation")
            .field("store", &self.store.to_string())
            .field("url", &self.url.as_str())
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Where a lake is.
#[derive(Clone, Debug)]
pub enum LakeLocation {
    /// A directory written by `keytrail ingest`.
    Dir(PathBuf),
    /// A lake in S3 written by `keytrail ingest --lake s3://...`.
    S3(S3Location),
    /// A lake in an object store the caller built.
    Store(StoreLocation),
}

impl LakeLocation {
    /// The local directory, for a lake on disk.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            LakeLocation::Dir(p) => Some(p),
            _ => None,
        }
    }
}

impl fmt::Display for LakeLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LakeLocation::Dir(p) => write!(f, "{}", p.display()),
            LakeLocation::S3(s) if s.prefix.is_empty() => write!(f, "s3://{}", s.bucket),
            LakeLocation::S3(s) => write!(f, "s3://{}/{}", s.bucket, s.prefix),
            LakeLocation::Store(s) => f.write_str(&s.name),
        }
    }
}

impl From<PathBuf> for LakeLocation {
    fn from(p: PathBuf) -> Self {
        LakeLocation::Dir(p)
    }
}

impl From<&PathBuf> for LakeLocation {
    fn from(p: &PathBuf) -> Self {
        LakeLocation::Dir(p.clone())
    }
}

impl From<&Path> for LakeLocation {
    fn from(p: &Path) -> Self {
        LakeLocation::Dir(p.to_path_buf())
    }
}

impl From<&LakeLocation> for LakeLocation {
    fn from(l: &LakeLocation) -> Self {
        l.clone()
    }
}

impl From<S3Location> for LakeLocation {
    fn from(l: S3Location) -> Self {
        LakeLocation::S3(l)
    }
}

impl From<StoreLocation> for LakeLocation {
    fn from(l: StoreLocation) -> Self {
        LakeLocation::Store(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_not_printed() {
        let a = S3Access::with_credentials(
            "us-east-1",
            None,
            Arc::new(StaticCredentialProvider::new(AwsCredential {
                key_id: "AKIAEXAMPLE".into(),
                secret_key: "very-secret".into(),
                token: Some("token-secret".into()),
            })),
        );
        let loc = LakeLocation::S3(S3Location::new("b", "/p/q/", a));
        let text = format!("{loc:?} {loc}");
        assert!(!text.contains("very-secret"), "{text}");
        assert!(!text.contains("token-secret"), "{text}");
        assert!(text.contains("AKIAEXAMPLE"), "{text}");
        assert_eq!(loc.to_string(), "s3://b/p/q");
    }
}
