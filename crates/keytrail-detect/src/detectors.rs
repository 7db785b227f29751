//! Stateful detectors: what needs a key's history rather than one event. They read every
//! event made with an access key, sorted by key then time (one streaming query), plus the
//! events that change or mint keys (`UpdateAccessKey`, `DeleteAccessKey`, `GetSessionToken`,
//! `GetFederationToken`, `AssumeRole`). Events AWS services make on their own behalf are
//! passed over. Each detector is described in `docs/rules.md` with its thresholds.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use datafusion::functions::core::expr_fn::{coalesce, get_field};
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::prelude::SessionContext;
use datafusion::prelude::{col, lit};
use futures::StreamExt;
use keytrail_model::Table;
use keytrail_model::schema::col as c;

use super::kept::Kept;
use super::scan::{millis, texts};
use super::{DetectError, Finding, Source};
use keytrail_model::KeyStatus;
use keytrail_model::awsip::AwsRanges;
pub use keytrail_model::facts::principal_of;
use keytrail_model::facts::role_session;
use keytrail_rules::net::{self, Origin};
use keytrail_rules::rule::Severity;

/// Thresholds of the detectors.
#[derive(Clone, Debug)]
pub struct Config {
    /// A key's first this-many milliseconds of activity only teach its baseline.
    pub warmup_ms: i64,
    /// Addresses are compared by network: this IPv4 prefix length …
    pub new_v4_prefix: u8,
    /// … and this IPv6 one.
    pub new_v6_prefix: u8,
    /// A new network and a new client this close together make one finding.
    pub pair_ms: i64,
    pub denied_count: usize,
    pub denied_window_ms: i64,
    pub recon_window_ms: i64,
    pub recon_services: usize,
    pub recon_regions: usize,
    pub recon_names: usize,
    pub recon_new_names: usize,
    pub distant_window_ms: i64,
    /// Networks this far apart (IPv4 prefix length) count as distant.
    pub distant_v4_prefix: u8,
    pub distant_v6_prefix: u8,
    /// Most event IDs listed as evidence of one finding.
    pub evidence_cap: usize,
    /// Most events sorted at once: a larger lake is read in key ranges of about this many
    /// events, one sort each, to bound memory.
    pub max_sort_events: u64,
    /// AWS's published address ranges: whether workload credentials were used from outside
    /// AWS.
    pub aws_ranges: Arc<AwsRanges>,
    /// A workload's own first calls: the events of its credentials within this long of their
    /// first event (when no call carries the runtime's mark in its user agent).
    pub workload_home_ms: i64,
    /// A catalogued call the principal (the role, for role sessions; any of its keys) made
    /// successfully on this many earlier days within `routine_window_days` is routine for it
    /// (`kt-abused-call` at info); so is a rule finding (medium or lower) whose rule matched
    /// the principal on as many earlier days in the window. Its first call ever is not.
    pub routine_days: usize,
    /// How far back (in UTC days before the call's day) the earlier days are counted.
    pub routine_window_days: i32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            warmup_ms: 24 * 3_600_000,
            new_v4_prefix: 24,
            new_v6_prefix: 64,
            pair_ms: 3_600_000,
            denied_count: 15,
            denied_window_ms: 10 * 60_000,
            recon_window_ms: 10 * 60_000,
            recon_services: 5,
            recon_regions: 3,
            recon_names: 8,
            recon_new_names: 5,
            distant_window_ms: 30 * 60_000,
            distant_v4_prefix: 16,
            distant_v6_prefix: 32,
            evidence_cap: 50,
            max_sort_events: 1_000_000,
            aws_ranges: AwsRanges::bundled(),
            workload_home_ms: 10 * 60_000,
            routine_days: 1,
            routine_window_days: 90,
        }
    }
}

/// A detector, as `keytrail rules list` shows it.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct DetectorInfo {
    pub id: &'static str,
    pub title: &'static str,
    pub severity: Severity,
    pub category: &'static str,
    pub description: &'static str,
    /// ATT&CK tags.
    pub tags: &'static [&'static str],
}

pub const NEW_NETWORK: &str = "kt-new-source-network";
pub const NEW_CLIENT: &str = "kt-new-user-agent";
pub const NEW_REGION: &str = "kt-new-region";
pub const NEW_PAIR: &str = "kt-new-network-and-client";
pub const DENIED_BURST: &str = "kt-denied-burst";
pub const RECON_BURST: &str = "kt-recon-burst";
pub const TWO_NETWORKS: &str = "kt-distant-networks";
pub const INSTANCE_ELSEWHERE: &str = "kt-instance-credentials-elsewhere";
pub const WORKLOAD_OUTSIDE: &str = "kt-workload-credentials-outside";
pub const AFTER_DEACTIVATION: &str = "kt-key-used-after-deactivation";
pub const CHILD_AFTER_PARENT: &str = "kt-session-used-after-parent-deactivated";

pub const CATALOG: [DetectorInfo; 12] = [
    DetectorInfo {
        id: NEW_NETWORK,
        title: "Key used from a network it never used",
        severity: Severity::Info,
        category: "credential-use",
        description: "A public address in a /24 (IPv6: /64) the key had not used, after the key's first 24 hours (its warm-up).",
        tags: &["attack.initial-access", "attack.t1078.004"],
    },
    DetectorInfo {
        id: NEW_CLIENT,
        title: "Key used by a client it never used",
        severity: Severity::Info,
        category: "credential-use",
        description: "A user-agent family (the product before the first `/`: aws-cli, Boto3, Terraform, python-requests) the key had not used, after its warm-up.",
        tags: &["attack.initial-access", "attack.t1078.004"],
    },
    DetectorInfo {
        id: NEW_REGION,
        title: "Key used in a region it never used",
        severity: Severity::Info,
        category: "credential-use",
        description: "A region the key had not called, after its warm-up.",
        tags: &["attack.defense-evasion", "attack.t1535"],
    },
    DetectorInfo {
        id: NEW_PAIR,
        title: "Key used from a new network by a new client",
        severity: Severity::Medium,
        category: "credential-use",
        description: "A new network and a new client for the key within one hour of each other: someone else holding the key, more often than a change of habit.",
        tags: &["attack.initial-access", "attack.t1078.004"],
    },
    DetectorInfo {
        id: DENIED_BURST,
        title: "Burst of denied calls",
        severity: Severity::Medium,
        category: "recon",
        description: "15 or more calls denied (AccessDenied, UnauthorizedOperation, ...) within 10 minutes: probing what a key may do.",
        tags: &["attack.discovery", "attack.t1580", "attack.t1087.004"],
    },
    DetectorInfo {
        id: RECON_BURST,
        title: "Reconnaissance burst",
        severity: Severity::Medium,
        category: "recon",
        description: "Within 10 minutes, 8 or more distinct List/Describe/Get calls across 5 or more services (or 3 or more regions), 5 of them never made by the key before. Console browsing is not counted.",
        tags: &["attack.discovery", "attack.t1580", "attack.t1526"],
    },
    DetectorInfo {
        id: TWO_NETWORKS,
        title: "Key alternating between distant networks",
        severity: Severity::High,
        category: "credential-use",
        description: "Within 30 minutes the key alternates between two public networks that differ in their first 16 bits (IPv6: 32), each used at least twice: two parties holding one key.",
        tags: &["attack.initial-access", "attack.t1078.004"],
    },
    DetectorInfo {
        id: INSTANCE_ELSEWHERE,
        title: "EC2 instance credentials used elsewhere",
        severity: Severity::High,
        category: "credential-use",
        description: "Credentials of an instance role (ec2RoleDelivery in the session context, or a role session named after an instance) used from an address outside AWS's published ranges or one people's keys use (high), or from another AWS address than the instance's own (medium).",
        tags: &[
            "attack.credential-access",
            "attack.t1552.005",
            "attack.t1078.004",
        ],
    },
    DetectorInfo {
        id: WORKLOAD_OUTSIDE,
        title: "Lambda, ECS or CodeBuild credentials used outside their workload",
        severity: Severity::High,
        category: "credential-use",
        description: "Credentials a Lambda function, an ECS task or a CodeBuild build received, used by a client without the runtime's mark from an address outside AWS's published ranges or one people's keys use (high), or from an AWS network and with a client unlike the workload's own first calls (medium).",
        tags: &[
            "attack.credential-access",
            "attack.t1552",
            "attack.t1078.004",
        ],
    },
    DetectorInfo {
        id: AFTER_DEACTIVATION,
        title: "Key used after it was deactivated or deleted",
        severity: Severity::Critical,
        category: "credential-use",
        description: "An event made with a key after a successful UpdateAccessKey to Inactive or DeleteAccessKey of it (and before any reactivation).",
        tags: &["attack.persistence", "attack.t1078.004"],
    },
    DetectorInfo {
        id: CHILD_AFTER_PARENT,
        title: "Session credentials used after their parent key was deactivated",
        severity: Severity::High,
        category: "credential-use",
        description: "Temporary credentials minted with a long-term key (GetSessionToken, GetFederationToken, AssumeRole) used after that key was deactivated or deleted: they keep working until they expire.",
        tags: &["attack.persistence", "attack.t1550.001"],
    },
    DetectorInfo {
        id: super::catalog::ABUSED_CALL,
        title: "Call from the catalog of abused AWS API calls",
        severity: Severity::Low,
        category: "(the call's tactic)",
        description: "A call of TrailDiscover's catalog of API calls seen in attacks (not discovery alone): low when the principal (the role, for role sessions) has not made it successfully on an earlier day within 90 days, info when routine, medium when not routine and after denied attempts, or as the third persistence/escalation call within an hour; a denied attempt at a persistence, escalation, evasion, credential-access or impact call is low. Tagged with the call's tactics and techniques.",
        tags: &[],
    },
];

