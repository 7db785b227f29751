//! The leaked-key investigation: from one or more access keys, follow every credential
//! derived from them (AssumeRole, GetSessionToken, GetFederationToken and the other STS calls
//! that return credentials; CreateAccessKey), then build the timeline of every event made with
//! any key of that chain, its blast radius grouped as AWS's compromised-key checklist groups
//! it, and where it came from (source IPs, user agents, regions, services).
//!
//! Everything is read through DataFusion over the lake; the `accesskeyid IN (...)` filters of
//! each step are pruned by the lake's sort order, column statistics and bloom filters. The raw-
//! logs mode ([`raw`]) builds a small lake of exactly the chain's events first.

mod blast;
pub mod raw;
mod render;
mod summary;

use std::collections::{BTreeMap, BTreeSet};

use keytrail_model::time::format_millis;
use keytrail_model::{AccessKeyId, KeyKind};
use serde::Serialize;
use serde_json::Value;

use crate::error::QueryError;
use crate::session::LakeSession;

pub use blast::BlastItem;
pub use render::render;

/// Links followed at most (role chaining deeper than this is reported, not followed).
const MAX_DEPTH: usize = 32;

/// What to investigate.
#[derive(Clone, Debug, Default)]
pub struct InvestigateOptions {
    /// The keys to start from (validated access key IDs).
    pub keys: Vec<AccessKeyId>,
    /// The timeline's window (ms since the epoch); the chain is followed over all time.
    pub since: Option<i64>,
    pub until: Option<i64>,
}

/// One key of the chain.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ChainKey {
    pub key: String,
    /// `long-term`, `temporary` or `other`.
    pub kind: String,
    /// How many links from a starting key (0: given by the user).
    pub depth: usize,
    /// The key whose call minted this one.
    pub parent: Option<String>,
    /// The principal the key acts as (ARN of the latest event made with it, else from the
    /// minting call's response).
    pub principal: Option<String>,
    pub account: Option<String>,
    /// Events made with the key in the window, and how many of them failed.
    pub events: u64,
    pub errors: u64,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    /// When the key was set Inactive or deleted (the first time), and by which event.
    pub deactivated: Option<Deactivation>,
    /// Events made with the key after its parent (or an ancestor) was deactivated: the
    /// credentials kept working.
    pub used_after_ancestor_deactivated: u64,
}

/// A deactivation or deletion of a key.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Deactivation {
    pub time: String,
    /// `UpdateAccessKey (Inactive)` or `DeleteAccessKey`.
    pub action: String,
    pub event_id: Option<String>,
    /// Who did it.
    pub by: Option<String>,
    #[serde(skip)]
    pub ms: i64,
}

/// A derived credential: `parent` called `event_name` and got `child`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Edge {
    pub parent: String,
    pub child: String,
    pub event_name: String,
    pub event_id: Option<String>,
    pub time: String,
    /// The credentials' expiry, as CloudTrail wrote it (temporary credentials only).
    pub expiration: Option<String>,
    /// The principal the child acts as (assumed-role or federated-user ARN, or user name).
    pub child_principal: Option<String>,
    pub source_ip: Option<String>,
}

/// One event of the timeline.
#[derive(Clone, Debug, Serialize)]
pub struct TimelineRow {
    pub time: String,
    pub event_id: Option<String>,
    /// The key the event was made with.
    pub key: Option<String>,
    /// `made-with-chain-key`, or `names-chain-key` for an event made by someone else about a
    /// key of the chain (its deactivation or deletion).
    pub relation: &'static str,
    pub identity_type: Option<String>,
    pub identity_arn: Option<String>,
    pub event_source: Option<String>,
    pub event_name: Option<String>,
    pub region: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub error_code: Option<String>,
    /// What was asked, in a few words (the resource it touched).
    pub summary: String,
    /// The whole row as the lake holds it (JSON columns parsed).
    pub event: Value,
    #[serde(skip)]
    pub ms: i64,
}

/// Counts of one value (a source IP, a user agent, ...), with first and last use.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Seen {
    pub value: String,
    pub events: u64,
    pub errors: u64,
    pub first: String,
    pub last: String,
    /// The chain keys that used it.
    pub keys: Vec<String>,
}

/// Where the chain's calls came from.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Activity {
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub events: u64,
    pub errors: u64,
    pub source_ips: Vec<Seen>,
    pub user_agents: Vec<Seen>,
    pub regions: Vec<Seen>,
    pub services: Vec<Seen>,
}

