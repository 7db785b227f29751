//! Amazon SQS: long-polling, deleting, and holding messages invisible while their batch is
//! read.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageSystemAttributeName, QueueAttributeName,
};
use keytrail_ingest::s3::S3Options;

use crate::error::FollowError;

/// SQS's longest visibility timeout: 12 hours.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
/// SQS's longest long-poll wait.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// One message received.
#[derive(Clone, Debug)]
pub struct Received {
    pub id: String,
    pub receipt: String,
    pub body: String,
    /// When SQS received it (ms since the epoch, UTC).
    pub sent: Option<i64>,
    /// How many times it was received, this time included.
    pub receives: u32,
}

/// The region in a queue URL (`https://sqs.us-east-1.amazonaws.com/…`,
/// `https://us-east-1.queue.amazonaws.com/…`), when it has one.
pub fn region_of(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?.split(['/', ':']).next()?;
    let parts: Vec<&str> = host.split('.').collect();
    let region = match parts.as_slice() {
        ["sqs", region, ..] => region,
        [region, "queue", ..] => region,
        _ => return None,
    };
    (region.contains('-')
        && region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    .then(|| (*region).to_owned())
}

/// Build an SQS client as the S3 client is built (credentials, region, timeouts, retries),
/// with the region of the queue URL unless `--region` names one, and `endpoint` for an
/// SQS-compatible service.
pub async fn connect(opts: &S3Options, endpoint: Option<&str>, queue_url: &str) -> Client {
    let mut opts = opts.clone();
    if opts.region.is_none() {
        opts.region = region_of(queue_url);
    }
    let shared = keytrail_ingest::s3::sdk_config(&opts).await;
    let mut b = aws_sdk_sqs::config::Builder::from(&shared);
    if let Some(url) = endpoint {
        b = b.endpoint_url(url);
    }
    Client::from_conf(b.build())
}

/// A queue.
#[derive(Clone, Debug)]
pub struct Queue {
    client: Client,
    url: String,
}

fn whole_seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().min(MAX_VISIBILITY.as_secs())).unwrap_or(i32::MAX)
}

impl Queue {
    pub fn new(client: Client, url: impl Into<String>) -> Queue {
        Queue {
            client,
            url: url.into(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn error(&self, what: &str, e: impl std::error::Error) -> FollowError {
        FollowError::Queue {
            queue: self.url.clone(),
            reason: format!("{what}: {}", DisplayErrorContext(e)),
        }
    }

    /// Messages waiting, as SQS approximates it (`ApproximateNumberOfMessages`); also checks that
    /// the queue exists and may be read.
    pub async fn waiting(&self) -> Result<Option<u64>, FollowError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| self.error("cannot read the queue's attributes", e))?;
        Ok(out
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|n| n.parse().ok()))
    }

    /// Up to 10 messages, waiting up to `wait` (whole seconds; 0 returns at once), each hidden
    /// from other receivers for `visibility`.
    pub async fn receive(
        &self,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Received>, FollowError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(whole_seconds(wait.min(MAX_WAIT)))
            .visibility_timeout(whole_seconds(visibility).max(1))
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| self.error("cannot receive", e))?;
        let mut got = Vec::new();
        for m in out.messages() {
            let (Some(id), Some(receipt)) = (m.message_id(), m.receipt_handle()) else {
                continue;
            };
            let attr = |name: MessageSystemAttributeName| {
                m.attributes()
                    .and_then(|a| a.get(&name))
                    .and_then(|v| v.parse::<i64>().ok())
            };
            got.push(Received {
                id: id.to_owned(),
                receipt: receipt.to_owned(),
                body: m.body().unwrap_or_default().to_owned(),
                sent: attr(MessageSystemAttributeName::SentTimestamp),
                receives: attr(MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(1),
            });
        }
        Ok(got)
    }

    /// Delete messages by receipt handle; returns how many SQS refused (they are received
    /// again later, and their objects are then found in the manifest).
    pub async fn delete(&self, receipts: &[String]) -> Result<usize, FollowError> {
        let mut refused = 0;
        for chunk in receipts.chunks(10) {
            let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .build()
                        .ok()
                })
                .collect();
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| self.error("cannot delete messages", e))?;
            for f in out.failed() {
                tracing::warn!(queue = %self.url, code = f.code(), reason = f.message().unwrap_or_default(), "SQS did not delete a message; it will be received again and its objects skipped");
                refused += 1;
            }
        }
        Ok(refused)
    }

    /// Set the visibility timeout of messages (by receipt handle, with a timeout each).
    pub async fn set_visibility(&self, entries: &[(String, Duration)]) -> Result<(), FollowError> {
        for chunk in entries.chunks(10) {
            let batch: Vec<ChangeMessageVisibilityBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, (r, d))| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .visibility_timeout(whole_seconds(*d))
                        .build()
                        .ok()
                })
                .collect();
            let out = self
                .client
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(batch))
                .send()
                .await
                .map_err(|e| self.error("cannot change the visibility of messages", e))?;
            for f in out.failed() {
                tracing::debug!(queue = %self.url, code = f.code(), "SQS did not change a message's visibility");
            }
        }
        Ok(())
    }
}

/// Keeps a batch's messages invisible while it is read: every third of the visibility timeout,
/// their timeout is set again. Dropping it stops.
pub struct Heartbeat {
    receipts: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    pub fn start(rt: &tokio::runtime::Handle, queue: Queue, visibility: Duration) -> Heartbeat {
        let receipts: Arc<Mutex<Vec<String>>> = Arc::default();
        let held = Arc::clone(&receipts);
        let period = (visibility / 3).max(Duration::from_millis(500));
        let task = rt.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let entries: Vec<(String, Duration)> = held
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .iter()
                    .map(|r| (r.clone(), visibility))
                    .collect();
                if let Err(e) = queue.set_visibility(&entries).await {
                    tracing::warn!("could not extend the batch's visibility timeout: {e}");
                }
            }
        });
        Heartbeat { receipts, task }
    }

    /// Hold these messages too.
    pub fn add(&self, receipts: impl IntoIterator<Item = String>) {
        self.receipts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(receipts);
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long a message whose objects could not be read (or that is not understood) stays
/// hidden before it is received again: the visibility timeout, doubled for each receive, at
/// most 12 hours. The queue's redrive policy moves it aside after its maximum receives.
pub fn backoff(visibility: Duration, receives: u32) -> Duration {
    let doublings = receives.saturating_sub(1).min(20);
    visibility
        .max(Duration::from_secs(1))
        .saturating_mul(1 << doublings)
        .min(MAX_VISIBILITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_of_queue_urls() {
        assert_eq!(
            region_of("https://sqs.eu-west-1.amazonaws.com/111122223333/trail").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region_of("https://us-east-2.queue.amazonaws.com/111122223333/trail").as_deref(),
            Some("us-east-2")
        );
        assert_eq!(region_of("http://127.0.0.1:4566/000000000000/q"), None);
        assert_eq!(region_of("http://localhost:9324/queue/q"), None);
    }

    #[test]
    fn backoff_doubles_up_to_twelve_hours() {
        let v = Duration::from_secs(30);
        assert_eq!(backoff(v, 1), Duration::from_secs(30));
        assert_eq!(backoff(v, 2), Duration::from_secs(60));
        assert_eq!(backoff(v, 4), Duration::from_secs(240));
        assert_eq!(backoff(v, 40), MAX_VISIBILITY);
    }
}