pub fn info(id: &str) -> Option<&'static DetectorInfo> {
    CATALOG.iter().find(|d| d.id == id)
}

/// One event of a key, as the detectors see it.
#[derive(Clone, Debug, Default)]
struct Ev {
    t: i64,
    id: String,
    src: String,
    name: String,
    region: Option<String>,
    ip: Option<String>,
    ua: Option<String>,
    readonly: bool,
    arn: Option<String>,
    ec2: bool,
    vpce: bool,
    svc: bool,
    account: Option<String>,
    /// The `denied` fact.
    denied: bool,
}

#[derive(Clone, Debug)]
struct Change {
    t: i64,
    status: KeyStatus,
    id: String,
    by: Option<String>,
}

#[derive(Clone, Debug)]
struct Minted {
    parent: String,
    how: String,
    t: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    Lambda,
    Ecs,
    CodeBuild,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Lambda => "a Lambda function",
            Workload::Ecs => "an ECS task",
            Workload::CodeBuild => "a CodeBuild build",
        }
    }
}

/// What the key-changing events say.
#[derive(Default)]
struct Lineage {
    changes: HashMap<String, Vec<Change>>,
    minted: HashMap<String, Minted>,
    workloads: HashMap<String, Workload>,
    /// Per principal (a role for its sessions): when it first made each call, and its first
    /// event. Temporary keys are short-lived; their principal's history is the baseline.
    principal_names: HashMap<(String, String), i64>,
    principal_first: HashMap<String, i64>,
}

/// The caller of an event as the detectors name principals: its ARN, else its principal ID.
pub(crate) const WHO: &str =
    "coalesce(get_field(useridentity, 'arn'), get_field(useridentity, 'principalid'))";

/// What a run made for some keys only (`keytrail follow`'s touched keys) reads beyond their
/// own events: every call their principals ([`principal_of`]) made, with any of their keys or
/// with none. A finding of a key depends on no other principal's calls.
#[derive(Debug)]
pub struct Scope {
    /// The keys whose findings are made.
    pub keys: BTreeSet<String>,
    /// The keys read one by one: `keys`, and the other sessions of the EC2 instances some of
    /// them are credentials of (the instance detector judges an instance's sessions together).
    read: BTreeSet<String>,
    /// Their principals; `?` stands for a caller named by neither ARN nor principal ID.
    principals: BTreeSet<String>,
    /// Every key those principals used (so the lake's key order and filters skip the rest).
    their_keys: BTreeSet<String>,
}

impl Scope {
    pub async fn of(ctx: &SessionContext, keys: &BTreeSet<String>) -> Result<Scope, DetectError> {
        let mut scope = Scope {
            keys: keys.clone(),
            read: keys.clone(),
            principals: BTreeSet::new(),
            their_keys: BTreeSet::new(),
        };
        if keys.is_empty() {
            return Ok(scope);
        }
        let sessions = format!(
            "SELECT DISTINCT accesskeyid AS k, {WHO} AS who, get_field(useridentity, 'arn') AS arn, \
             get_field(get_field(useridentity, 'sessioncontext'), 'ec2roledelivery') IS NOT NULL AS ec2 \
             FROM events WHERE accesskeyid IN"
        );
        let mut instances = BTreeSet::new();
        for s in Session::all(ctx, &format!("{sessions} ({})", quoted(keys))).await? {
            scope
                .principals
                .insert(s.who.as_deref().map_or("?", principal_of).to_owned());
            instances.extend(s.instance());
        }
        if scope.principals.is_empty() {
            return Ok(scope);
        }
        let sql = format!(
            "SELECT DISTINCT accesskeyid AS k FROM events WHERE accesskeyid IS NOT NULL AND {}",
            scope.of_principals()
        );
        for b in &ctx.sql(&sql).await?.collect().await? {
            scope
                .their_keys
                .extend(texts(b, "k")?.into_iter().flatten());
        }
        // The instances' other sessions, among their roles' keys.
        if !instances.is_empty() {
            let sql = format!("{sessions} ({})", quoted(&scope.their_keys));
            for s in Session::all(ctx, &sql).await? {
                if s.instance().is_some_and(|i| instances.contains(&i)) {
                    scope.read.extend(s.k);
                }
            }
        }
        Ok(scope)
    }

    /// Whether `principal` is one of the keys' principals.
    pub fn has(&self, principal: &str) -> bool {
        self.principals.contains(principal)
    }

    /// An SQL condition on `events`: a call of the keys' principals, made with one of their
    /// keys or (`keyless`) with none.
    pub fn sql(&self, keyless: bool) -> String {
        if self.principals.is_empty() {
            return "FALSE".to_owned();
        }
        let mut by = if self.their_keys.is_empty() {
            "FALSE".to_owned()
        } else {
            format!("accesskeyid IN ({})", quoted(&self.their_keys))
        };
        if keyless {
            by = format!("{by} OR accesskeyid IS NULL");
        }
        format!("({by}) AND {}", self.of_principals())
    }

    fn of_principals(&self) -> String {
        let quote = super::compile::quote;
        let mut any = vec![format!("{WHO} IN ({})", quoted(&self.principals))];
        if self.principals.contains("?") {
            any.push(format!("{WHO} IS NULL"));
        }
        // A role's sessions are `ROLE/session`: what starts with the role's ARN and `/`.
        any.extend(
            self.principals
                .iter()
                .filter(|a| a.contains(":assumed-role/"))
                .map(|a| format!("starts_with({WHO}, {})", quote(&format!("{a}/")))),
        );
        format!("({})", any.join(" OR "))
    }
}

