//! A real S3 HTTP server on 127.0.0.1 for the tests: `s3s-fs` serves a temp folder (one
//! sub-folder per bucket), signed requests only (static test credentials), and faults can be
//! planned per object key:
//!
//! - through s3s's access hook: `503 SlowDown`, `500 InternalError`, a delay before answering;
//! - around the service: a body cut off half-way (the connection closes before the promised
//!   `Content-Length`), a body that breaks after a given number of bytes reached the client
//!   (and the object changed meanwhile, if asked), or a connection dropped without any answer.
//!
//! GETs with `If-Match` are answered `412 PreconditionFailed` when the object's ETag differs,
//! as S3 does (s3s-fs ignores the header).
//!
//! And per request, on any operation (a method and a part of `path?query` to match, see
//! [`S3Server::fault_requests`]): an S3 error answer instead of doing the request
//! ([`ReqFault::Status`]: 500, 503, 403 AccessDenied, 404 NoSuchKey), an error answer after
//! doing it ([`ReqFault::After`]: the object was written, the client is told it was not), or
//! no answer for longer than the client waits ([`ReqFault::Hang`]).
//!
//! Every request is logged (operation, path, query, `Range` and `If-Match`) so tests can
//! assert what was asked.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use s3s::access::{S3Access, S3AccessContext};
use s3s::dto::{ETagCondition, GetObjectInput};
use s3s::{S3Request, S3Result, s3_error};

pub const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
pub const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
pub const REGION: &str = "us-east-1";

/// What to do to the next GET of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    SlowDown,
    Internal,
    Delay(Duration),
    /// Send half the body, then close the connection.
    Truncate,
    /// Send this many bytes of the body (flushed to the client), then break the connection:
    /// a body that fails after the client has read part of it.
    BreakAfter(usize),
    /// [`Fault::BreakAfter`], and the object is changed (a byte appended) before the client
    /// can ask for the rest.
    BreakAfterAndChange(usize),
    /// Close the connection without an answer.
    Drop,
}

/// What to do to the next request that matches (any operation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReqFault {
    /// Answer with this HTTP status and its S3 error, without doing the request.
    Status(u16),
    /// Do the request, then answer with this status and its S3 error.
    After(u16),
    /// Wait this long before doing the request (the client gives up first).
    Hang(Duration),
}

fn s3_error_response(status: u16) -> http::Response<s3s::Body> {
    let code = match status {
        403 => "AccessDenied",
        404 => "NoSuchKey",
        503 => "SlowDown",
        _ => "InternalError",
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test server</Message></Error>"
    );
    let mut resp = http::Response::new(s3s::Body::from(body));
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    resp
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The `If-Match` header, if any.
    pub if_match: Option<String>,
}

impl Logged {
    /// A ListObjectsV2 request's `prefix` (URL-decoded), when it is one.
    pub fn list_prefix(&self) -> Option<String> {
        if self.method != "GET" || !self.query.contains("list-type=2") {
            return None;
        }
        let prefix = self
            .query
            .split('&')
            .find_map(|kv| kv.strip_prefix("prefix="))
            .unwrap_or("");
        Some(prefix.replace("%2F", "/"))
    }

    pub fn is_delimited(&self) -> bool {
        self.query.contains("delimiter=")
    }

    /// A GetObject request's key (path-style `/bucket/key`).
    pub fn get_key(&self) -> Option<&str> {
        if self.method != "GET"
            || !self.query.is_empty() && !self.query.starts_with("x-id=GetObject")
        {
            return None;
        }
        let rest = self.path.strip_prefix('/')?;
        rest.split_once('/')
            .map(|(_, key)| key)
            .filter(|k| !k.is_empty())
    }
}

/// Request faults planned: (method, text the `path?query` contains, faults in order).
type RequestFaults = Vec<(String, String, VecDeque<ReqFault>)>;

#[derive(Default)]
struct Shared {
    faults: Mutex<HashMap<String, VecDeque<Fault>>>,
    request_faults: Mutex<RequestFaults>,
    log: Mutex<Vec<Logged>>,
    /// s3s-fs checks `If-None-Match` and then writes; S3 does both at once. Conditional PUTs
    /// are served one at a time so the test server is as atomic as S3.
    conditional: tokio::sync::Mutex<()>,
    /// Hold conditional PUTs until this many requests listing a `_keytrail/manifest/` prefix
    /// were seen (to make concurrent writers start from the same manifest).
    gate: Mutex<usize>,
}

impl Shared {
    fn manifest_listings(&self) -> usize {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| {
                l.list_prefix()
                    .is_some_and(|p| p.ends_with("_keytrail/manifest/"))
            })
            .count()
    }
}

impl Shared {
    /// Take the next fault planned for `key` if `pick` wants it.
    fn take(&self, key: &str, pick: impl Fn(Fault) -> bool) -> Option<Fault> {
        let mut faults = self.faults.lock().expect("faults");
        let queue = faults.get_mut(key)?;
        if queue.front().is_some_and(|f| pick(*f)) {
            queue.pop_front()
        } else {
            None
        }
    }
}

