//! Amazon S3 (and S3-compatible stores) as a source of CloudTrail objects.
//!
//! Listing understands CloudTrail's layout under any prefix —
//! `AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/` and, for organization trails,
//! `AWSLogs/<o-id>/<account>/CloudTrail/...` — and prunes it: `--account` and `--region` keep
//! only those folders, and a time window lists only its day folders (concurrently), so a
//! one-week question over a five-year bucket lists one week. A bucket or prefix without that
//! layout is listed whole.
//!
//! Reading: the SDK retries throttling (503 SlowDown) and server errors with backoff; a body
//! that breaks off while it is read is fetched again here. An object that still fails is a
//! [`ObjectError`] naming it; the run goes on.

use std::collections::HashSet;
use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::{Builder, ConnectorBuilder, tls};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use futures::StreamExt;
use keytrail_model::TimeWindow;
use keytrail_model::time::{day_of, day_string, now_millis};

use crate::error::{IngestError, ObjectError};
use crate::source::{Location, ObjectRef};

/// `s3://bucket/prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Uri {
    pub bucket: String,
    /// Without a leading `/`; may be empty.
    pub prefix: String,
}

impl S3Uri {
    /// Parse `s3://bucket[/prefix]`; `None` when the text is not an S3 URI.
    pub fn parse(text: &str) -> Option<Result<S3Uri, IngestError>> {
        let rest = text.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Some(Err(IngestError::Config(format!(
                "`{text}` names no bucket"
            ))));
        }
        Some(Ok(S3Uri {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        }))
    }
}

impl std::fmt::Display for S3Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// How to reach S3 and how hard to push it.
#[derive(Clone, Debug)]
pub struct S3Options {
    /// A named profile of the AWS config and credentials files (`--profile`).
    pub profile: Option<String>,
    /// `--region`; otherwise `AWS_REGION`/`AWS_DEFAULT_REGION`, the profile's region, then
    /// us-east-1 (never the instance metadata service).
    pub region: Option<String>,
    /// An S3-compatible endpoint (`--endpoint-url`); addressing becomes path-style.
    pub endpoint_url: Option<String>,
    /// GETs in flight at once (`--concurrency`).
    pub concurrency: usize,
    /// Day folders listed at once.
    pub list_concurrency: usize,
    /// Keys per list page (S3's maximum is 1,000).
    pub page_size: Option<i32>,
    /// Time allowed for one attempt of one request.
    pub attempt_timeout: Duration,
    /// Attempts per request, retries included (the SDK's standard mode, with backoff).
    pub max_attempts: u32,
    /// Attempts to read a body that breaks off.
    pub body_attempts: u32,
    /// Keep only these accounts (`--account`).
    pub accounts: Vec<String>,
    /// Keep only these regions (`--region-filter`).
    pub regions: Vec<String>,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            profile: None,
            region: None,
            endpoint_url: None,
            concurrency: 32,
            list_concurrency: 16,
            page_size: None,
            attempt_timeout: Duration::from_secs(60),
            max_attempts: 6,
            body_attempts: 4,
            accounts: Vec::new(),
            regions: Vec::new(),
        }
    }
}

/// The timeouts and retries of every client keytrail builds.
pub fn client_settings(opts: &S3Options) -> (TimeoutConfig, RetryConfig) {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10).min(opts.attempt_timeout))
        .operation_attempt_timeout(opts.attempt_timeout)
        .build();
    let retries = RetryConfig::standard()
        .with_max_attempts(opts.max_attempts.max(1))
        .with_initial_backoff(Duration::from_millis(100));
    (timeouts, retries)
}

/// The tokio runtime ingest's S3 calls run on (inputs, the lake, digests): 2 worker threads
/// named `name`.
pub(crate) fn runtime(name: &str) -> Result<tokio::runtime::Runtime, IngestError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| IngestError::Config(format!("cannot start the S3 runtime: {e}")))
}

/// Build an S3 client the way the AWS CLI finds its settings: the default credential chain
/// (environment, profile files, SSO, process, container and instance roles), `--profile`,
/// `--region`, `--endpoint-url`.
pub async fn connect(opts: &S3Options) -> Client {
    let shared = sdk_config(opts).await;
    let mut b = aws_sdk_s3::config::Builder::from(&shared);
    if let Some(url) = &opts.endpoint_url {
        b = b.endpoint_url(url).force_path_style(true);
    }
    Client::from_conf(b.build())
}