/// A key's caller as [`Scope::of`] reads it.
#[derive(serde::Deserialize)]
struct Session {
    k: Option<String>,
    who: Option<String>,
    arn: Option<String>,
    ec2: Option<bool>,
}

impl Session {
    async fn all(ctx: &SessionContext, sql: &str) -> Result<Vec<Session>, DetectError> {
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(keytrail_engine::rows::from_batches::<Session>(&batches)?)
    }

    fn instance(&self) -> Option<String> {
        instance_of_session(self.arn.as_deref()?, self.ec2.unwrap_or(false))
    }
}

fn quoted(v: &BTreeSet<String>) -> String {
    v.iter()
        .map(|k| super::compile::quote(k))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Principals' first calls; with `scope`, those of its principals only (all that
/// [`recon_bursts`] asks of a key).
async fn principal_history(
    ctx: &SessionContext,
    l: &mut Lineage,
    scope: Option<&Scope>,
) -> Result<(), DetectError> {
    const ARN: &str = "get_field(useridentity, 'arn')";
    let only = scope.map_or(String::new(), |s| format!(" AND {}", s.sql(false)));
    let sql = format!(
        "SELECT {ARN} AS arn, eventname AS name, min(eventtime) AS t \
         FROM events WHERE accesskeyid IS NOT NULL AND NOT awsservice \
         AND {ARN} IS NOT NULL{only} GROUP BY 1, 2"
    );
    let batches = ctx.sql(&sql).await?.collect().await?;
    for b in &batches {
        let (arns, names, t) = (texts(b, "arn")?, texts(b, "name")?, millis(b, "t")?);
        for i in 0..b.num_rows() {
            let (Some(arn), Some(name)) = (&arns[i], &names[i]) else {
                continue;
            };
            let p = principal_of(arn).to_owned();
            let first = l.principal_first.entry(p.clone()).or_insert(t[i]);
            *first = (*first).min(t[i]);
            let e = l.principal_names.entry((p, name.clone())).or_insert(t[i]);
            *e = (*e).min(t[i]);
        }
    }
    Ok(())
}

/// A key lifecycle or minting event, as the fact columns give it.
#[derive(serde::Deserialize)]
struct LineageRow {
    t: i64,
    id: Option<String>,
    name: Option<String>,
    k: Option<String>,
    arn: Option<String>,
    target: Option<String>,
    status: Option<String>,
    minted: Option<String>,
    caller: Option<String>,
    svc: bool,
}

/// Keys' lifecycle and lineage from every event, and principals' first calls (with `scope`,
/// of its principals).
async fn lineage(ctx: &SessionContext, scope: Option<&Scope>) -> Result<Lineage, DetectError> {
    let sql = "SELECT eventtime AS t, eventid AS id, eventname AS name, accesskeyid AS k, \
         get_field(useridentity, 'arn') AS arn, targetkeyid AS target, keystatus AS status, \
         mintedkeyid AS minted, \
         coalesce(get_field(useridentity, 'invokedby'), sourceipaddress) AS caller, \
         awsservice AS svc \
         FROM events WHERE keystatus IS NOT NULL OR mintedkeyid IS NOT NULL";
    let batches = ctx.sql(sql).await?.collect().await?;
    let mut l = Lineage::default();
    for r in keytrail_engine::rows::from_batches::<LineageRow>(&batches)? {
        if let (Some(target), Some(status)) =
            (&r.target, r.status.as_deref().and_then(KeyStatus::parse))
        {
            l.changes.entry(target.clone()).or_default().push(Change {
                t: r.t,
                status,
                id: r.id.clone().unwrap_or_default(),
                by: r.arn.clone(),
            });
        }
        let Some(child) = r.minted else {
            continue;
        };
        if r.svc {
            let caller = r.caller.as_deref().unwrap_or_default();
            if caller.starts_with("lambda.") {
                l.workloads.insert(child, Workload::Lambda);
            } else if caller.starts_with("ecs-tasks.") || caller.starts_with("ecs.") {
                l.workloads.insert(child, Workload::Ecs);
            } else if caller.starts_with("codebuild.") {
                l.workloads.insert(child, Workload::CodeBuild);
            }
        } else if let Some(parent) = r.k {
            l.minted.insert(
                child,
                Minted {
                    parent,
                    how: r.name.unwrap_or_default(),
                    t: r.t,
                },
            );
        }
    }
    for v in l.changes.values_mut() {
        v.sort_by(|a, b| (a.t, &a.id).cmp(&(b.t, &b.id)));
    }
    principal_history(ctx, &mut l, scope).await?;
    Ok(l)
}

/// The user-agent family: the product before the first `/` of the first token.
pub fn client_family(ua: &str) -> Option<String> {
    let first = ua
        .trim()
        .trim_start_matches('[')
        .split([' ', ','])
        .next()
        .unwrap_or_default();
    let product = first
        .split('/')
        .next()
        .unwrap_or_default()
        .trim_end_matches(']');
    (!product.is_empty()).then(|| product.to_ascii_lowercase())
}

fn is_console(ua: Option<&str>) -> bool {
    ua.is_some_and(|u| {
        let l = u.to_ascii_lowercase();
        l.contains("console.amazonaws.com")
            || l.starts_with("console.")
            || l.contains("consolefrontend")
            || l == "aws internal"
            || l.starts_with("aws-internal")
            || l.starts_with("[s3console")
    })
}

fn is_read(e: &Ev) -> bool {
    e.readonly
        || ["List", "Describe", "Get", "Search", "Lookup", "BatchGet"]
            .iter()
            .any(|p| e.name.starts_with(p))
}

/// The workload a user agent says it runs in: the Lambda runtime (`awslambda-worker`, or an
/// SDK's `exec-env/AWS_Lambda_…`), an ECS task (`exec-env/AWS_ECS_…`), a CodeBuild build
/// (`exec-env/AWS_CodeBuild`, `exec-env/CodeBuild`).
fn workload_marker(ua: Option<&str>) -> Option<Workload> {
    let u = ua?;
    if u.contains("exec-env/AWS_Lambda") || u.starts_with("awslambda-worker") {
        Some(Workload::Lambda)
    } else if u.contains("exec-env/AWS_ECS") {
        Some(Workload::Ecs)
    } else if u.contains("exec-env/AWS_CodeBuild") || u.contains("exec-env/CodeBuild") {
        Some(Workload::CodeBuild)
    } else {
        None
    }
}

/// The workload a role session's name says it is: CodeBuild names its sessions
/// `AWSCodeBuild-<build id>`.
fn workload_of_session(arn: Option<&str>) -> Option<Workload> {
    let session = role_session(arn?)?.session?;
    session
        .starts_with("AWSCodeBuild-")
        .then_some(Workload::CodeBuild)
}

/// The workload a key's credentials belong to: minted for it by the service (when the
/// `AssumeRole` is in the lake), named so, or marked by its runtime in the user agent.
fn workload_kind(lin: &Lineage, key: &str, evs: &[&Ev]) -> Option<Workload> {
    lin.workloads
        .get(key)
        .copied()
        .or_else(|| evs.iter().find_map(|e| workload_marker(e.ua.as_deref())))
        .or_else(|| {
            evs.iter()
                .find_map(|e| workload_of_session(e.arn.as_deref()))
        })
}

/// The instance a key belongs to, when it is an EC2 instance's role credentials.
fn instance_of(e: &Ev) -> Option<String> {
    instance_of_session(e.arn.as_deref().unwrap_or_default(), e.ec2)
}

/// The EC2 instance whose role credentials a session ARN (`ec2`: delivered by EC2's instance
/// metadata) is: its ID when the session is named after it, else the session itself.
fn instance_of_session(arn: &str, ec2: bool) -> Option<String> {
    let session = arn.rsplit('/').next().unwrap_or_default();
    let looks_like_instance = session.len() >= 10
        && session.starts_with("i-")
        && session[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if looks_like_instance {
        Some(session.to_owned())
    } else if ec2 {
        Some(arn.to_owned())
    } else {
        None
    }
}

fn role_of(arn: Option<&str>) -> String {
    arn.and_then(role_session)
        .map_or("?", |r| r.role)
        .to_owned()
}

fn minutes(ms: i64) -> String {
    let m = ms as f64 / 60_000.0;
    if m < 1.0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{m:.0} min")
    }
}

struct Builder<'a> {
    cfg: &'a Config,
    /// With a scope: the keys whose findings are made (a finding without a key is made too).
    keys: Option<&'a BTreeSet<String>>,
    out: &'a mut Kept,
}