struct Access(Arc<Shared>, PathBuf);

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        match cx.credentials() {
            Some(c) if c.access_key == ACCESS_KEY => Ok(()),
            _ => Err(s3_error!(AccessDenied, "signed requests only")),
        }
    }

    async fn get_object(&self, req: &mut S3Request<GetObjectInput>) -> S3Result<()> {
        if let Some(ETagCondition::ETag(want)) = &req.input.if_match {
            let path = self.1.join(&req.input.bucket).join(&req.input.key);
            if let Ok(bytes) = std::fs::read(path) {
                let have = format!("{:x}", <md5::Md5 as md5::Digest>::digest(&bytes));
                if want.value() != have {
                    return Err(s3_error!(PreconditionFailed, "the ETag differs"));
                }
            }
        }
        let fault = self.0.take(&req.input.key, |f| {
            matches!(f, Fault::SlowDown | Fault::Internal | Fault::Delay(_))
        });
        match fault {
            Some(Fault::SlowDown) => Err(s3_error!(SlowDown, "Please reduce your request rate.")),
            Some(Fault::Internal) => Err(s3_error!(
                InternalError,
                "We encountered an internal error."
            )),
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// A running server; it stops when dropped.
pub struct S3Server {
    pub endpoint: String,
    pub root: PathBuf,
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

/// Why the test server broke a connection.
#[derive(Debug)]
struct Broken(String);

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Broken {}

impl S3Server {
    pub fn start() -> S3Server {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().to_path_buf();
        let shared = Arc::new(Shared::default());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let fs = s3s_fs::FileSystem::new(&root).expect("s3s-fs");
        let mut b = s3s::service::S3ServiceBuilder::new(fs);
        b.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        b.set_access(Access(Arc::clone(&shared), root.clone()));
        let service = b.build();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(SocketAddr::from((
                [127, 0, 0, 1],
                0,
            ))))
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("address");
        let s = Arc::clone(&shared);
        let served = root.clone();
        rt.spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let (service, s, root) = (service.clone(), Arc::clone(&s), served.clone());
                let handler =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (service, s, root) = (service.clone(), Arc::clone(&s), root.clone());
                        async move { handle(service, s, &root, req).await }
                    });
                let conn = http
                    .serve_connection(TokioIo::new(socket), handler)
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        S3Server {
            endpoint: format!("http://{addr}"),
            root,
            shared,
            rt: Some(rt),
            _dir: dir,
        }
    }

    /// A bucket's folder (created).
    pub fn bucket(&self, name: &str) -> PathBuf {
        let p = self.root.join(name);
        std::fs::create_dir_all(&p).expect("bucket");
        p
    }

    /// Put a file into a bucket (through the file system s3s-fs serves).
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let p = self.bucket(bucket).join(key);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("folders");
        std::fs::write(p, bytes).expect("write");
    }

    /// Copy a local tree into a bucket under `prefix`.
    pub fn put_tree(&self, bucket: &str, prefix: &str, from: &Path) {
        crate::util::copy_tree(from, &self.bucket(bucket).join(prefix));
    }

    /// Plan faults for the next GETs of `key`, in order.
    pub fn fault(&self, key: &str, faults: &[Fault]) {
        self.shared
            .faults
            .lock()
            .expect("faults")
            .entry(key.to_owned())
            .or_default()
            .extend(faults.iter().copied());
    }

    /// Plan faults for the next requests of `method` whose `path?query` contains `part`
    /// (`/bucket/key`, `list-type=2`, `partNumber=`, ...), in order.
    pub fn fault_requests(&self, method: &str, part: &str, faults: &[ReqFault]) {
        self.shared.request_faults.lock().expect("faults").push((
            method.to_owned(),
            part.to_owned(),
            faults.iter().copied().collect(),
        ));
    }

    /// Request faults planned but not used.
    pub fn unused_request_faults(&self) -> usize {
        self.shared
            .request_faults
            .lock()
            .expect("faults")
            .iter()
            .map(|(_, _, q)| q.len())
            .sum()
    }

    /// Forget every planned fault (the server recovers).
    pub fn clear_faults(&self) {
        self.shared.faults.lock().expect("faults").clear();
        self.shared.request_faults.lock().expect("faults").clear();
    }

    /// Faults planned but not used.
    pub fn unused_faults(&self) -> usize {
        self.shared
            .faults
            .lock()
            .expect("faults")
            .values()
            .map(VecDeque::len)
            .sum()
    }

    /// Hold conditional PUTs (commit records) until `n` manifest listings were seen, or 20 s.
    pub fn gate_commits_until_listings(&self, n: usize) {
        *self.shared.gate.lock().expect("gate") = n;
    }

    /// Every request so far; the log is emptied.
    pub fn take_log(&self) -> Vec<Logged> {
        std::mem::take(&mut *self.shared.log.lock().expect("log"))
    }

    /// An SDK client for this server, built explicitly: static credentials, a region, the
    /// endpoint and path-style addressing, so nothing ever asks instance metadata.
    pub fn client(&self, opts: &keytrail_ingest::s3::S3Options) -> aws_sdk_s3::Client {
        let (timeouts, retries) = keytrail_ingest::s3::client_settings(opts);
        let conf = aws_sdk_s3::config::Builder::new()
            .http_client(keytrail_ingest::s3::http_client())
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(REGION))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                ACCESS_KEY,
                SECRET_KEY,
                None,
                None,
                "keytrail-tests",
            ))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .timeout_config(timeouts)
            .retry_config(retries)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Log the request, apply the connection-level faults, otherwise let s3s answer.