/// The shared AWS settings every client keytrail builds starts from (S3 here; SQS in follow
/// mode): credentials, region, timeouts and retries, found as [`connect`] says.
pub async fn sdk_config(opts: &S3Options) -> aws_config::SdkConfig {
    let (timeouts, retries) = client_settings(opts);
    // The region never comes from instance metadata: that would make every run on a laptop
    // wait for a timeout. An explicit region, the environment, the profile, or us-east-1.
    let mut profile_region = aws_config::profile::ProfileFileRegionProvider::builder();
    if let Some(p) = &opts.profile {
        profile_region = profile_region.profile_name(p);
    }
    let region = RegionProviderChain::first_try(opts.region.clone().map(Region::new))
        .or_else(aws_config::environment::EnvironmentVariableRegionProvider::new())
        .or_else(profile_region.build())
        .or_else(Region::new("us-east-1"));
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .region(region)
        .timeout_config(timeouts)
        .retry_config(retries);
    if let Some(p) = &opts.profile {
        loader = loader.profile_name(p);
    }
    loader.load().await
}

/// The HTTP client of every AWS client keytrail builds (S3, SQS, and the credential providers
/// behind them): hyper with rustls over `ring`, the proxy taken from the environment
/// (`HTTPS_PROXY`, `NO_PROXY`) as the SDK's default client does. `ring` rather than the
/// SDK's default `aws-lc`: DataFusion's object store already uses it, and a second TLS crypto
/// library (a large C build) would only lengthen every build.
pub fn http_client() -> SharedHttpClient {
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut conn = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ));
        conn.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            conn.set_sleep_impl(components.sleep_impl());
        }
        conn.set_proxy_config(Some(ProxyConfig::from_env()));
        conn.build()
    })
}

/// An S3 client with the listing and reading keytrail needs.
#[derive(Clone, Debug)]
pub struct S3Source {
    client: Client,
    opts: S3Options,
}

/// What listing found.
#[derive(Debug, Default)]
pub struct Listing {
    pub objects: Vec<ObjectRef>,
    /// List requests sent.
    pub requests: u64,
}

fn is_account(segment: &str) -> bool {
    segment.len() == 12 && segment.bytes().all(|b| b.is_ascii_digit())
}

fn is_org(segment: &str) -> bool {
    segment.starts_with("o-") && segment.len() > 2
}

/// The last path segment of a common prefix (`a/b/c/` → `c`).
fn last_segment(prefix: &str) -> &str {
    prefix
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
}

impl S3Source {
    pub fn new(client: Client, opts: S3Options) -> S3Source {
        S3Source { client, opts }
    }

    pub fn options(&self) -> &S3Options {
        &self.opts
    }

    fn list_error(&self, bucket: &str, prefix: &str, e: impl std::error::Error) -> IngestError {
        IngestError::Object {
            object: format!("s3://{bucket}/{prefix}"),
            reason: format!("cannot list: {}", DisplayErrorContext(e)),
        }
    }

