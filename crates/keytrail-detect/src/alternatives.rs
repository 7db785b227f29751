//! `keytrail report alternatives`: AWS's advice to replace long-term access keys, applied to
//! each long-term key (AKIA…) of the lake by how it is actually used.
//!
//! - Called from inside AWS (a Lambda or ECS runtime or an Amazon Linux host in its user
//!   agent, an AWS service calling for it, a private address or a VPC endpoint) → an **IAM
//!   role** (instance profile, Lambda execution role, ECS task role).
//! - A person (the AWS CLI, the console, IDE toolkits, PowerShell) from changing networks →
//!   **IAM Identity Center** (short-lived credentials from `aws sso login`).
//! - A steady program (an SDK, Terraform, …) from a few fixed public networks, on many days →
//!   **IAM Roles Anywhere** (X.509 certificates for workloads outside AWS).
//!
//! "Inside AWS" is judged from the user agent, the address kind and AWS's published address
//! ranges (`keytrail_model::awsip`): a program on EC2 calling from its public address with a
//! plain user agent is inside AWS. Each recommendation lists the evidence it rests on.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde::Serialize;

use super::detectors::client_family;
use super::scan::{millis, texts};
use super::{DetectError, block_on};
use keytrail_engine::{LakeSession, SessionOptions};
use keytrail_model::awsip::AwsRanges;
use keytrail_rules::net::{self, Origin};

/// What should replace a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recommendation {
    IamRole,
    IdentityCenter,
    RolesAnywhere,
    /// Too little or too mixed use to say; the evidence is shown.
    Review,
}

impl Recommendation {
    pub fn as_str(self) -> &'static str {
        match self {
            Recommendation::IamRole => "IAM role",
            Recommendation::IdentityCenter => "IAM Identity Center",
            Recommendation::RolesAnywhere => "IAM Roles Anywhere",
            Recommendation::Review => "review",
        }
    }
}

/// One long-term key, how it is used, and what should replace it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyAdvice {
    pub key: String,
    pub principal: Option<String>,
    /// `aws-hosted`, `person`, `steady-program`, or `unclear`.
    pub usage: &'static str,
    pub recommendation: Recommendation,
    pub why: String,
    pub events: u64,
    pub days: usize,
    /// Distinct public /24 (IPv6 /64) networks.
    pub networks: usize,
    pub clients: Vec<String>,
    /// Up to five addresses the key was used from.
    pub addresses: Vec<String>,
    pub first: String,
    pub last: String,
}

#[derive(Default)]
struct Acc {
    principal: Option<String>,
    events: u64,
    days: BTreeSet<i32>,
    networks: BTreeSet<String>,
    addresses: BTreeSet<String>,
    clients: BTreeMap<String, u64>,
    aws_markers: BTreeMap<&'static str, u64>,
    person_events: u64,
    first: i64,
    last: i64,
}

const PEOPLE: [&str; 8] = [
    "aws-cli",
    "console.amazonaws.com",
    "signin.amazonaws.com",
    "aws-toolkit-vscode",
    "aws-toolkit-jetbrains",
    "aws-powershell",
    "awspowershell",
    "cloudshell",
];

fn aws_marker(
    ua: &str,
    ip: &str,
    vpce: bool,
    invoked_by: bool,
    ranges: &AwsRanges,
) -> Option<&'static str> {
    if invoked_by {
        return Some("an AWS service called on its behalf");
    }
    if vpce {
        return Some("calls through a VPC endpoint");
    }
    if ua.contains("exec-env/AWS_Lambda") {
        return Some("Lambda runtime in the user agent");
    }
    if ua.contains("exec-env/AWS_ECS") {
        return Some("ECS runtime in the user agent");
    }
    if ua.contains(".amzn2") || ua.contains(".amzn.20") || ua.contains("amzn2.") {
        return Some("Amazon Linux host in the user agent");
    }
    match net::origin(ip) {
        Origin::Private => Some("private (VPC) source address"),
        Origin::Service => Some("an AWS service address"),
        Origin::Public(_) if ranges.contains(ip) => {
            Some("an AWS address (in AWS's published ranges)")
        }
        _ => None,
    }
}

