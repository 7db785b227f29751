//! The credentials a reader of a lake in S3 signs its requests with, found as the AWS CLI finds
//! them (`--profile`, `--region`, `AWS_*`, the profile files, SSO, `credential_process`, web
//! identity, container and instance roles). The query engine reads S3 through `object_store`;
//! [`SdkCredentials`] is the AWS SDK's provider seen as an `object_store` credential provider,
//! so the engine stays free of the SDK and temporary credentials are renewed before they
//! expire, during a query as between the batches of `keytrail follow`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::config::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_s3::error::DisplayErrorContext;
use object_store::CredentialProvider;
use object_store::aws::AwsCredential;

use crate::error::IngestError;
use crate::s3::{S3Options, sdk_config};

/// Credentials are asked for again when they expire within this long: a request signed with
/// them must still reach S3 in time, and a query or batch started with them should finish.
pub const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);

/// The AWS SDK's credentials provider, with the credentials it last gave kept until
/// [`RENEW_BEFORE`] their expiry. Clones share what is kept.
#[derive(Clone)]
pub struct SdkCredentials {
    provider: SharedCredentialsProvider,
    /// Named in errors.
    profile: Option<String>,
    kept: Arc<tokio::sync::Mutex<Option<Kept>>>,
}

struct Kept {
    credential: Arc<AwsCredential>,
    expires: Option<SystemTime>,
}

/// The key ID is not a secret; the rest is never printed.
impl fmt::Debug for SdkCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self
            .kept
            .try_lock()
            .ok()
            .and_then(|k| k.as_ref().map(|k| k.credential.key_id.clone()));
        f.debug_struct("SdkCredentials")
            .field("profile", &self.profile)
            .field("access_key_id", &key)
            .finish_non_exhaustive()
    }
}

impl SdkCredentials {
    /// Credentials from `provider`; `profile` names it in errors.
    pub fn new(provider: SharedCredentialsProvider, profile: Option<String>) -> SdkCredentials {
        SdkCredentials {
            provider,
            profile,
            kept: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// The credentials to sign with now: those kept, or new ones from the provider when none
    /// are kept or those kept expire within [`RENEW_BEFORE`].
    pub async fn current(&self) -> Result<Arc<AwsCredential>, IngestError> {
        let mut kept = self.kept.lock().await;
        if let Some(k) = kept.as_ref()
            && lasts(k.expires, SystemTime::now())
        {
            return Ok(Arc::clone(&k.credential));
        }
        let creds = self.provider.provide_credentials().await.map_err(|e| {
            IngestError::Config(format!(
                "cannot find AWS credentials{}: {}",
                self.profile
                    .as_deref()
                    .map(|p| format!(" (profile {p})"))
                    .unwrap_or_default(),
                DisplayErrorContext(e)
            ))
        })?;
        let credential = Arc::new(AwsCredential {
            key_id: creds.access_key_id().to_owned(),
            secret_key: creds.secret_access_key().to_owned(),
            token: creds.session_token().map(str::to_owned),
        });
        *kept = Some(Kept {
            credential: Arc::clone(&credential),
            expires: creds.expiry(),
        });
        Ok(credential)
    }
}

/// Whether credentials expiring at `expires` may still be used at `now`.
fn lasts(expires: Option<SystemTime>, now: SystemTime) -> bool {
    expires.is_none_or(|at| at.duration_since(now).is_ok_and(|left| left > RENEW_BEFORE))
}

#[async_trait]
impl CredentialProvider for SdkCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        self.current()
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })
    }
}

/// What `opts` lead to: the region, the endpoint and the credentials.
#[derive(Clone, Debug)]
pub struct S3Credentials {
    pub region: String,
    pub endpoint_url: Option<String>,
    pub credentials: SdkCredentials,
}

/// The region and credentials `opts` lead to, as [`crate::s3::connect`] finds them for its
/// client. The credentials are asked for once here, so that a missing or broken profile is
/// reported before any work starts.
pub async fn resolve(opts: &S3Options) -> Result<S3Credentials, IngestError> {
    let config = sdk_config(opts).await;
    let region = config
        .region()
        .map_or_else(|| "us-east-1".to_owned(), ToString::to_string);
    let provider = config.credentials_provider().ok_or_else(|| {
        IngestError::Config("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give --profile".into())
    })?;
    let credentials = SdkCredentials::new(provider, opts.profile.clone());
    credentials.current().await?;
    Ok(S3Credentials {
        region,
        endpoint_url: opts.endpoint_url.clone(),
        credentials,
    })
}

/// [`resolve`] for synchronous callers, on a small runtime of its own.
pub fn resolve_blocking(opts: &S3Options) -> Result<S3Credentials, IngestError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| IngestError::Config(format!("cannot start the S3 runtime: {e}")))?;
    rt.block_on(resolve(opts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_credential_types::provider::future::ProvideCredentials as Future;
    use aws_sdk_s3::config::Credentials;

    /// Gives key `AKIA<n>` on its n-th call, valid for `valid` from the call.
    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicUsize>,
        valid: Option<Duration>,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> Future<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let expiry = self.valid.map(|v| SystemTime::now() + v);
            Future::ready(Ok(Credentials::new(
                format!("AKIA{n}"),
                "secret",
                Some("token".into()),
                expiry,
                "test",
            )))
        }
    }

    fn creds(valid: Option<Duration>) -> (SdkCredentials, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let provider = SharedCredentialsProvider::new(Counting {
            calls: Arc::clone(&calls),
            valid,
        });
        (SdkCredentials::new(provider, None), calls)
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn lasting_credentials_are_asked_for_once() {
        let (c, calls) = creds(Some(Duration::from_secs(3600)));
        let keys = run(async {
            let mut keys = Vec::new();
            for _ in 0..3 {
                keys.push(c.get_credential().await.expect("credential").key_id.clone());
            }
            keys
        });
        assert_eq!(keys, ["AKIA1", "AKIA1", "AKIA1"]);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn credentials_about_to_expire_are_renewed() {
        // Valid for less than RENEW_BEFORE: every request asks for new ones.
        let (c, calls) = creds(Some(Duration::from_secs(60)));
        let keys = run(async {
            let a = c.get_credential().await.expect("credential");
            let b = c.clone().get_credential().await.expect("credential");
            (a.key_id.clone(), b.key_id.clone(), b.token.clone())
        });
        assert_eq!(
            keys,
            (
                "AKIA1".to_owned(),
                "AKIA2".to_owned(),
                Some("token".to_owned())
            )
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn credentials_without_expiry_are_kept() {
        let (c, calls) = creds(None);
        run(async {
            c.get_credential().await.expect("credential");
            c.get_credential().await.expect("credential");
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn expiry_is_judged_with_a_margin() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(lasts(None, now));
        assert!(lasts(
            Some(now + RENEW_BEFORE + Duration::from_secs(1)),
            now
        ));
        assert!(!lasts(Some(now + RENEW_BEFORE), now));
        assert!(!lasts(Some(now - Duration::from_secs(1)), now));
    }

    #[test]
    fn secrets_are_not_printed() {
        let (c, _) = creds(None);
        run(async { c.current().await.expect("credential") });
        let text = format!("{c:?}");
        assert!(text.contains("AKIA1"), "{text}");
        assert!(!text.contains("\"secret\""), "{text}");
        assert!(!text.contains("token"), "{text}");
    }
}