impl Builder<'_> {
    fn finding(&mut self, id: &str, key: Option<&str>, evs: &[&Ev], reason: String) {
        if let Some(d) = info(id) {
            self.finding_at(id, d.severity, key, evs, reason);
        }
    }

    /// A finding at a severity other than the detector's own.
    fn finding_at(
        &mut self,
        id: &str,
        severity: Severity,
        key: Option<&str>,
        evs: &[&Ev],
        reason: String,
    ) {
        let Some(first) = evs.first() else {
            return;
        };
        let last = evs.iter().map(|e| e.t).max().unwrap_or(first.t);
        let ids = evs.iter().map(|e| e.id.clone());
        self.make(id, severity, key, (first, last, evs.len()), ids, reason);
    }

    /// A finding about calls kept as [`Calls`].
    fn finding_of(
        &mut self,
        id: &str,
        severity: Severity,
        key: Option<&str>,
        c: &Calls,
        reason: String,
    ) {
        let ids = c.ids.iter().map(|(_, id)| id.clone());
        self.make(id, severity, key, (&c.first, c.last, c.total), ids, reason);
    }

    /// A finding whose evidence is `(first, last, total)`: its first event, the time of its
    /// last, how many; `ids` are their IDs in order (the first `evidence_cap` are listed).
    fn make(
        &mut self,
        id: &str,
        severity: Severity,
        key: Option<&str>,
        (first, last, total): (&Ev, i64, usize),
        ids: impl Iterator<Item = String>,
        reason: String,
    ) {
        let Some(d) = info(id) else {
            return;
        };
        // The findings of the keys asked for, not of the other sessions read with them.
        if key.is_some_and(|k| self.keys.is_some_and(|keys| !keys.contains(k))) {
            return;
        }
        if !self.out.wants(severity) {
            self.out.count_below(first.t);
            return;
        }
        let events: Vec<String> = ids.take(self.cfg.evidence_cap).collect();
        let reason = if total > events.len() {
            format!("{reason} [{total} events; first {} listed]", events.len())
        } else {
            reason
        };
        self.out.push(Finding {
            rule: d.id.to_owned(),
            title: d.title.to_owned(),
            severity,
            category: d.category.to_owned(),
            source: Source::Detector,
            time: first.t,
            last,
            key: key.map(str::to_owned),
            principal: first.arn.clone(),
            account: first.account.clone(),
            source_ip: first.ip.clone(),
            reason,
            events,
            details: BTreeMap::new(),
            tags: d.tags.iter().map(|t| (*t).to_owned()).collect(),
        });
    }
}

/// The stateful detectors over the `events` table of `ctx`; with `scope`, only its keys' events
/// are read one by one (keys' lineage is the whole table's, principals' histories the scope's).
pub async fn run(
    ctx: &SessionContext,
    cfg: &Config,
    scope: Option<&Scope>,
    out: &mut Kept,
) -> Result<(), DetectError> {
    let started = std::time::Instant::now();
    let keys = scope.map(|s| &s.read);
    let lin = lineage(ctx, scope).await?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "detectors: key lineage and principals' histories read"
    );
    let mut b = Builder {
        cfg,
        keys: scope.map(|s| &s.keys),
        out,
    };
    let mut people: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut deferred = Deferred::default();
    for (lo, hi) in key_ranges(ctx, cfg.max_sort_events, keys).await? {
        let mut range = col(c::ACCESSKEYID).is_not_null();
        if let Some(keys) = keys {
            let lower = lo.as_ref().map_or(Bound::Unbounded, Bound::Included);
            let upper = hi.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
            let within: Vec<_> = keys
                .range::<String, _>((lower, upper))
                .map(|k| lit(k.clone()))
                .collect();
            if within.is_empty() {
                continue;
            }
            range = col(c::ACCESSKEYID).in_list(within, false);
        }
        if let Some(lo) = lo {
            range = range.and(col(c::ACCESSKEYID).gt_eq(lit(lo)));
        }
        if let Some(hi) = hi {
            range = range.and(col(c::ACCESSKEYID).lt(lit(hi)));
        }
        let df = ctx
            .table(Table::Events.name())
            .await?
            .filter(range)?
            .select(vec![
                col(c::ACCESSKEYID).alias("k"),
                col(c::EVENTTIME).alias("t"),
                col(c::EVENTID).alias("id"),
                col(c::EVENTSOURCE).alias("src"),
                col(c::EVENTNAME).alias("name"),
                col(c::AWSREGION).alias("region"),
                col(c::SOURCEIPADDRESS).alias("ip"),
                col(c::USERAGENT).alias("ua"),
                coalesce(vec![col("readonly"), lit(false)]).alias("readonly"),
                get_field(col(c::USERIDENTITY), "arn").alias("arn"),
                get_field(
                    get_field(col(c::USERIDENTITY), "sessioncontext"),
                    "ec2roledelivery",
                )
                .is_not_null()
                .alias("ec2"),
                col("vpcendpointid").is_not_null().alias("vpce"),
                col(c::AWSSERVICE).alias("svc"),
                col(c::RESOURCEACCOUNTID).alias("account"),
                col(c::DENIED).alias("denied"),
            ])?
            .sort_by(vec![col("k"), col("t"), col("id")])?;
        read_keys(df, &mut b, &lin, &mut people, &mut deferred).await?;
    }
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        keys = keys.map(BTreeSet::len),
        "detectors: keys read"
    );
    instances(&mut b, &deferred, &people);
    workloads(&mut b, &deferred, &people);
    Ok(())
}

/// Key ranges `[lo, hi)` of about `per_range` events each (from `key_daily`'s counts), so one
/// range's events are sorted at a time; the lake's files are sorted by key, so each range reads
/// only the pages that hold its keys. With `keys`, only those keys are counted.
async fn key_ranges(
    ctx: &SessionContext,
    per_range: u64,
    keys: Option<&BTreeSet<String>>,
) -> Result<Vec<(Option<String>, Option<String>)>, DetectError> {
    #[derive(serde::Deserialize)]
    struct KeyCount {
        k: String,
        n: i64,
    }
    if keys.is_some_and(BTreeSet::is_empty) {
        return Ok(Vec::new());
    }
    // A session of events alone (rule and detector fixtures) counts them.
    let (table, n) = if ctx.table_exist(Table::KeyDaily.name())? {
        (Table::KeyDaily, sum(col("events")))
    } else {
        (Table::Events, count(lit(1)))
    };
    let mut df = ctx
        .table(table.name())
        .await?
        .filter(col(c::ACCESSKEYID).is_not_null())?;
    if let Some(keys) = keys {
        let list = keys.iter().map(|k| lit(k.clone())).collect();
        df = df.filter(col(c::ACCESSKEYID).in_list(list, false))?;
    }
    let batches = df
        .aggregate(vec![col(c::ACCESSKEYID).alias("k")], vec![n.alias("n")])?
        .sort(vec![col("k").sort(true, false)])?
        .collect()
        .await?;
    let mut out = Vec::new();
    let mut lo: Option<String> = None;
    let mut in_range = 0u64;
    for r in keytrail_engine::rows::from_batches::<KeyCount>(&batches)? {
        let n = u64::try_from(r.n).unwrap_or(0);
        if in_range > 0 && in_range + n > per_range.max(1) {
            out.push((lo.take(), Some(r.k.clone())));
            lo = Some(r.k.clone());
            in_range = 0;
        }
        in_range += n;
    }
    out.push((lo, None));
    Ok(out)
}