/// The whole answer.
#[derive(Clone, Debug, Serialize)]
pub struct Investigation {
    pub start_keys: Vec<String>,
    pub window: Window,
    pub keys: Vec<ChainKey>,
    pub derived: Vec<Edge>,
    pub blast_radius: Vec<BlastItem>,
    pub activity: Activity,
    pub timeline: Vec<TimelineRow>,
    /// Plain statements a responder must read (credentials used after deactivation, limits).
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Window {
    pub since: Option<String>,
    pub until: Option<String>,
}

/// STS calls whose response carries `credentials.accessKeyId`, and CreateAccessKey.
const MINTING: &[&str] = &[
    "AssumeRole",
    "AssumeRoleWithSAML",
    "AssumeRoleWithWebIdentity",
    "AssumeRoot",
    "GetSessionToken",
    "GetFederationToken",
    "CreateAccessKey",
    "GetRoleCredentials",
];

/// A key ID taken from log data, safe to put in SQL text (and plausible as an ID).
fn plausible_key(s: &str) -> bool {
    (16..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn in_list(keys: &BTreeSet<String>) -> String {
    keys.iter()
        .map(|k| format!("'{k}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn window_sql(opts: &InvestigateOptions) -> String {
    let mut w = String::new();
    if let Some(s) = opts.since {
        w.push_str(&format!(" AND eventtime >= to_timestamp_millis({s})"));
    }
    if let Some(u) = opts.until {
        w.push_str(&format!(" AND eventtime < to_timestamp_millis({u})"));
    }
    w
}

/// Rows of a query as JSON objects (timestamps as RFC 3339 text).
async fn json_rows(session: &LakeSession, sql: &str) -> Result<Vec<Value>, QueryError> {
    let started = std::time::Instant::now();
    let batches = session.sql(sql).await?;
    let queried = started.elapsed();
    let text = crate::output::json(&batches)?;
    let rows: Vec<Value> = serde_json::from_str(&text)
        .map_err(|e| QueryError::Invalid(format!("internal: reading query rows: {e}")))?;
    tracing::debug!(
        rows = rows.len(),
        query_ms = queried.as_millis() as u64,
        to_json_ms = (started.elapsed() - queried).as_millis() as u64,
        "{}",
        sql.chars().take(90).collect::<String>()
    );
    Ok(rows)
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_owned)
}

fn millis(text: &str) -> i64 {
    keytrail_model::time::parse_event_time(text).unwrap_or(0)
}

/// Follow the chain from `opts.keys`: every key minted by a successful call of a key already
/// in the set, until nothing new is found.
async fn chain(
    session: &LakeSession,
    opts: &InvestigateOptions,
    notes: &mut Vec<String>,
) -> Result<(BTreeMap<String, ChainKey>, Vec<Edge>), QueryError> {
    let mut keys: BTreeMap<String, ChainKey> = BTreeMap::new();
    for k in &opts.keys {
        keys.insert(k.as_str().to_owned(), new_key(k.as_str(), 0, None));
    }
    let mut edges: Vec<Edge> = Vec::new();
    let mut seen_events = BTreeSet::new();
    let mut frontier: BTreeSet<String> = keys.keys().cloned().collect();
    let names = MINTING
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut depth = 0;
    while !frontier.is_empty() {
        if depth >= MAX_DEPTH {
            notes.push(format!(
                "The chain is deeper than {MAX_DEPTH} links; keys below that depth were not followed: {}",
                frontier.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
            break;
        }
        let sql = format!(
            "SELECT accesskeyid AS parent, eventid, eventtime, eventname, sourceipaddress, \
               COALESCE(json_get_str(responseelements, 'credentials', 'accessKeyId'), \
                        json_get_str(responseelements, 'accessKey', 'accessKeyId')) AS child, \
               json_get_str(responseelements, 'credentials', 'expiration') AS expiration, \
               COALESCE(json_get_str(responseelements, 'assumedRoleUser', 'arn'), \
                        json_get_str(responseelements, 'federatedUser', 'arn'), \
                        json_get_str(responseelements, 'accessKey', 'userName')) AS child_principal \
             FROM events \
             WHERE accesskeyid IN ({}) AND errorcode IS NULL AND eventname IN ({names}) \
             ORDER BY eventtime, eventid",
            in_list(&frontier)
        );
        let rows = json_rows(session, &sql).await?;
        frontier.clear();
        depth += 1;
        for r in rows {
            let (Some(parent), Some(child)) = (s(&r, "parent"), s(&r, "child")) else {
                continue;
            };
            if !plausible_key(&child) {
                notes.push(format!(
                    "Event {} returned an access key ID keytrail cannot use: {child:?}",
                    s(&r, "eventid").unwrap_or_default()
                ));
                continue;
            }
            let event_id = s(&r, "eventid");
            if !seen_events.insert((event_id.clone(), child.clone())) {
                continue;
            }
            let edge = Edge {
                parent: parent.clone(),
                child: child.clone(),
                event_name: s(&r, "eventname").unwrap_or_default(),
                event_id,
                time: s(&r, "eventtime").unwrap_or_default(),
                expiration: s(&r, "expiration"),
                child_principal: s(&r, "child_principal"),
                source_ip: s(&r, "sourceipaddress"),
            };
            if !keys.contains_key(&child) {
                let mut k = new_key(&child, depth, Some(parent));
                k.principal = edge
                    .child_principal
                    .clone()
                    .filter(|p| p.starts_with("arn:"));
                keys.insert(child.clone(), k);
                frontier.insert(child);
            }
            edges.push(edge);
        }
    }
    edges.sort_by(|a, b| (&a.time, &a.event_id).cmp(&(&b.time, &b.event_id)));
    Ok((keys, edges))
}

fn new_key(key: &str, depth: usize, parent: Option<String>) -> ChainKey {
    ChainKey {
        key: key.to_owned(),
        kind: KeyKind::of(key).as_str().to_owned(),
        depth,
        parent,
        principal: None,
        account: match keytrail_model::key::decode_account(key) {
            keytrail_model::AccountDecode::Account(a) => Some(a),
            _ => None,
        },
        events: 0,
        errors: 0,
        first_seen: None,
        last_seen: None,
        deactivated: None,
        used_after_ancestor_deactivated: 0,
    }
}

/// Investigate over an open lake.
pub async fn investigate(
    session: &LakeSession,
    opts: &InvestigateOptions,
) -> Result<Investigation, QueryError> {
    if opts.keys.is_empty() {
        return Err(QueryError::Invalid(
            "give at least one access key ID to investigate".into(),
        ));
    }
    let mut notes = Vec::new();
    let (mut keys, derived) = chain(session, opts, &mut notes).await?;
    let all: BTreeSet<String> = keys.keys().cloned().collect();
    let list = in_list(&all);

    // Events about chain keys made by anyone, at any time: their deactivation or deletion. A
    // query of its own, so that the timeline's `accesskeyid IN (...)` stays prunable (bloom
    // filters, statistics, sort order) instead of being OR-ed with a condition on JSON.
    let sql = format!(
        "SELECT * FROM events \
         WHERE eventsource = 'iam.amazonaws.com' \
           AND eventname IN ('UpdateAccessKey', 'DeleteAccessKey', 'CreateAccessKey') \
           AND json_get_str(requestparameters, 'accessKeyId') IN ({list}) \
         ORDER BY eventtime, eventid"
    );
    let about = json_rows(session, &sql).await?;
    for r in &about {
        let name = s(r, "eventname").unwrap_or_default();
        let req: Option<Value> =
            s(r, "requestparameters").and_then(|t| serde_json::from_str(&t).ok());
        let field = |k: &str| {
            req.as_ref()
                .and_then(|v| v.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let Some(k) = field("accessKeyId") else {
            continue;
        };
        if s(r, "errorcode").is_some() {
            continue;
        }
        let action = match (name.as_str(), field("status").as_deref()) {
            ("DeleteAccessKey", _) => "DeleteAccessKey".to_owned(),
            ("UpdateAccessKey", Some("Inactive")) => "UpdateAccessKey (Inactive)".to_owned(),
            _ => continue, // made Active again, or created: not a deactivation
        };
        if let Some(ck) = keys.get_mut(&k)
            && ck.deactivated.is_none()
        {
            let time = s(r, "eventtime").unwrap_or_default();
            ck.deactivated = Some(Deactivation {
                ms: millis(&time),
                time,
                action,
                event_id: s(r, "eventid"),
                by: r
                    .pointer("/useridentity/arn")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            });
        }
    }

    // The timeline: every event made with a chain key, and the events about them (made with
    // other keys) within the window.
    let window = window_sql(opts);
    let sql = format!(
        "SELECT * FROM events WHERE accesskeyid IN ({list}){window} ORDER BY eventtime, eventid"
    );
    let mut timeline = Vec::new();
    for row in json_rows(session, &sql).await? {
        timeline.push(timeline_row(row, &all));
    }
    for row in about {
        let t = timeline_row(row, &all);
        let inside = opts.since.is_none_or(|s| t.ms >= s) && opts.until.is_none_or(|u| t.ms < u);
        if t.relation == NAMES && inside {
            timeline.push(t);
        }
    }
    timeline.sort_by(|a, b| (a.ms, &a.event_id).cmp(&(b.ms, &b.event_id)));

    // Per key: counts, first and last use, principal; use after an ancestor was deactivated.
    for t in timeline.iter().filter(|t| t.relation == MADE_WITH) {
        let Some(k) = t.key.as_deref().and_then(|k| keys.get_mut(k)) else {
            continue;
        };
        k.events += 1;
        k.errors += u64::from(t.error_code.is_some());
        if k.first_seen.is_none() {
            k.first_seen = Some(t.time.clone());
        }
        k.last_seen = Some(t.time.clone());
        if t.identity_arn.is_some() {
            k.principal.clone_from(&t.identity_arn);
        }
        if k.account.is_none() {
            k.account = t
                .event
                .pointer("/useridentity/accountid")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
    }
    let ancestors_deactivated: BTreeMap<String, (String, i64)> = keys
        .keys()
        .filter_map(|k| {
            let mut cur = keys.get(k)?.parent.clone();
            let mut earliest: Option<(String, i64)> = None;
            while let Some(p) = cur {
                let pk = keys.get(&p)?;
                if let Some(d) = &pk.deactivated
                    && earliest.as_ref().is_none_or(|(_, ms)| d.ms < *ms)
                {
                    earliest = Some((p.clone(), d.ms));
                }
                cur = pk.parent.clone();
            }
            earliest.map(|e| (k.clone(), e))
        })
        .collect();
    for t in timeline.iter().filter(|t| t.relation == MADE_WITH) {
        if let Some(k) = t.key.as_deref()
            && let Some((_, ms)) = ancestors_deactivated.get(k)
            && t.ms > *ms
            && let Some(ck) = keys.get_mut(k)
        {
            ck.used_after_ancestor_deactivated += 1;
        }
    }
    for (k, (ancestor, _)) in &ancestors_deactivated {
        let ck = &keys[k];
        if ck.used_after_ancestor_deactivated > 0 {
            let when = keys[ancestor]
                .deactivated
                .as_ref()
                .map(|d| d.time.clone())
                .unwrap_or_default();
            let why = if ck.kind == "temporary" {
                "deactivating a key does not revoke the temporary credentials minted from it; \
                 revoke the sessions (a deny on aws:TokenIssueTime) or wait for them to expire"
            } else {
                "it is a key of its own, created with the chain's credentials; deactivate it too"
            };
            notes.push(format!(
                "{k} ({}) was used {} time(s) after {ancestor} was deactivated at {when}: {why}.",
                ck.kind, ck.used_after_ancestor_deactivated,
            ));
        }
    }
    for k in keys.values() {
        if k.deactivated.is_none() && k.kind == "long-term" && k.events > 0 {
            notes.push(format!(
                "{} is a long-term key and the lake shows no deactivation or deletion of it.",
                k.key
            ));
        }
        if k.events == 0 {
            notes.push(format!(
                "No event made with {} is in the lake{}.",
                k.key,
                if opts.since.is_some() || opts.until.is_some() {
                    " within the window"
                } else {
                    ""
                }
            ));
        }
    }

    let blast_radius = blast::classify(&timeline);
    let activity = activity(&timeline);
    let key_list = tree_order(keys, &derived);
    Ok(Investigation {
        start_keys: opts.keys.iter().map(|k| k.as_str().to_owned()).collect(),
        window: Window {
            since: opts.since.map(format_millis),
            until: opts.until.map(format_millis),
        },
        keys: key_list,
        derived,
        blast_radius,
        activity,
        timeline,
        notes,
    })
}

/// Investigate the lake at `root`.
pub fn investigate_lake(
    root: &std::path::Path,
    opts: &InvestigateOptions,
    session: &crate::SessionOptions,
) -> Result<Investigation, QueryError> {
    crate::block_on(session.threads, async {
        let s = LakeSession::open(root, session).await?;
        investigate(&s, opts).await
    })
}

/// The keys as a tree, depth first: each key followed by the keys it minted, in minting order.
fn tree_order(mut keys: BTreeMap<String, ChainKey>, edges: &[Edge]) -> Vec<ChainKey> {
    let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in edges {
        if keys
            .get(&e.child)
            .is_some_and(|c| c.parent.as_deref() == Some(e.parent.as_str()))
        {
            let list = children.entry(e.parent.clone()).or_default();
            if !list.contains(&e.child) {
                list.push(e.child.clone());
            }
        }
    }
    let mut roots: Vec<String> = keys
        .values()
        .filter(|k| k.parent.is_none())
        .map(|k| k.key.clone())
        .collect();
    roots.reverse();
    let mut out = Vec::with_capacity(keys.len());
    let mut stack = roots;
    while let Some(k) = stack.pop() {
        if let Some(ck) = keys.remove(&k) {
            out.push(ck);
            if let Some(c) = children.get(&k) {
                stack.extend(c.iter().rev().cloned());
            }
        }
    }
    out.extend(keys.into_values()); // unreachable in a well-formed chain; never dropped
    out
}

const MADE_WITH: &str = "made-with-chain-key";
const NAMES: &str = "names-chain-key";

fn timeline_row(mut row: Value, chain: &BTreeSet<String>) -> TimelineRow {
    // The JSON columns, parsed, so the JSON output carries them as objects.
    for col in [
        "requestparameters",
        "responseelements",
        "additionaleventdata",
        "serviceeventdetails",
        "extrafields",
    ] {
        if let Some(v) = row.get_mut(col)
            && let Some(text) = v.as_str()
            && let Ok(parsed) = serde_json::from_str::<Value>(text)
        {
            *v = parsed;
        }
    }
    let key = s(&row, "accesskeyid");
    let time = s(&row, "eventtime").unwrap_or_default();
    let ident = row.get("useridentity").cloned().unwrap_or(Value::Null);
    let relation = if key.as_ref().is_some_and(|k| chain.contains(k)) {
        MADE_WITH
    } else {
        NAMES
    };
    let event_name = s(&row, "eventname");
    TimelineRow {
        ms: millis(&time),
        time,
        event_id: s(&row, "eventid"),
        key,
        relation,
        identity_type: s(&ident, "type"),
        identity_arn: s(&ident, "arn"),
        event_source: s(&row, "eventsource"),
        region: s(&row, "awsregion"),
        source_ip: s(&row, "sourceipaddress"),
        user_agent: s(&row, "useragent"),
        error_code: s(&row, "errorcode"),
        summary: summary::summarize(
            event_name.as_deref().unwrap_or(""),
            row.get("requestparameters"),
            row.get("responseelements"),
        ),
        event_name,
        event: row,
    }
}

fn activity(timeline: &[TimelineRow]) -> Activity {
    let mine: Vec<&TimelineRow> = timeline
        .iter()
        .filter(|t| t.relation == MADE_WITH)
        .collect();
    let tally = |f: &dyn Fn(&TimelineRow) -> Option<String>| -> Vec<Seen> {
        let mut m: BTreeMap<String, Seen> = BTreeMap::new();
        for t in &mine {
            let Some(v) = f(t) else { continue };
            let e = m.entry(v.clone()).or_insert_with(|| Seen {
                value: v,
                events: 0,
                errors: 0,
                first: t.time.clone(),
                last: t.time.clone(),
                keys: Vec::new(),
            });
            e.events += 1;
            e.errors += u64::from(t.error_code.is_some());
            e.last.clone_from(&t.time);
            if let Some(k) = &t.key
                && !e.keys.contains(k)
            {
                e.keys.push(k.clone());
            }
        }
        let mut v: Vec<Seen> = m.into_values().collect();
        v.sort_by(|a, b| b.events.cmp(&a.events).then_with(|| a.first.cmp(&b.first)));
        v
    };
    Activity {
        first_seen: mine.first().map(|t| t.time.clone()),
        last_seen: mine.last().map(|t| t.time.clone()),
        events: mine.len() as u64,
        errors: mine.iter().filter(|t| t.error_code.is_some()).count() as u64,
        source_ips: tally(&|t| t.source_ip.clone()),
        user_agents: tally(&|t| t.user_agent.clone()),
        regions: tally(&|t| t.region.clone()),
        services: tally(&|t| t.event_source.clone()),
    }
}