async fn handle(
    service: s3s::service::S3Service,
    s: Arc<Shared>,
    root: &Path,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<s3s::Body>, Broken> {
    let logged = Logged {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().unwrap_or("").to_owned(),
        range: header(&req, http::header::RANGE),
        if_match: header(&req, http::header::IF_MATCH),
    };
    let key = logged.get_key().map(str::to_owned);
    // The file s3s-fs serves for a GET (path-style `/bucket/key`).
    let file = key
        .as_ref()
        .map(|_| root.join(logged.path.trim_start_matches('/')));
    let request_fault = {
        // A bucket's path may end in `/` (`/bucket/?list-type=2`): match without it.
        let target = format!("{}?{}", logged.path.trim_end_matches('/'), logged.query);
        let mut planned = s.request_faults.lock().expect("faults");
        planned
            .iter_mut()
            .find(|(m, part, q)| {
                *m == logged.method && target.contains(part.as_str()) && !q.is_empty()
            })
            .and_then(|(_, _, q)| q.pop_front())
    };
    let conditional_put = logged.method == "PUT" && req.headers().contains_key("if-none-match");
    let commit_record = conditional_put && logged.path.contains("_keytrail/manifest/");
    s.log.lock().expect("log").push(logged);
    let _one_at_a_time = if conditional_put {
        let wait_for = if commit_record {
            *s.gate.lock().expect("gate")
        } else {
            0
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while s.manifest_listings() < wait_for && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(s.conditional.lock().await)
    } else {
        None
    };
    match request_fault {
        Some(ReqFault::Status(code)) => return Ok(s3_error_response(code)),
        Some(ReqFault::Hang(d)) => tokio::time::sleep(d).await,
        Some(ReqFault::After(code)) => {
            let done = service
                .call(req.map(s3s::Body::from))
                .await
                .map_err(|e| Broken(format!("{e:?}")))?;
            // Read the answer through (the work is done), then say it failed.
            let _ = http_body_util::BodyExt::collect(done.into_body()).await;
            return Ok(s3_error_response(code));
        }
        None => {}
    }
    let fault = key.as_deref().and_then(|k| {
        s.take(k, |f| {
            matches!(
                f,
                Fault::Truncate
                    | Fault::Drop
                    | Fault::BreakAfter(_)
                    | Fault::BreakAfterAndChange(_)
            )
        })
    });
    if fault == Some(Fault::Drop) {
        return Err(Broken("dropping the connection".into()));
    }
    let resp = service
        .call(req.map(s3s::Body::from))
        .await
        .map_err(|e| Broken(format!("{e:?}")))?;
    let sent = match fault {
        Some(Fault::Truncate) => None,
        Some(Fault::BreakAfter(n) | Fault::BreakAfterAndChange(n)) => Some(n),
        _ => return Ok(resp),
    };
    let (parts, body) = resp.into_parts();
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .map_err(|e| Broken(e.to_string()))?
        .to_bytes();
    let Some(sent) = sent else {
        // Keep the promised Content-Length, send half: the connection closes short.
        let half = bytes.slice(..bytes.len() / 2);
        return Ok(http::Response::from_parts(parts, s3s::Body::from(half)));
    };
    if let (Some(Fault::BreakAfterAndChange(_)), Some(path)) = (fault, &file) {
        let mut changed = std::fs::read(path).map_err(|e| Broken(e.to_string()))?;
        changed.push(b'\n');
        std::fs::write(path, changed).map_err(|e| Broken(e.to_string()))?;
    }
    // Send the first `sent` bytes in frames, give the client time to read them, then fail
    // the body: hyper resets the connection mid-body.
    let head = bytes.slice(..sent.min(bytes.len()));
    let frames: Vec<Result<hyper::body::Frame<hyper::body::Bytes>, Broken>> = head
        .chunks(16 << 10)
        .map(|c| Ok(hyper::body::Frame::data(head.slice_ref(c))))
        .collect();
    let broken = futures::stream::once(async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Err(Broken("breaking the body off".into()))
    });
    let stream = futures::StreamExt::chain(futures::stream::iter(frames), broken);
    let body = s3s::Body::http_body_unsync(http_body_util::StreamBody::new(stream));
    Ok(http::Response::from_parts(parts, body))
}

/// A request header's value, if present and text.
fn header<B>(req: &http::Request<B>, name: http::header::HeaderName) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