fn is_person(ua: &str) -> bool {
    let l = ua.to_ascii_lowercase();
    PEOPLE
        .iter()
        .any(|p| l.starts_with(p) || l.contains(&format!("[{p}")))
        || l.contains("console.amazonaws.com")
        || l == "aws internal"
}

/// Classify every long-term key of the events table (events at or after `since`).
pub async fn advise_in(
    ctx: &SessionContext,
    since: Option<i64>,
    ranges: &AwsRanges,
) -> Result<Vec<KeyAdvice>, DetectError> {
    let window = super::scan::window_sql(since, None, true);
    let sql = format!(
        "SELECT accesskeyid AS k, eventtime AS t, sourceipaddress AS ip, useragent AS ua, \
         get_field(useridentity, 'arn') AS arn, \
         CAST(get_field(useridentity, 'invokedby') IS NOT NULL AS VARCHAR) AS invoked, \
         CAST(vpcendpointid IS NOT NULL AS VARCHAR) AS vpce \
         FROM events WHERE starts_with(accesskeyid, 'AKIA') AND {window}"
    );
    let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
    let mut by: BTreeMap<String, Acc> = BTreeMap::new();
    while let Some(b) = stream.next().await {
        let b = b?;
        let (keys, ips, uas, arns, invoked, vpce) = (
            texts(&b, "k")?,
            texts(&b, "ip")?,
            texts(&b, "ua")?,
            texts(&b, "arn")?,
            texts(&b, "invoked")?,
            texts(&b, "vpce")?,
        );
        let t = millis(&b, "t")?;
        for i in 0..b.num_rows() {
            let Some(k) = keys[i].clone() else { continue };
            let a = by.entry(k).or_insert_with(|| Acc {
                first: i64::MAX,
                last: i64::MIN,
                ..Acc::default()
            });
            let (ip, ua) = (
                ips[i].as_deref().unwrap_or_default(),
                uas[i].as_deref().unwrap_or_default(),
            );
            a.events += 1;
            a.first = a.first.min(t[i]);
            a.last = a.last.max(t[i]);
            a.days.insert(keytrail_model::time::day_of(t[i]));
            if a.principal.is_none() {
                a.principal = arns[i].clone();
            }
            if let Origin::Public(addr) = net::origin(ip) {
                a.networks.insert(net::network(addr, 24, 64));
                if a.addresses.len() < 5 {
                    a.addresses.insert(ip.to_owned());
                }
            }
            if let Some(c) = client_family(ua) {
                *a.clients.entry(c).or_default() += 1;
            }
            if let Some(m) = aws_marker(
                ua,
                ip,
                vpce[i].as_deref() == Some("true"),
                invoked[i].as_deref() == Some("true"),
                ranges,
            ) {
                *a.aws_markers.entry(m).or_default() += 1;
            }
            if is_person(ua) {
                a.person_events += 1;
            }
        }
    }
    let mut out: Vec<KeyAdvice> = by.into_iter().map(|(k, a)| classify(k, a)).collect();
    out.sort_by(|a, b| {
        (a.recommendation, std::cmp::Reverse(a.events), &a.key).cmp(&(
            b.recommendation,
            std::cmp::Reverse(b.events),
            &b.key,
        ))
    });
    Ok(out)
}

fn pct(n: u64, of: u64) -> u64 {
    (n * 100).checked_div(of).unwrap_or(0)
}

