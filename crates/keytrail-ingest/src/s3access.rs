//! The settings a reader of a lake in S3 signs its requests with, found as the AWS CLI finds
//! them (`--profile`, `--region`, `AWS_*`, the profile files, SSO, `credential_process`, web
//! identity, container and instance roles): the query engine reads S3 through `object_store`
//! and takes them as plain values, so the AWS SDK stays out of it.

use std::fmt;
use std::time::SystemTime;

use aws_sdk_s3::config::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_s3::error::DisplayErrorContext;

use crate::error::IngestError;
use crate::s3::{S3Options, sdk_config};

/// Credentials, region and endpoint, resolved once.
#[derive(Clone)]
pub struct S3Access {
    pub region: String,
    pub endpoint_url: Option<String>,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// When temporary credentials expire.
    pub expires: Option<SystemTime>,
}

/// The key ID is not a secret; the rest is never printed.
impl fmt::Debug for S3Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Access")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("access_key_id", &self.access_key_id)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// Resolve the credentials and region `opts` lead to, as [`crate::s3::connect`] does for its
/// client.
pub async fn resolve(opts: &S3Options) -> Result<S3Access, IngestError> {
    let (provider, region) = provider(opts).await?;
    access(&provider, region, opts).await
}

/// The credentials provider and region `opts` lead to, for a caller that needs credentials
/// as values more than once: each [`access`] asks the provider again, so temporary
/// credentials (roles, SSO, instance profiles) are renewed as they expire.
pub async fn provider(
    opts: &S3Options,
) -> Result<(SharedCredentialsProvider, String), IngestError> {
    let config = sdk_config(opts).await;
    let region = config
        .region()
        .map_or_else(|| "us-east-1".to_owned(), ToString::to_string);
    let provider = config.credentials_provider().ok_or_else(|| {
        IngestError::Config("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give --profile".into())
    })?;
    Ok((provider, region))
}

/// The credentials `provider` gives now, with `region` and `opts`' endpoint.
pub async fn access(
    provider: &SharedCredentialsProvider,
    region: String,
    opts: &S3Options,
) -> Result<S3Access, IngestError> {
    let creds = provider.provide_credentials().await.map_err(|e| {
        IngestError::Config(format!(
            "cannot find AWS credentials{}: {}",
            opts.profile
                .as_deref()
                .map(|p| format!(" (profile {p})"))
                .unwrap_or_default(),
            DisplayErrorContext(e)
        ))
    })?;
    Ok(S3Access {
        region,
        endpoint_url: opts.endpoint_url.clone(),
        access_key_id: creds.access_key_id().to_owned(),
        secret_access_key: creds.secret_access_key().to_owned(),
        session_token: creds.session_token().map(str::to_owned),
        expires: creds.expiry(),
    })
}

/// [`resolve`] for synchronous callers, on a small runtime of its own.
pub fn resolve_blocking(opts: &S3Options) -> Result<S3Access, IngestError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| IngestError::Config(format!("cannot start the S3 runtime: {e}")))?;
    rt.block_on(resolve(opts))
}