/// A keyed event as the detectors read it.
#[derive(serde::Deserialize)]
struct KeyedEv {
    k: String,
    t: i64,
    id: Option<String>,
    src: Option<String>,
    name: Option<String>,
    region: Option<String>,
    ip: Option<String>,
    ua: Option<String>,
    readonly: bool,
    arn: Option<String>,
    ec2: bool,
    vpce: bool,
    svc: bool,
    account: Option<String>,
    denied: bool,
}

/// Read one sorted stream of keyed events and run the per-key detectors on each key.
async fn read_keys(
    df: datafusion::prelude::DataFrame,
    b: &mut Builder<'_>,
    lin: &Lineage,
    people: &mut HashMap<String, BTreeSet<String>>,
    deferred: &mut Deferred,
) -> Result<(), DetectError> {
    let mut stream = df.execute_stream().await?;
    let mut current: Option<String> = None;
    let mut evs: Vec<Ev> = Vec::new();
    while let Some(batch) = stream.next().await {
        for r in keytrail_engine::rows::from_batch::<KeyedEv>(&batch?)? {
            if current.as_deref() != Some(r.k.as_str()) {
                if let Some(prev) = current.take() {
                    per_key(b, lin, &prev, &evs, people, deferred);
                }
                evs.clear();
                current = Some(r.k);
            }
            evs.push(Ev {
                t: r.t,
                id: r.id.unwrap_or_default(),
                src: r.src.unwrap_or_default(),
                name: r.name.unwrap_or_default(),
                region: r.region,
                ip: r.ip,
                ua: r.ua,
                readonly: r.readonly,
                arn: r.arn,
                ec2: r.ec2,
                vpce: r.vpce,
                svc: r.svc,
                account: r.account,
                denied: r.denied,
            });
        }
    }
    if let Some(prev) = current.take() {
        per_key(b, lin, &prev, &evs, people, deferred);
    }
    Ok(())
}

fn per_key(
    b: &mut Builder<'_>,
    lin: &Lineage,
    key: &str,
    all: &[Ev],
    people: &mut HashMap<String, BTreeSet<String>>,
    deferred: &mut Deferred,
) {
    let evs: Vec<&Ev> = all.iter().filter(|e| !e.svc).collect();
    let Some(first) = evs.first() else {
        return;
    };
    let cfg = b.cfg;
    // A workload's calls are those of no instance.
    let of_workload: Vec<&Ev> = evs
        .iter()
        .copied()
        .filter(|e| instance_of(e).is_none())
        .collect();
    let is_instance = of_workload.len() < evs.len();
    let workload = if of_workload.is_empty() {
        None
    } else {
        workload_kind(lin, key, &of_workload)
    };
    if is_instance || workload.is_some() {
        if is_instance {
            deferred.instance_calls(cfg, key, &evs);
        }
        if let Some(kind) = workload {
            deferred.workload_calls(cfg, key, kind, &of_workload);
        }
    } else {
        for e in &evs {
            if let (Some(Origin::Public(_)), Some(arn)) =
                (e.ip.as_deref().map(net::origin), e.arn.as_deref())
                && workload_marker(e.ua.as_deref()).is_none()
            {
                let ip = e.ip.clone().unwrap_or_default();
                let set = people.entry(ip).or_default();
                if set.len() < 8 {
                    set.insert(arn.to_owned());
                }
            }
        }
    }

    new_values(b, key, &evs, first.t + cfg.warmup_ms);
    denied_bursts(b, key, &evs);
    recon_bursts(b, lin, key, &evs);
    distant_networks(b, key, &evs);
    after_deactivation(b, lin, key, &evs);
}

/// New networks, clients and regions after the warm-up; a new network with a new client.
fn new_values(b: &mut Builder<'_>, key: &str, evs: &[&Ev], warm_until: i64) {
    let cfg = b.cfg;
    // dimension → value → (first index, evidence)
    struct New<'e> {
        value: String,
        evs: Vec<&'e Ev>,
    }
    let mut seen: [HashSet<String>; 3] = Default::default();
    let mut found: [Vec<New<'_>>; 3] = Default::default();
    for e in evs {
        let vals = [
            match e.ip.as_deref().map(net::origin) {
                Some(Origin::Public(ip)) => {
                    Some(net::network(ip, cfg.new_v4_prefix, cfg.new_v6_prefix))
                }
                _ => None,
            },
            e.ua.as_deref().and_then(client_family),
            e.region.clone().filter(|r| !r.is_empty()),
        ];
        for (d, v) in vals.into_iter().enumerate() {
            let Some(v) = v else { continue };
            if seen[d].insert(v.clone()) {
                if e.t >= warm_until {
                    found[d].push(New {
                        value: v,
                        evs: vec![e],
                    });
                }
            } else if let Some(n) = found[d].iter_mut().find(|n| n.value == v)
                && e.t - n.evs[0].t < cfg.pair_ms
                && n.evs.len() < 10
            {
                n.evs.push(e);
            }
        }
    }
    let labels = [
        (NEW_NETWORK, "network"),
        (NEW_CLIENT, "client"),
        (NEW_REGION, "region"),
    ];
    for (d, (id, what)) in labels.iter().enumerate() {
        for n in &found[d] {
            let detail = if d == 0 {
                format!(
                    "{} ({})",
                    n.value,
                    n.evs[0].ip.as_deref().unwrap_or_default()
                )
            } else {
                n.value.clone()
            };
            b.finding(
                id,
                Some(key),
                &n.evs,
                format!("first use from {what} {detail} after the key's warm-up"),
            );
        }
    }
    for n in &found[0] {
        let t0 = n.evs[0].t;
        let clients: Vec<&New<'_>> = found[1]
            .iter()
            .filter(|c| (c.evs[0].t - t0).abs() <= cfg.pair_ms)
            .collect();
        if clients.is_empty() {
            continue;
        }
        let mut ev: Vec<&Ev> = n.evs.clone();
        for c in &clients {
            ev.extend(c.evs.iter().copied());
        }
        ev.sort_by(|a, b| (a.t, &a.id).cmp(&(b.t, &b.id)));
        ev.dedup_by(|a, b| a.id == b.id);
        let names: Vec<&str> = clients.iter().map(|c| c.value.as_str()).collect();
        b.finding(
            NEW_PAIR,
            Some(key),
            &ev,
            format!(
                "used from new network {} ({}) by new client {}",
                n.value,
                n.evs[0].ip.as_deref().unwrap_or_default(),
                names.join(", ")
            ),
        );
    }
}

