//! A local S3 endpoint for the S3 benchmark: `s3s-fs` serving a folder (each sub-folder a
//! bucket) on 127.0.0.1, with a fixed delay before every answer to stand in for the tens of
//! milliseconds a request to a real S3 region takes.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use s3s::S3Result;
use s3s::access::{S3Access, S3AccessContext};

pub const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
pub const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

struct Latency(Duration);

#[async_trait::async_trait]
impl S3Access for Latency {
    async fn check(&self, _cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        tokio::time::sleep(self.0).await;
        Ok(())
    }
}

/// Serve `root` on 127.0.0.1 from `rt`; the endpoint URL.
pub fn serve(
    rt: &tokio::runtime::Runtime,
    root: &Path,
    latency: Duration,
) -> anyhow::Result<String> {
    let fs = s3s_fs::FileSystem::new(root).map_err(|e| anyhow::anyhow!("s3s-fs: {e:?}"))?;
    let mut b = s3s::service::S3ServiceBuilder::new(fs);
    b.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    b.set_access(Latency(latency));
    let service = b.build();
    let listener = rt.block_on(tokio::net::TcpListener::bind(SocketAddr::from((
        [127, 0, 0, 1],
        0,
    ))))?;
    let addr = listener.local_addr()?;
    rt.spawn(async move {
        let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let conn = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    Ok(format!("http://{addr}"))
}

/// An SDK client for the endpoint: static credentials, path-style.
pub fn client(endpoint: &str, opts: &keytrail_ingest::s3::S3Options) -> aws_sdk_s3::Client {
    let (timeouts, retries) = keytrail_ingest::s3::client_settings(opts);
    let conf = aws_sdk_s3::config::Builder::new()
        .http_client(keytrail_ingest::s3::http_client())
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            None,
            None,
            "keytrail-bench",
        ))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .timeout_config(timeouts)
        .retry_config(retries)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}