    /// The sub-folders of `prefix` (a delimiter listing, every page).
    async fn folders(
        &self,
        bucket: &str,
        prefix: &str,
        requests: &mut u64,
    ) -> Result<Vec<String>, IngestError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .delimiter("/")
            .set_max_keys(self.opts.page_size)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            *requests += 1;
            let page = page.map_err(|e| self.list_error(bucket, prefix, e))?;
            out.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(str::to_owned)),
            );
        }
        Ok(out)
    }

    /// Every object under `prefix` (every page).
    async fn objects(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<(Vec<ObjectRef>, u64), IngestError> {
        let mut out = Vec::new();
        let mut requests = 0;
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_max_keys(self.opts.page_size)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            requests += 1;
            let page = page.map_err(|e| self.list_error(bucket, prefix, e))?;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                if key.ends_with('/') {
                    continue; // a "folder" marker object
                }
                out.push(ObjectRef {
                    location: Location::S3 {
                        bucket: bucket.to_owned(),
                        key: key.to_owned(),
                    },
                    size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    modified: o.last_modified().and_then(|t| t.to_millis().ok()),
                    etag: o.e_tag().map(|e| e.trim_matches('"').to_owned()),
                });
            }
        }
        Ok((out, requests))
    }

    /// The prefixes to list in full for `uri`, following CloudTrail's layout when it is there.
    /// A prefix names a folder (`s3://b/x` is `s3://b/x/`).
    async fn plan(
        &self,
        uri: &S3Uri,
        window: &TimeWindow,
        requests: &mut u64,
    ) -> Result<Vec<String>, IngestError> {
        let b = &uri.bucket;
        let mut prefix = uri.prefix.clone();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        // Where does AWSLogs/ start: in the prefix, right below it, or nowhere?
        let (root, rest) = match prefix.find("AWSLogs/") {
            Some(i) => {
                let end = i + "AWSLogs/".len();
                (prefix[..end].to_owned(), prefix[end..].to_owned())
            }
            None => {
                let awslogs = format!("{prefix}AWSLogs/");
                if !self.folders(b, &prefix, requests).await?.contains(&awslogs) {
                    // Not CloudTrail's layout: list everything under the prefix.
                    return Ok(vec![prefix]);
                }
                (awslogs, String::new())
            }
        };
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        // Accounts: `AWSLogs/<account>/` or, for organization trails, `AWSLogs/<o-id>/<account>/`.
        let (accounts, below): (Vec<String>, &[&str]) = match segments.as_slice() {
            [] => {
                let mut accounts = Vec::new();
                for p in self.folders(b, &root, requests).await? {
                    let seg = last_segment(&p);
                    if is_org(seg) {
                        accounts.extend(self.accounts_of(b, &p, requests).await?);
                    } else if is_account(seg) {
                        accounts.push(p);
                    }
                }
                (accounts, &[])
            }
            [org] if is_org(org) => (
                self.accounts_of(b, &format!("{root}{org}/"), requests)
                    .await?,
                &[],
            ),
            [org, account, below @ ..] if is_org(org) => {
                (vec![format!("{root}{org}/{account}/")], below)
            }
            [account, below @ ..] => (vec![format!("{root}{account}/")], below),
        };
        let explicit = !segments.is_empty() && (segments.len() > 1 || !is_org(segments[0]));
        let mut out = Vec::new();
        for account in accounts {
            let id = last_segment(&account);
            if !explicit
                && !self.opts.accounts.is_empty()
                && !self.opts.accounts.iter().any(|a| a == id)
            {
                continue;
            }
            out.extend(
                self.below_account(b, &account, below, window, requests)
                    .await?,
            );
        }
        Ok(out)
    }

    /// The account folders of an organization folder.
    async fn accounts_of(
        &self,
        b: &str,
        org: &str,
        requests: &mut u64,
    ) -> Result<Vec<String>, IngestError> {
        Ok(self
            .folders(b, org, requests)
            .await?
            .into_iter()
            .filter(|a| is_account(last_segment(a)))
            .collect())
    }

    /// Below an account folder: `CloudTrail[-Digest|-Insight]/<region>/YYYY/MM/DD/`. `given`
    /// are the segments below the account the prefix already fixes.
    async fn below_account(
        &self,
        b: &str,
        account: &str,
        given: &[&str],
        window: &TimeWindow,
        requests: &mut u64,
    ) -> Result<Vec<String>, IngestError> {
        let kinds = match given.first() {
            None => self.folders(b, account, requests).await?,
            Some(kind) => vec![format!("{account}{kind}/")],
        };
        let mut out = Vec::new();
        for kind in kinds {
            let regions = match given.get(1) {
                None => self.folders(b, &kind, requests).await?,
                Some(region) => vec![format!("{kind}{region}/")],
            };
            for region in regions {
                let name = last_segment(&region);
                if given.len() < 2
                    && !self.opts.regions.is_empty()
                    && !self.opts.regions.iter().any(|r| r == name)
                {
                    continue;
                }
                if given.len() > 2 {
                    // A date already in the prefix: list it as it is.
                    out.push(format!("{region}{}/", given[2..].join("/")));
                } else {
                    out.extend(day_prefixes(&region, window));
                }
            }
        }
        Ok(out)
    }

    /// Find the objects under `uri` within `window`.
    pub async fn list(&self, uri: &S3Uri, window: &TimeWindow) -> Result<Listing, IngestError> {
        let mut requests = 0;
        let prefixes = self.plan(uri, window, &mut requests).await?;
        let mut listing = Listing {
            objects: Vec::new(),
            requests,
        };
        let mut results = futures::stream::iter(prefixes)
            .map(|p| async move { self.objects(&uri.bucket, &p).await })
            .buffer_unordered(self.opts.list_concurrency.max(1));
        let mut seen = HashSet::new();
        while let Some(r) = results.next().await {
            let (objects, n) = r?;
            listing.requests += n;
            for o in objects {
                if seen.insert(o.location.clone()) {
                    listing.objects.push(o);
                }
            }
        }
        Ok(listing)
    }

    /// Read one object whole. The SDK retries throttling and server errors; a body that breaks
    /// off is read again here, with backoff.
    pub async fn get(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(Vec<u8>, Option<String>), ObjectError> {
        let attempts = self.opts.body_attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            let out = self
                .client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| {
                    ObjectError::Read(format!("GET failed: {}", DisplayErrorContext(e)))
                })?;
            let etag = out.e_tag().map(|e| e.trim_matches('"').to_owned());
            match out.body.collect().await {
                Ok(bytes) => return Ok((bytes.to_vec(), etag)),
                Err(e) => {
                    last = format!("{}", DisplayErrorContext(e));
                    tracing::debug!(bucket, key, attempt, "body read broke off: {last}");
                    if attempt < attempts {
                        tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
                    }
                }
            }
        }
        Err(ObjectError::Read(format!(
            "reading the body failed {attempts} times: {last}"
        )))
    }
}