fn top_names(evs: &[&Ev], n: usize) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for e in evs {
        *counts.entry(e.name.as_str()).or_default() += 1;
    }
    let mut v: Vec<(&str, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let shown: Vec<String> = v.iter().take(n).map(|(k, c)| format!("{k} ×{c}")).collect();
    let more = v.len().saturating_sub(n);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Bursts in a key's time-ordered events: a sliding window of `window_ms`; once the window
/// qualifies it becomes a burst, which then takes every next event within `window_ms` of its
/// last one.
struct Bursts<'a> {
    window_ms: i64,
    window: VecDeque<&'a Ev>,
    bursts: Vec<Vec<&'a Ev>>,
    active: bool,
}

impl<'a> Bursts<'a> {
    fn new(window_ms: i64) -> Self {
        Bursts {
            window_ms,
            window: VecDeque::new(),
            bursts: Vec::new(),
            active: false,
        }
    }

    /// Add `e`; `qualifies` judges the window (oldest first, `e` last).
    fn push(&mut self, e: &'a Ev, qualifies: impl FnOnce(&VecDeque<&'a Ev>) -> bool) {
        if self.active
            && let Some(burst) = self.bursts.last_mut()
            && e.t - burst.last().map_or(e.t, |l| l.t) <= self.window_ms
        {
            burst.push(e);
            return;
        }
        self.active = false;
        self.window.push_back(e);
        while self
            .window
            .front()
            .is_some_and(|f| e.t - f.t > self.window_ms)
        {
            self.window.pop_front();
        }
        if qualifies(&self.window) {
            self.bursts.push(self.window.drain(..).collect());
            self.active = true;
        }
    }

    fn finish(self) -> Vec<Vec<&'a Ev>> {
        self.bursts
    }
}

fn denied_bursts(b: &mut Builder<'_>, key: &str, evs: &[&Ev]) {
    let cfg = b.cfg;
    let mut bursts = Bursts::new(cfg.denied_window_ms);
    for e in evs {
        if e.denied {
            bursts.push(e, |w| w.len() >= cfg.denied_count);
        }
    }
    for burst in bursts.finish() {
        let span = burst.last().map_or(0, |l| l.t) - burst[0].t;
        b.finding(
            DENIED_BURST,
            Some(key),
            &burst,
            format!(
                "{} denied calls in {}: {}",
                burst.len(),
                minutes(span),
                top_names(&burst, 3)
            ),
        );
    }
}

fn recon_bursts(b: &mut Builder<'_>, lin: &Lineage, key: &str, evs: &[&Ev]) {
    let cfg = b.cfg;
    let principal = evs
        .first()
        .and_then(|e| e.arn.as_deref())
        .map(principal_of)
        .unwrap_or_default()
        .to_owned();
    // Within the principal's warm-up every call is new: nothing to compare with.
    let warm_until = lin
        .principal_first
        .get(&principal)
        .copied()
        .or(evs.first().map(|e| e.t))
        .unwrap_or(0)
        + cfg.warmup_ms;
    let mut first_seen: HashMap<&str, i64> = HashMap::new();
    let seen_by_principal = |name: &str| {
        lin.principal_names
            .get(&(principal.clone(), name.to_owned()))
            .copied()
    };
    let mut bursts = Bursts::new(cfg.recon_window_ms);
    for e in evs {
        first_seen.entry(e.name.as_str()).or_insert(e.t);
        if !is_read(e) || is_console(e.ua.as_deref()) {
            continue;
        }
        bursts.push(e, |window| {
            let start = window.front().map_or(e.t, |f| f.t);
            let services: HashSet<&str> = window.iter().map(|w| w.src.as_str()).collect();
            let regions: HashSet<&str> =
                window.iter().filter_map(|w| w.region.as_deref()).collect();
            let names: HashSet<&str> = window.iter().map(|w| w.name.as_str()).collect();
            let new = names
                .iter()
                .filter(|n| {
                    let own = first_seen.get(*n).copied().unwrap_or(i64::MAX);
                    own.min(seen_by_principal(n).unwrap_or(i64::MAX)) >= start
                })
                .count();
            e.t >= warm_until
                && (services.len() >= cfg.recon_services || regions.len() >= cfg.recon_regions)
                && names.len() >= cfg.recon_names
                && new >= cfg.recon_new_names
        });
    }
    for burst in bursts.finish() {
        let services: BTreeSet<&str> = burst
            .iter()
            .map(|w| w.src.trim_end_matches(".amazonaws.com"))
            .collect();
        let names: BTreeSet<&str> = burst.iter().map(|w| w.name.as_str()).collect();
        let regions: BTreeSet<&str> = burst.iter().filter_map(|w| w.region.as_deref()).collect();
        let span = burst.last().map_or(0, |l| l.t) - burst[0].t;
        b.finding(
            RECON_BURST,
            Some(key),
            &burst,
            format!(
                "{} read calls in {}: {} APIs across {} services ({}) in {} region(s)",
                burst.len(),
                minutes(span),
                names.len(),
                services.len(),
                services.into_iter().collect::<Vec<_>>().join(", "),
                regions.len()
            ),
        );
    }
}

fn distant_networks(b: &mut Builder<'_>, key: &str, evs: &[&Ev]) {
    let cfg = b.cfg;
    let mut window: VecDeque<(&Ev, String)> = VecDeque::new();
    let mut reported: HashSet<(String, String)> = HashSet::new();
    for e in evs {
        let Some(Origin::Public(ip)) = e.ip.as_deref().map(net::origin) else {
            continue;
        };
        let n = net::network(ip, cfg.distant_v4_prefix, cfg.distant_v6_prefix);
        window.push_back((e, n.clone()));
        while window
            .front()
            .is_some_and(|(f, _)| e.t - f.t > cfg.distant_window_ms)
        {
            window.pop_front();
        }
        // Runs of the same network, in order: A B A means two parties at once.
        let mut runs: Vec<&str> = Vec::new();
        for (_, net) in &window {
            if runs.last() != Some(&net.as_str()) {
                runs.push(net);
            }
        }
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for (_, net) in &window {
            *counts.entry(net.as_str()).or_default() += 1;
        }
        for w in runs.windows(3) {
            let (x, y) = (w[0], w[1]);
            if w[2] == x
                && counts.get(x).copied().unwrap_or(0) >= 2
                && counts.get(y).copied().unwrap_or(0) >= 2
            {
                let pair = if x < y {
                    (x.to_owned(), y.to_owned())
                } else {
                    (y.to_owned(), x.to_owned())
                };
                if reported.insert(pair.clone()) {
                    let ev: Vec<&Ev> = window
                        .iter()
                        .filter(|(_, n)| *n == pair.0 || *n == pair.1)
                        .map(|(e, _)| *e)
                        .collect();
                    let ips: BTreeSet<&str> = ev.iter().filter_map(|e| e.ip.as_deref()).collect();
                    let span = ev.last().map_or(0, |l| l.t) - ev[0].t;
                    b.finding(
                        TWO_NETWORKS,
                        Some(key),
                        &ev,
                        format!(
                            "alternated between {} and {} within {} ({})",
                            pair.0,
                            pair.1,
                            minutes(span),
                            ips.into_iter().collect::<Vec<_>>().join(", ")
                        ),
                    );
                }
                break;
            }
        }
    }
}

fn status_at(changes: &[Change], t: i64) -> Option<&Change> {
    changes.iter().rev().find(|c| c.t < t)
}