fn classify(key: String, a: Acc) -> KeyAdvice {
    let aws: u64 = a.aws_markers.values().sum();
    let mut clients: Vec<(String, u64)> = a.clients.clone().into_iter().collect();
    clients.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    let client_text = clients
        .iter()
        .take(3)
        .map(|(c, n)| format!("{c} ({n})"))
        .collect::<Vec<_>>()
        .join(", ");
    let days = a.days.len();
    let nets = a.networks.len();
    let (usage, rec, why) = if pct(aws, a.events) >= 50 {
        let marks = a
            .aws_markers
            .iter()
            .map(|(m, n)| format!("{m} ({n} events)"))
            .collect::<Vec<_>>()
            .join("; ");
        (
            "aws-hosted",
            Recommendation::IamRole,
            format!(
                "{}% of its {} events run inside AWS: {marks}; give the workload a role (instance profile, Lambda execution role or ECS task role) and delete the key",
                pct(aws, a.events),
                a.events
            ),
        )
    } else if pct(a.person_events, a.events) >= 50 {
        (
            "person",
            Recommendation::IdentityCenter,
            format!(
                "{}% of its {} events come from people's tools ({client_text}) from {nets} network(s) on {days} day(s); sign the person in with IAM Identity Center (aws sso login) and delete the key",
                pct(a.person_events, a.events),
                a.events
            ),
        )
    } else if days >= 3 && (1..=2).contains(&nets) && pct(a.person_events, a.events) < 50 {
        (
            "steady-program",
            Recommendation::RolesAnywhere,
            format!(
                "a program ({client_text}) calling on {days} days from {nets} fixed network(s) outside AWS; give it a certificate and IAM Roles Anywhere and delete the key"
            ),
        )
    } else {
        (
            "unclear",
            Recommendation::Review,
            format!(
                "{} events on {days} day(s) from {nets} network(s) by {client_text}: not enough to say; review who uses it",
                a.events
            ),
        )
    };
    KeyAdvice {
        key,
        principal: a.principal,
        usage,
        recommendation: rec,
        why,
        events: a.events,
        days,
        networks: nets,
        clients: clients.into_iter().map(|(c, _)| c).collect(),
        addresses: a.addresses.into_iter().collect(),
        first: keytrail_model::time::format_millis(a.first),
        last: keytrail_model::time::format_millis(a.last),
    }
}

/// Classify the long-term keys of the lake at `lake` (a directory, or a lake in S3).
pub fn advise(
    lake: impl Into<keytrail_engine::LakeLocation>,
    since: Option<i64>,
    threads: usize,
    ranges: &AwsRanges,
) -> Result<Vec<KeyAdvice>, DetectError> {
    block_on(threads, async {
        let session = LakeSession::open(
            lake,
            &SessionOptions {
                threads,
                ..SessionOptions::default()
            },
        )
        .await?;
        advise_in(session.context(), since, ranges).await
    })
}

/// The advice as a record batch.
pub fn batch(
    rows: &[KeyAdvice],
) -> Result<(arrow::datatypes::SchemaRef, arrow::array::RecordBatch), DetectError> {
    use arrow::array::{ArrayRef, StringArray, UInt64Array};
    use std::sync::Arc;
    let s = |f: &dyn Fn(&KeyAdvice) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("key", s(&|r| Some(r.key.clone()))),
        ("principal", s(&|r| r.principal.clone())),
        ("usage", s(&|r| Some(r.usage.to_owned()))),
        (
            "recommendation",
            s(&|r| Some(r.recommendation.as_str().to_owned())),
        ),
        (
            "events",
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.events))),
        ),
        (
            "days",
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| r.days as u64),
            )),
        ),
        (
            "networks",
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| r.networks as u64),
            )),
        ),
        ("clients", s(&|r| Some(r.clients.join(" ")))),
        ("addresses", s(&|r| Some(r.addresses.join(" ")))),
        ("first", s(&|r| Some(r.first.clone()))),
        ("last", s(&|r| Some(r.last.clone()))),
        ("why", s(&|r| Some(r.why.clone()))),
    ];
    let schema = Arc::new(arrow::datatypes::Schema::new(
        cols.iter()
            .map(|(n, c)| arrow::datatypes::Field::new(*n, c.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let b = arrow::array::RecordBatch::try_new(
        Arc::clone(&schema),
        cols.into_iter().map(|(_, c)| c).collect(),
    )?;
    Ok((schema, b))
}