/// An S3 object's body as a [`std::io::Read`], for an object read record by record on a
/// thread outside the runtime (a decoding worker). A body that breaks off is asked for again
/// from where it broke off (a ranged GET of the same ETag, so a changed object is refused),
/// with backoff, up to the options' body attempts; the SDK retries each GET itself.
pub struct BodyReader {
    source: S3Source,
    bucket: String,
    key: String,
    etag: Option<String>,
    rt: tokio::runtime::Handle,
    body: Option<aws_sdk_s3::primitives::ByteStream>,
    chunk: bytes::Bytes,
    pos: u64,
    breaks: u32,
    done: bool,
}

impl S3Source {
    /// A reader of `s3://bucket/key` from its first byte; `etag`, when known, is the version
    /// that must be read.
    pub fn reader(
        &self,
        bucket: &str,
        key: &str,
        etag: Option<String>,
        rt: tokio::runtime::Handle,
    ) -> BodyReader {
        BodyReader {
            source: self.clone(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            etag,
            rt,
            body: None,
            chunk: bytes::Bytes::new(),
            pos: 0,
            breaks: 0,
            done: false,
        }
    }
}

impl BodyReader {
    fn open(&mut self) -> std::io::Result<()> {
        let mut get = self
            .source
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key);
        if self.pos > 0 {
            get = get.range(format!("bytes={}-", self.pos));
        }
        if let Some(etag) = &self.etag {
            get = get.if_match(format!("\"{etag}\""));
        }
        let out = self.rt.block_on(get.send()).map_err(|e| {
            // 412: the object is no longer the version read so far.
            if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) {
                std::io::Error::other(crate::stream::ObjectChanged)
            } else {
                std::io::Error::other(format!("GET failed: {}", DisplayErrorContext(e)))
            }
        })?;
        if self.etag.is_none() {
            self.etag = out.e_tag().map(|e| e.trim_matches('"').to_owned());
        }
        self.body = Some(out.body);
        Ok(())
    }
}

impl std::io::Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if !self.chunk.is_empty() {
                let n = out.len().min(self.chunk.len());
                out[..n].copy_from_slice(&self.chunk.split_to(n));
                self.pos += n as u64;
                return Ok(n);
            }
            if self.done || out.is_empty() {
                return Ok(0);
            }
            if self.body.is_none() {
                self.open()?;
            }
            let Some(body) = self.body.as_mut() else {
                continue;
            };
            match self.rt.block_on(body.next()) {
                Some(Ok(b)) => self.chunk = b,
                None => self.done = true,
                Some(Err(e)) => {
                    self.body = None;
                    self.breaks += 1;
                    let why = DisplayErrorContext(e).to_string();
                    tracing::debug!(bucket = %self.bucket, key = %self.key, at = self.pos, "body read broke off: {why}");
                    if self.breaks >= self.source.opts.body_attempts.max(1) {
                        return Err(std::io::Error::other(format!(
                            "reading the body failed {} times: {why}",
                            self.breaks
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(100 << self.breaks.min(6)));
                }
            }
        }
    }
}

/// Day folders `<region>YYYY/MM/DD/` from the window's first day to its last day plus one
/// (CloudTrail files a late event of 23:58 in the next day's folder).
pub fn day_prefixes(region_prefix: &str, window: &TimeWindow) -> Vec<String> {
    let Some(since) = window.since else {
        return vec![region_prefix.to_owned()];
    };
    let first = day_of(since);
    let last = day_of(window.until.unwrap_or_else(now_millis).saturating_sub(1)) + 1;
    (first..=last)
        .map(|d| format!("{region_prefix}{}/", day_string(d).replace('-', "/")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        assert_eq!(
            S3Uri::parse("s3://trail-bucket/org/AWSLogs/").map(Result::ok),
            Some(Some(S3Uri {
                bucket: "trail-bucket".into(),
                prefix: "org/AWSLogs/".into()
            }))
        );
        assert_eq!(
            S3Uri::parse("s3://b").map(Result::ok),
            Some(Some(S3Uri {
                bucket: "b".into(),
                prefix: String::new()
            }))
        );
        assert!(S3Uri::parse("s3:///x").is_some_and(|r| r.is_err()));
        assert!(S3Uri::parse("/tmp/x").is_none());
    }

    #[test]
    fn day_folders_cover_the_window_and_one_day_more() {
        let w = TimeWindow {
            since: Some(1_732_924_800_000), // 2024-11-30T00:00:00Z
            until: Some(1_733_097_600_000), // 2024-12-02T00:00:00Z
        };
        assert_eq!(
            day_prefixes("AWSLogs/1/CloudTrail/us-east-1/", &w),
            [
                "AWSLogs/1/CloudTrail/us-east-1/2024/11/30/",
                "AWSLogs/1/CloudTrail/us-east-1/2024/12/01/",
                "AWSLogs/1/CloudTrail/us-east-1/2024/12/02/",
            ]
        );
    }
}