fn after_deactivation(b: &mut Builder<'_>, lin: &Lineage, key: &str, evs: &[&Ev]) {
    if let Some(changes) = lin.changes.get(key) {
        // One finding per deactivation: the events between it and the next change.
        let mut groups: BTreeMap<usize, Vec<&Ev>> = BTreeMap::new();
        for e in evs {
            if let Some(c) = status_at(changes, e.t)
                && c.status != KeyStatus::Active
                && let Some(i) = changes.iter().position(|x| x.id == c.id)
            {
                groups.entry(i).or_default().push(e);
            }
        }
        for (i, ev) in groups {
            let c = &changes[i];
            let what = if c.status == KeyStatus::Deleted {
                "deleted"
            } else {
                "set Inactive"
            };
            b.finding(
                AFTER_DEACTIVATION,
                Some(key),
                &ev,
                format!(
                    "{} event(s) after the key was {what} at {} by {} (event {})",
                    ev.len(),
                    keytrail_model::time::format_millis(c.t),
                    c.by.as_deref().unwrap_or("?"),
                    c.id
                ),
            );
        }
    }
    if let Some(m) = lin.minted.get(key)
        && let Some(changes) = lin.changes.get(&m.parent)
    {
        let mut groups: BTreeMap<usize, Vec<&Ev>> = BTreeMap::new();
        for e in evs {
            if let Some(c) = status_at(changes, e.t)
                && c.status != KeyStatus::Active
                && c.t > m.t
                && let Some(i) = changes.iter().position(|x| x.id == c.id)
            {
                groups.entry(i).or_default().push(e);
            }
        }
        for (i, ev) in groups {
            let c = &changes[i];
            b.finding(
                CHILD_AFTER_PARENT,
                Some(key),
                &ev,
                format!(
                    "minted from {} by {} at {}; used after {} was {} at {}",
                    m.parent,
                    m.how,
                    keytrail_model::time::format_millis(m.t),
                    m.parent,
                    if c.status == KeyStatus::Deleted {
                        "deleted"
                    } else {
                        "set Inactive"
                    },
                    keytrail_model::time::format_millis(c.t)
                ),
            );
        }
    }
}

fn inside(e: &Ev) -> bool {
    e.vpce || !matches!(e.ip.as_deref().map(net::origin), Some(Origin::Public(_)))
}

/// Where a public address is, as far as AWS's published ranges say.
enum Place {
    /// In AWS's ranges: `EC2 us-east-1`.
    Aws(String),
    /// In none of them.
    Outside,
}

/// Whether AWS's ranges are known at all (an empty file leaves every address unplaced).
fn ranges_known(ranges: &AwsRanges) -> bool {
    ranges.v4_prefixes + ranges.v6_prefixes > 0
}

fn place(ranges: &AwsRanges, ip: &str) -> Place {
    match ranges.lookup_text(ip) {
        Some(a) => Place::Aws(format!("{} {}", a.service(), a.region)),
        None => Place::Outside,
    }
}

fn people_of(people: &HashMap<String, BTreeSet<String>>, ip: &str) -> Option<String> {
    people
        .get(ip)
        .map(|p| p.iter().cloned().collect::<Vec<_>>().join(", "))
}

/// Calls of one group (an instance's sessions, a workload's key) from one address, as the
/// finding about them needs them: how many, the first (by time, then ID) and its key, the
/// last time, every key, and the IDs of the first `evidence_cap`.
struct Calls {
    first: Ev,
    key: String,
    keys: BTreeSet<String>,
    last: i64,
    ids: BTreeSet<(i64, String)>,
    total: usize,
}

impl Calls {
    fn new(key: &str, e: &Ev) -> Calls {
        Calls {
            first: e.clone(),
            key: key.to_owned(),
            keys: BTreeSet::from([key.to_owned()]),
            last: e.t,
            ids: BTreeSet::from([(e.t, e.id.clone())]),
            total: 1,
        }
    }

    fn add(&mut self, key: &str, e: &Ev, cap: usize) {
        self.total += 1;
        self.last = self.last.max(e.t);
        if !self.keys.contains(key) {
            self.keys.insert(key.to_owned());
        }
        if (e.t, &e.id) < (self.first.t, &self.first.id) {
            self.first = e.clone();
            self.key = key.to_owned();
        }
        if self.ids.len() < cap || self.ids.last().is_some_and(|l| (e.t, &e.id) < (l.0, &l.1)) {
            self.ids.insert((e.t, e.id.clone()));
            if self.ids.len() > cap {
                self.ids.pop_last();
            }
        }
    }

    fn add_to(map: &mut BTreeMap<String, Calls>, ip: &str, key: &str, e: &Ev, cap: usize) {
        match map.get_mut(ip) {
            Some(c) => c.add(key, e, cap),
            None => {
                map.insert(ip.to_owned(), Calls::new(key, e));
            }
        }
    }
}

/// An EC2 instance's sessions' calls from public addresses (outside VPC endpoints), kept until
/// every key was read: their judgement needs the addresses of everyone else.
#[derive(Default)]
struct InstanceCalls {
    /// The instance's own address: the one of its first call from inside AWS's ranges (from
    /// any public address when no ranges are known), with that call's time and ID.
    home: Option<(i64, String, String)>,
    by_ip: BTreeMap<String, Calls>,
}

/// A workload key's calls that are not its own, judged as far as they can be before every
/// key was read: what remains is whether people use their addresses too.
struct WorkloadCalls {
    key: String,
    kind: Workload,
    /// Where the workload's own calls came from, for the reason.
    own: String,
    /// Address → every call from it that is not the workload's own (what an address people
    /// use condemns).
    any: BTreeMap<String, Calls>,
    /// Address → the verdict of its first call judged without people's addresses, and the
    /// calls so judged.
    judged: BTreeMap<String, (Severity, String, Calls)>,
}

/// What the instance and workload detectors keep of keys' events until every key was read.
#[derive(Default)]
struct Deferred {
    instances: BTreeMap<String, InstanceCalls>,
    workloads: Vec<WorkloadCalls>,
}

impl Deferred {
    /// Keep what the instance detector needs of a key's events (those of an instance).
    fn instance_calls(&mut self, cfg: &Config, key: &str, evs: &[&Ev]) {
        let ranges = &cfg.aws_ranges;
        let known = ranges_known(ranges);
        for e in evs {
            let Some(instance) = instance_of(e) else {
                continue;
            };
            if inside(e) {
                continue;
            }
            let ip = e.ip.as_deref().unwrap_or_default();
            let i = self.instances.entry(instance).or_default();
            if (!known || ranges.contains(ip))
                && i.home
                    .as_ref()
                    .is_none_or(|(t, id, _)| (e.t, &e.id) < (*t, id))
            {
                i.home = Some((e.t, e.id.clone(), ip.to_owned()));
            }
            Calls::add_to(&mut i.by_ip, ip, key, e, cfg.evidence_cap);
        }
    }

    /// Judge a workload key's calls (`evs`, by time: the key's calls of no instance) as far as
    /// can be done without people's addresses.
    fn workload_calls(&mut self, cfg: &Config, key: &str, kind: Workload, evs: &[&Ev]) {
        let ranges = &cfg.aws_ranges;
        let known = ranges_known(ranges);
        let net16 = |ip| net::network(ip, cfg.distant_v4_prefix, cfg.distant_v6_prefix);
        let marked = |e: &Ev| workload_marker(e.ua.as_deref()).is_some();
        let any_marked = evs.iter().any(|e| marked(e));
        // The workload's own calls: those its runtime marked; without marks, the first
        // calls (within `workload_home_ms` of the first), when they come from inside AWS.
        let first_t = evs.first().map_or(0, |e| e.t);
        let own: Vec<&Ev> = if any_marked {
            evs.iter().copied().filter(|e| marked(e)).collect()
        } else {
            evs.iter()
                .copied()
                .take_while(|e| e.t - first_t <= cfg.workload_home_ms)
                .filter(|e| {
                    inside(e)
                        || e.ip
                            .as_deref()
                            .is_some_and(|ip| !known || ranges.contains(ip))
                })
                .collect()
        };
        let mut networks = HashSet::new();
        let mut clients = HashSet::new();
        let mut addresses = BTreeSet::new();
        let mut agents = BTreeSet::new();
        for e in &own {
            if let Some(Origin::Public(ip)) = e.ip.as_deref().map(net::origin) {
                networks.insert(net16(ip));
            }
            if let Some(ip) = &e.ip {
                addresses.insert(ip.clone());
            }
            if let Some(ua) = &e.ua {
                agents.insert(ua.clone());
            }
            if let Some(c) = e.ua.as_deref().and_then(client_family) {
                clients.insert(c);
            }
        }
        let own_desc = if addresses.is_empty() {
            "no call of the workload's own is in the lake".to_owned()
        } else {
            format!(
                "the workload's own calls came from {} ({})",
                addresses
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                agents
                    .iter()
                    .filter_map(|a| client_family(a))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let own_ids: HashSet<&str> = own.iter().map(|e| e.id.as_str()).collect();
        let mut w = WorkloadCalls {
            key: key.to_owned(),
            kind,
            own: own_desc,
            any: BTreeMap::new(),
            judged: BTreeMap::new(),
        };
        for e in evs {
            if inside(e) || marked(e) || own_ids.contains(e.id.as_str()) {
                continue;
            }
            let Some(Origin::Public(ip)) = e.ip.as_deref().map(net::origin) else {
                continue;
            };
            let ipt = e.ip.as_deref().unwrap_or_default();
            Calls::add_to(&mut w.any, ipt, key, e, cfg.evidence_cap);
            let client = e.ua.as_deref().and_then(client_family);
            let verdict = if known {
                match place(ranges, ipt) {
                    Place::Outside => Some((
                        Severity::High,
                        "outside AWS (in no published AWS range)".to_owned(),
                    )),
                    Place::Aws(p) => {
                        let new_net = !networks.contains(&net16(ip));
                        let new_client = client.as_ref().is_none_or(|c| !clients.contains(c));
                        (!own.is_empty() && new_net && new_client).then(|| {
                            (
                                Severity::Medium,
                                format!("an AWS address ({p}) and a client unlike the workload's own first calls"),
                            )
                        })
                    }
                }
            } else {
                // No ranges: a /16 the workload never used.
                (any_marked && !networks.contains(&net16(ip))).then(|| {
                    (
                        Severity::High,
                        "a network the workload never used".to_owned(),
                    )
                })
            };
            if let Some((sev, why)) = verdict {
                match w.judged.get_mut(ipt) {
                    Some((_, _, c)) => c.add(key, e, cfg.evidence_cap),
                    None => {
                        w.judged
                            .insert(ipt.to_owned(), (sev, why, Calls::new(key, e)));
                    }
                }
            }
        }
        if !w.any.is_empty() {
            self.workloads.push(w);
        }
    }
}

fn instances(b: &mut Builder<'_>, deferred: &Deferred, people: &HashMap<String, BTreeSet<String>>) {
    let ranges = Arc::clone(&b.cfg.aws_ranges);
    let known = ranges_known(&ranges);
    for (instance, calls) in &deferred.instances {
        let home = calls.home.as_ref().map(|(_, _, ip)| ip.as_str());
        for (ip, c) in &calls.by_ip {
            let own = home.unwrap_or("?");
            let (sev, why) = if let Some(p) = people_of(people, ip) {
                (Severity::High, format!("an address also used by {p}"))
            } else if known && matches!(place(&ranges, ip), Place::Outside) {
                (
                    Severity::High,
                    format!(
                        "outside AWS (in no published AWS range; the instance's own address is {own})"
                    ),
                )
            } else if home != Some(ip.as_str()) {
                let at = match place(&ranges, ip) {
                    Place::Aws(p) if known => format!(", an AWS address ({p})"),
                    _ => String::new(),
                };
                let sev = if known {
                    Severity::Medium
                } else {
                    Severity::High
                };
                (sev, format!("not the instance's own address ({own}){at}"))
            } else {
                continue;
            };
            let name = if instance.starts_with("i-") {
                format!("EC2 instance {instance}")
            } else {
                "an EC2 instance".to_owned()
            };
            let keys: Vec<&str> = c.keys.iter().map(String::as_str).collect();
            b.finding_of(
                INSTANCE_ELSEWHERE,
                sev,
                Some(c.key.as_str()),
                c,
                format!(
                    "credentials of {name} (role {}, key {}) used from {ip}, {why}",
                    role_of(c.first.arn.as_deref()),
                    keys.join(", ")
                ),
            );
        }
    }
}

fn workloads(b: &mut Builder<'_>, deferred: &Deferred, people: &HashMap<String, BTreeSet<String>>) {
    for w in &deferred.workloads {
        for (ip, any) in &w.any {
            let (sev, why, c) = if let Some(p) = people_of(people, ip) {
                (Severity::High, format!("an address also used by {p}"), any)
            } else if let Some((sev, why, c)) = w.judged.get(ip) {
                (*sev, why.clone(), c)
            } else {
                continue;
            };
            let client = c
                .first
                .ua
                .as_deref()
                .and_then(client_family)
                .unwrap_or_else(|| "?".into());
            let key = w.key.as_str();
            b.finding_of(
                WORKLOAD_OUTSIDE,
                sev,
                Some(key),
                c,
                format!(
                    "credentials of {} (role {}, key {key}) used from {ip} by {client}, {why}; {}",
                    w.kind.name(),
                    role_of(c.first.arn.as_deref()),
                    w.own
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_keep_the_first_events_by_time_then_id_whatever_order_they_come_in() {
        let ev = |t: i64, id: &str| Ev {
            t,
            id: id.to_owned(),
            arn: Some(format!("arn-{id}")),
            ..Ev::default()
        };
        // Two sessions' keys read one after the other: the second key's calls are earlier.
        let mut c = Calls::new("ASIA1", &ev(50, "e50"));
        for (key, t, id) in [
            ("ASIA1", 60, "e60"),
            ("ASIA1", 70, "e70"),
            ("ASIA2", 10, "e10b"),
            ("ASIA2", 10, "e10a"),
            ("ASIA2", 55, "e55"),
            ("ASIA2", 80, "e80"),
        ] {
            c.add(key, &ev(t, id), 3);
        }
        assert_eq!(c.total, 7);
        assert_eq!(
            (c.first.t, c.first.id.as_str(), c.key.as_str()),
            (10, "e10a", "ASIA2")
        );
        assert_eq!(c.first.arn.as_deref(), Some("arn-e10a"));
        assert_eq!(c.last, 80);
        let ids: Vec<&str> = c.ids.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(ids, ["e10a", "e10b", "e50"]);
        let keys: Vec<&str> = c.keys.iter().map(String::as_str).collect();
        assert_eq!(keys, ["ASIA1", "ASIA2"]);
    }

    #[test]
    fn client_families() {
        for (ua, fam) in [
            (
                "aws-cli/2.15.30 Python/3.11.8 Linux/6.6.9-amd64 exe/x86_64.kali.2024",
                "aws-cli",
            ),
            (
                "[aws-cli/1.18.136 Python/3.8.5 Darwin/19.5.0 botocore/1.17.59]",
                "aws-cli",
            ),
            ("Boto3/1.34.69 md/Botocore#1.34.69 ua/2.0", "boto3"),
            ("Terraform/1.7.5 (+https://www.terraform.io)", "terraform"),
            ("python-requests/2.31.0", "python-requests"),
            ("console.amazonaws.com", "console.amazonaws.com"),
        ] {
            assert_eq!(client_family(ua).as_deref(), Some(fam), "{ua}");
        }
        assert_eq!(client_family(""), None);
    }
}
