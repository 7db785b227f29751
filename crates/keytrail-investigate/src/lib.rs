//! The leaked-key investigation: from one or more access keys, follow every credential
//! derived from them (the minting calls of `keytrail_model::facts`: AssumeRole,
//! GetSessionToken, GetFederationToken, AssumeRoot, CreateAccessKey, ...), then account for
//! every event made with any key of that chain: the keys' activity, its blast radius grouped as
//! AWS's compromised-key checklist groups it, where it came from, and the full timeline.
//!
//! Everything is read through the engine, whose key index hands DataFusion only the rows of
//! the keys asked for. What an event means (the key it minted, the key it deactivated, denied
//! or not, the account) comes from the lake's fact columns, never from re-parsing JSON.
//!
//! Memory does not grow with the timeline: [`investigate`] streams the chain's events once to
//! compute everything but the rows, and [`Timeline`] streams the rows again, in time order,
//! a bounded chunk of days at a time, for the renderer to write as they come.

mod blast;
pub mod raw;
mod summary;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::common::runtime::SpawnedTask;
use datafusion::logical_expr::{Expr, col};
use datafusion::prelude::DataFrame;
use futures::StreamExt;
use keytrail_engine::rows::{from_batch, from_batches};
use keytrail_engine::window::{any_in, any_of, date, window};
use keytrail_engine::{EngineError, LakeSession, SessionOptions, block_on};
use keytrail_lake::Relation;
use keytrail_model::schema::col as c;
use keytrail_model::time::format_millis;
use keytrail_model::{AccessKeyId, KeyKind, KeyStatus, Millis, Table};
use serde::{Deserialize, Serialize};

pub use blast::BlastItem;
use blast::{Blast, Call};

/// Links followed at most (role chaining deeper than this is reported, not followed).
pub const MAX_DEPTH: usize = 32;

/// Timeline rows read and sorted at a time.
const CHUNK_ROWS: u64 = 25_000;

/// What can go wrong investigating.
#[derive(Debug, thiserror::Error)]
pub enum InvestigateError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Ingest(#[from] keytrail_ingest::IngestError),
    #[error("{}: {reason}", path.display())]
    Input {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl From<datafusion::error::DataFusionError> for InvestigateError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        InvestigateError::Engine(e.into())
    }
}

impl From<keytrail_lake::LakeError> for InvestigateError {
    fn from(e: keytrail_lake::LakeError) -> Self {
        InvestigateError::Engine(e.into())
    }
}

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
    /// minting call).
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
    /// The credentials' expiry (temporary credentials only).
    pub expiration: Option<String>,
    /// The principal the child acts as (assumed-role or federated-user ARN, or user name).
    pub child_principal: Option<String>,
    pub source_ip: Option<String>,
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

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Window {
    pub since: Option<String>,
    pub until: Option<String>,
}

/// The whole answer but the timeline's rows (see [`Timeline`]).
#[derive(Clone, Debug, Serialize)]
pub struct Investigation {
    pub start_keys: Vec<String>,
    pub window: Window,
    pub keys: Vec<ChainKey>,
    pub derived: Vec<Edge>,
    pub blast_radius: Vec<BlastItem>,
    pub activity: Activity,
    /// How many rows the timeline has.
    pub timeline_rows: u64,
    /// How many of the timeline's source objects a valid digest chain covered.
    pub custody: keytrail_custody::SourceCoverage,
    /// Plain statements a responder must read (credentials used after deactivation, limits).
    pub notes: Vec<String>,
    #[serde(skip)]
    since: Option<Millis>,
    #[serde(skip)]
    until: Option<Millis>,
}

/// `made-with-chain-key`: an event made with a key of the chain.
pub const MADE_WITH: &str = "made-with-chain-key";
/// `names-chain-key`: an event made by someone else that names a key of the chain (its
/// deactivation or deletion, a minting call that returned it).
pub const NAMES: &str = "names-chain-key";

/// One event of the timeline.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TimelineRow {
    pub time: String,
    pub event_id: Option<String>,
    /// The key the event was made with.
    pub key: Option<String>,
    /// [`MADE_WITH`] or [`NAMES`].
    pub relation: &'static str,
    pub identity_type: Option<String>,
    pub identity_arn: Option<String>,
    pub event_source: Option<String>,
    pub event_name: Option<String>,
    pub region: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub error_code: Option<String>,
    /// What was asked, in a few words (the resources it touched).
    pub summary: String,
}

/// A key ID taken from log data that can be an access key ID.
fn plausible_key(s: &str) -> bool {
    (16..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
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

async fn events(session: &LakeSession) -> Result<DataFrame, EngineError> {
    Ok(session.context().table(Table::Events.name()).await?)
}

/// A minting call made with a key, as the `minted*` facts give it.
#[derive(Debug, Deserialize)]
struct MintRow {
    accesskeyid: String,
    eventid: Option<String>,
    eventtime: i64,
    eventname: Option<String>,
    sourceipaddress: Option<String>,
    mintedkeyid: String,
    mintedexpiration: Option<i64>,
    mintedprincipal: Option<String>,
}

/// The chain from `start`: every key minted by a successful call of a key already in the set,
/// until nothing new is found. Returns the keys and the edges, in minting order.
pub async fn chain(
    session: &LakeSession,
    start: &[AccessKeyId],
    notes: &mut Vec<String>,
) -> Result<(BTreeMap<String, ChainKey>, Vec<Edge>), EngineError> {
    let mut keys: BTreeMap<String, ChainKey> = BTreeMap::new();
    for k in start {
        keys.insert(k.as_str().to_owned(), new_key(k.as_str(), 0, None));
    }
    let mut edges: Vec<Edge> = Vec::new();
    let mut seen_events = BTreeSet::new();
    let mut frontier: BTreeSet<String> = keys.keys().cloned().collect();
    let mut depth = 0;
    while !frontier.is_empty() {
        if depth >= MAX_DEPTH {
            notes.push(format!(
                "The chain is deeper than {MAX_DEPTH} links; keys below that depth were not followed: {}",
                frontier.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
            break;
        }
        let rows: Vec<MintRow> = from_batches(
            &events(session)
                .await?
                .filter(
                    any_of(c::ACCESSKEYID, frontier.iter().map(String::as_str))
                        .and(col(c::MINTEDKEYID).is_not_null()),
                )?
                .select_columns(&[
                    c::ACCESSKEYID,
                    c::EVENTID,
                    c::EVENTTIME,
                    c::EVENTNAME,
                    c::SOURCEIPADDRESS,
                    c::MINTEDKEYID,
                    c::MINTEDEXPIRATION,
                    c::MINTEDPRINCIPAL,
                ])?
                .sort_by(vec![col(c::EVENTTIME), col(c::EVENTID)])?
                .collect()
                .await?,
        )?;
        frontier.clear();
        depth += 1;
        for r in rows {
            let child = r.mintedkeyid;
            if !plausible_key(&child) {
                notes.push(format!(
                    "Event {} returned an access key ID keytrail cannot use: {child:?}",
                    r.eventid.clone().unwrap_or_default()
                ));
                continue;
            }
            if !seen_events.insert((r.eventid.clone(), child.clone())) {
                continue;
            }
            let edge = Edge {
                parent: r.accesskeyid.clone(),
                child: child.clone(),
                event_name: r.eventname.unwrap_or_default(),
                event_id: r.eventid,
                time: format_millis(r.eventtime),
                expiration: r.mintedexpiration.map(format_millis),
                child_principal: r.mintedprincipal,
                source_ip: r.sourceipaddress,
                ms: r.eventtime,
            };
            if !keys.contains_key(&child) {
                let mut k = new_key(&child, depth, Some(r.accesskeyid));
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
    edges.sort_by(|a, b| (a.ms, &a.event_id).cmp(&(b.ms, &b.event_id)));
    Ok((keys, edges))
}

/// A key lifecycle event naming a chain key.
#[derive(Debug, Deserialize)]
struct LifecycleRow {
    targetkeyid: String,
    keystatus: Option<String>,
    eventname: Option<String>,
    eventtime: i64,
    eventid: Option<String>,
    by: Option<String>,
}

/// The first deactivation (`keystatus` Inactive or Deleted) of each chain key, by anyone.
async fn deactivations(
    session: &LakeSession,
    keys: &mut BTreeMap<String, ChainKey>,
) -> Result<(), EngineError> {
    let rows: Vec<LifecycleRow> = from_batches(
        &events(session)
            .await?
            .filter(
                any_of(c::TARGETKEYID, keys.keys().map(String::as_str))
                    .and(col(c::KEYSTATUS).is_not_null()),
            )?
            .select(vec![
                col(c::TARGETKEYID),
                col(c::KEYSTATUS),
                col(c::EVENTNAME),
                col(c::EVENTTIME),
                col(c::EVENTID),
                datafusion::functions::core::expr_fn::get_field(col(c::USERIDENTITY), "arn")
                    .alias("by"),
            ])?
            .sort_by(vec![col(c::EVENTTIME), col(c::EVENTID)])?
            .collect()
            .await?,
    )?;
    for r in rows {
        let Some(status) = r.keystatus.as_deref().and_then(KeyStatus::parse) else {
            continue;
        };
        if !status.is_deactivation() {
            continue;
        }
        let action = match status {
            KeyStatus::Deleted => "DeleteAccessKey".to_owned(),
            _ => format!(
                "{} ({status})",
                r.eventname.as_deref().unwrap_or("UpdateAccessKey")
            ),
        };
        if let Some(ck) = keys.get_mut(&r.targetkeyid)
            && ck.deactivated.is_none()
        {
            ck.deactivated = Some(Deactivation {
                time: format_millis(r.eventtime),
                ms: r.eventtime,
                action,
                event_id: r.eventid,
                by: r.by,
            });
        }
    }
    Ok(())
}

/// The timeline's rows: made with a chain key, or naming one; within the window.
fn timeline_filter(chain: &BTreeSet<String>, since: Option<Millis>, until: Option<Millis>) -> Expr {
    any_in(
        &[c::ACCESSKEYID, c::TARGETKEYID, c::MINTEDKEYID],
        chain.iter().map(String::as_str),
    )
    .and(window(since, until))
}

/// What pass one reads of each timeline event.
#[derive(Debug, Deserialize)]
struct CallRow {
    accesskeyid: Option<String>,
    eventtime: i64,
    eventid: Option<String>,
    eventsource: Option<String>,
    eventname: Option<String>,
    awsregion: Option<String>,
    sourceipaddress: Option<String>,
    useragent: Option<String>,
    errorcode: Option<String>,
    denied: bool,
    readonly: Option<bool>,
    calleraccountid: Option<String>,
    arn: Option<String>,
    requestparameters: Option<String>,
    mintedkeyid: Option<String>,
    mintedprincipal: Option<String>,
    sourceobject: Option<String>,
}

#[derive(Default)]
struct KeyTally {
    events: u64,
    errors: u64,
    first: Option<i64>,
    last: Option<i64>,
    latest_arn: Option<(i64, String)>,
    account: Option<String>,
    after_deactivation: u64,
}

#[derive(Default)]
struct SeenTally {
    events: u64,
    errors: u64,
    first: i64,
    last: i64,
    keys: BTreeSet<String>,
}

#[derive(Default)]
struct Tallies {
    ips: HashMap<String, SeenTally>,
    agents: HashMap<String, SeenTally>,
    regions: HashMap<String, SeenTally>,
    services: HashMap<String, SeenTally>,
}

fn tally(
    map: &mut HashMap<String, SeenTally>,
    value: &Option<String>,
    t: i64,
    failed: bool,
    key: &str,
) {
    let Some(v) = value else { return };
    // Most values were seen before: look them up without copying them.
    let e = match map.get_mut(v) {
        Some(e) => e,
        None => map.entry(v.clone()).or_insert_with(|| SeenTally {
            first: t,
            last: t,
            ..SeenTally::default()
        }),
    };
    e.events += 1;
    e.errors += u64::from(failed);
    e.first = e.first.min(t);
    e.last = e.last.max(t);
    if !e.keys.contains(key) {
        e.keys.insert(key.to_owned());
    }
}

fn seen_list(map: HashMap<String, SeenTally>) -> Vec<Seen> {
    let mut v: Vec<(i64, Seen)> = map
        .into_iter()
        .map(|(value, t)| {
            (
                t.first,
                Seen {
                    value,
                    events: t.events,
                    errors: t.errors,
                    first: format_millis(t.first),
                    last: format_millis(t.last),
                    keys: t.keys.into_iter().collect(),
                },
            )
        })
        .collect();
    v.sort_by(|a, b| {
        b.1.events
            .cmp(&a.1.events)
            .then(a.0.cmp(&b.0))
            .then(a.1.value.cmp(&b.1.value))
    });
    v.into_iter().map(|(_, s)| s).collect()
}

/// Investigate over an open lake: everything but the timeline's rows, which
/// [`Timeline::open`] then streams.
pub async fn investigate(
    session: &LakeSession,
    opts: &InvestigateOptions,
) -> Result<Investigation, InvestigateError> {
    if opts.keys.is_empty() {
        return Err(InvestigateError::Invalid(
            "give at least one access key ID to investigate".into(),
        ));
    }
    let mut notes = Vec::new();
    let (mut keys, derived) = chain(session, &opts.keys, &mut notes).await?;
    deactivations(session, &mut keys).await?;
    let all: BTreeSet<String> = keys.keys().cloned().collect();

    // The earliest deactivation of each key's ancestors.
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

    // Pass one over the timeline's events: per key, per value, the blast radius.
    let mut per_key: HashMap<String, KeyTally> = HashMap::new();
    let mut tallies = Tallies::default();
    let mut blast = Blast::default();
    let mut rows = 0u64;
    let (mut first, mut last, mut total, mut failed_total) = (None::<i64>, None::<i64>, 0u64, 0u64);
    let df = events(session)
        .await?
        .filter(timeline_filter(&all, opts.since, opts.until))?
        .select(vec![
            col(c::ACCESSKEYID),
            col(c::EVENTTIME),
            col(c::EVENTID),
            col(c::EVENTSOURCE),
            col(c::EVENTNAME),
            col(c::AWSREGION),
            col(c::SOURCEIPADDRESS),
            col(c::USERAGENT),
            col(c::ERRORCODE),
            col(c::DENIED),
            col("readonly"),
            col(c::CALLERACCOUNTID),
            datafusion::functions::core::expr_fn::get_field(col(c::USERIDENTITY), "arn")
                .alias("arn"),
            col(c::REQUESTPARAMETERS),
            col(c::MINTEDKEYID),
            col(c::MINTEDPRINCIPAL),
            col(c::SOURCEOBJECT),
        ])?;
    let mut sources: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        for r in from_batch::<CallRow>(&batch?)? {
            rows += 1;
            if let Some(o) = &r.sourceobject
                && !sources.contains(o)
            {
                sources.insert(o.clone());
            }
            let Some(key) = r.accesskeyid.as_deref().filter(|k| all.contains(*k)) else {
                continue; // names a chain key; made by someone else
            };
            let t = r.eventtime;
            let failed = r.errorcode.is_some();
            total += 1;
            failed_total += u64::from(failed);
            first = Some(first.map_or(t, |f: i64| f.min(t)));
            last = Some(last.map_or(t, |l: i64| l.max(t)));
            let k = per_key.entry(key.to_owned()).or_default();
            k.events += 1;
            k.errors += u64::from(failed);
            k.first = Some(k.first.map_or(t, |f| f.min(t)));
            k.last = Some(k.last.map_or(t, |l| l.max(t)));
            if let Some(arn) = &r.arn
                && k.latest_arn.as_ref().is_none_or(|(lt, _)| t >= *lt)
            {
                k.latest_arn = Some((t, arn.clone()));
            }
            if k.account.is_none() {
                k.account.clone_from(&r.calleraccountid);
            }
            if let Some((_, ms)) = ancestors_deactivated.get(key)
                && t > *ms
            {
                k.after_deactivation += 1;
            }
            tally(&mut tallies.ips, &r.sourceipaddress, t, failed, key);
            tally(&mut tallies.agents, &r.useragent, t, failed, key);
            tally(&mut tallies.regions, &r.awsregion, t, failed, key);
            tally(&mut tallies.services, &r.eventsource, t, failed, key);
            blast.add(&Call {
                source: r.eventsource.as_deref().unwrap_or_default(),
                name: r.eventname.as_deref().unwrap_or_default(),
                key: Some(key),
                time: t,
                event_id: r.eventid.as_deref(),
                error_code: r.errorcode.as_deref(),
                denied: r.denied,
                readonly: r.readonly,
                request: r.requestparameters.as_deref(),
                minted_key: r.mintedkeyid.as_deref(),
                minted_principal: r.mintedprincipal.as_deref(),
            });
        }
    }

    for (k, ck) in keys.iter_mut() {
        let Some(t) = per_key.remove(k) else {
            continue;
        };
        ck.events = t.events;
        ck.errors = t.errors;
        ck.first_seen = t.first.map(format_millis);
        ck.last_seen = t.last.map(format_millis);
        if let Some((_, arn)) = t.latest_arn {
            ck.principal = Some(arn);
        }
        if ck.account.is_none() {
            ck.account = t.account;
        }
        ck.used_after_ancestor_deactivated = t.after_deactivation;
    }
    for (k, (ancestor, _)) in &ancestors_deactivated {
        let ck = &keys[k];
        if ck.used_after_ancestor_deactivated > 0 {
            let when = keys[ancestor]
                .deactivated
                .as_ref()
                .map(|d| d.time.clone())
                .unwrap_or_default();
            let why = if ck.kind == KeyKind::Temporary.as_str() {
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
        if k.deactivated.is_none() && k.kind == KeyKind::LongTerm.as_str() && k.events > 0 {
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

    // Chain of custody: how many of the timeline's source objects a valid digest chain covered
    // (what `keytrail ingest --verify-logs` recorded in the manifest).
    let records = session
        .manifest()
        .commits()
        .iter()
        .flat_map(|c| c.objects.iter())
        .map(|o| (o.source.as_str(), o.custody.as_deref()));
    let custody = keytrail_custody::source_coverage(sources.iter().map(String::as_str), records);
    if custody.sources > 0 {
        notes.push(format!(
            "Chain of custody: {custody}{}.",
            if custody
                .by_status
                .contains_key(keytrail_custody::coverage::NOT_CHECKED)
            {
                "; the objects not checked were ingested without --verify-logs (docs/custody.md)"
            } else {
                ""
            }
        ));
    }

    let activity = Activity {
        first_seen: first.map(format_millis),
        last_seen: last.map(format_millis),
        events: total,
        errors: failed_total,
        source_ips: seen_list(tallies.ips),
        user_agents: seen_list(tallies.agents),
        regions: seen_list(tallies.regions),
        services: seen_list(tallies.services),
    };
    Ok(Investigation {
        start_keys: opts.keys.iter().map(|k| k.as_str().to_owned()).collect(),
        window: Window {
            since: opts.since.map(format_millis),
            until: opts.until.map(format_millis),
        },
        keys: tree_order(keys, &derived),
        derived,
        blast_radius: blast.finish(),
        activity,
        timeline_rows: rows,
        custody,
        notes,
        since: opts.since,
        until: opts.until,
    })
}

/// The keys as a tree, depth first: each key followed by the keys it minted, in minting order.
fn tree_order(mut keys: BTreeMap<String, ChainKey>, edges: &[Edge]) -> Vec<ChainKey> {
    let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // A key has one parent, so it is listed once, under the first edge from it (a key minting
    // tens of thousands is common in automation: no scan of the list per edge).
    let mut listed: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for e in edges {
        if keys
            .get(&e.child)
            .is_some_and(|c| c.parent.as_deref() == Some(e.parent.as_str()))
            && listed.insert(e.child.as_str())
        {
            children
                .entry(e.parent.clone())
                .or_default()
                .push(e.child.clone());
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

/// One chunk of the timeline: its rows and, when asked for, each row's whole event as the lake
/// holds it, as JSON text (JSON columns embedded as JSON).
#[derive(Clone, Debug, Default)]
pub struct TimelineChunk {
    pub rows: Vec<TimelineRow>,
    pub events_json: Vec<String>,
}

/// What the timeline reads of each row besides the whole event.
#[derive(Debug, Deserialize)]
struct TimelineFields {
    accesskeyid: Option<String>,
    eventtime: i64,
    eventid: Option<String>,
    eventsource: Option<String>,
    eventname: Option<String>,
    awsregion: Option<String>,
    sourceipaddress: Option<String>,
    useragent: Option<String>,
    errorcode: Option<String>,
    requestparameters: Option<String>,
    mintedkeyid: Option<String>,
    mintedprincipal: Option<String>,
    kt_type: Option<String>,
    kt_arn: Option<String>,
}

/// A chunk being read.
type Reading = SpawnedTask<Result<TimelineChunk, InvestigateError>>;

/// The timeline's rows in time order, read a bounded chunk of days at a time. The next chunk
/// is read while the caller writes the one it was given (so at most two are in memory).
pub struct Timeline {
    chain: Arc<BTreeSet<String>>,
    /// Of every chunk, built once: its key set is the chain's.
    filter: Expr,
    /// Inclusive day ranges still to read.
    chunks: std::vec::IntoIter<(i32, i32)>,
    with_events: bool,
    /// The next chunk, being read (stopped if the timeline is dropped).
    ahead: Option<Reading>,
}

impl Timeline {
    /// Plan the timeline of `inv`: the days its rows are on, from the key index, in chunks of
    /// about [`CHUNK_ROWS`] rows. With `with_events`, each row's whole event comes too.
    pub async fn open(
        session: &LakeSession,
        inv: &Investigation,
        with_events: bool,
    ) -> Result<Timeline, InvestigateError> {
        Timeline::open_in_chunks(session, inv, with_events, CHUNK_ROWS).await
    }

    /// [`Timeline::open`] in chunks of whole days of about `chunk_rows` rows (a day's rows
    /// are never split; a day of more rows is a chunk of its own).
    pub async fn open_in_chunks(
        session: &LakeSession,
        inv: &Investigation,
        with_events: bool,
        chunk_rows: u64,
    ) -> Result<Timeline, InvestigateError> {
        let chain: BTreeSet<String> = inv.keys.iter().map(|k| k.key.clone()).collect();
        let list: Vec<&str> = chain.iter().map(String::as_str).collect();
        let snapshot = session.snapshot();
        let mut per_day: BTreeMap<i32, u64> = BTreeMap::new();
        let days: HashMap<&str, i32> = snapshot
            .table_files(Table::Events)
            .map(|f| (f.record.path.as_str(), f.day))
            .collect();
        for e in session.lookup(&list, Relation::Any).await? {
            if let Some(d) = days.get(e.file.as_str()) {
                *per_day.entry(*d).or_default() += e.rows;
            }
        }
        // Files the index does not cover are read whole, each day on its own.
        for f in snapshot.table_files(Table::Events).filter(|f| !f.indexed) {
            *per_day.entry(f.day).or_default() += f.record.rows;
        }
        let mut chunks = Vec::new();
        let mut current: Option<(i32, i32, u64)> = None;
        for (day, rows) in per_day {
            current = match current {
                Some((a, _, n)) if n + rows <= chunk_rows => Some((a, day, n + rows)),
                Some((a, b, _)) => {
                    chunks.push((a, b));
                    Some((day, day, rows))
                }
                None => Some((day, day, rows)),
            };
        }
        if let Some((a, b, _)) = current {
            chunks.push((a, b));
        }
        Ok(Timeline {
            filter: timeline_filter(&chain, inv.since, inv.until),
            chain: Arc::new(chain),
            chunks: chunks.into_iter(),
            with_events,
            ahead: None,
        })
    }

    /// The next chunk of rows, in time order; `None` at the end.
    pub async fn next(
        &mut self,
        session: &LakeSession,
    ) -> Result<Option<TimelineChunk>, InvestigateError> {
        loop {
            let current = match self.ahead.take() {
                Some(r) => r,
                None => match self.start(session).await? {
                    Some(r) => r,
                    None => return Ok(None),
                },
            };
            self.ahead = self.start(session).await?;
            let chunk = current.join().await.map_err(|e| {
                InvestigateError::Invalid(format!("internal: reading the timeline failed: {e}"))
            })??;
            if !chunk.rows.is_empty() {
                return Ok(Some(chunk));
            }
        }
    }

    /// Start reading the next chunk of days, if any is left.
    async fn start(&mut self, session: &LakeSession) -> Result<Option<Reading>, InvestigateError> {
        let Some((a, b)) = self.chunks.next() else {
            return Ok(None);
        };
        let df = events(session).await?.filter(
            self.filter
                .clone()
                .and(col(c::DATE).gt_eq(date(a)))
                .and(col(c::DATE).lt_eq(date(b))),
        )?;
        let chain = Arc::clone(&self.chain);
        let with_events = self.with_events;
        Ok(Some(SpawnedTask::spawn(async move {
            // Each batch is turned into rows as it is read and dropped; the chunk is then put in
            // time order here (sorting the batches in DataFusion would hold them, sorted, beside
            // the rows made of them).
            let mut stream = df.execute_stream().await?;
            let mut read: Vec<(i64, TimelineRow, Option<String>)> = Vec::new();
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                let fields = fields_of(&batch)?;
                let mut events = if with_events {
                    events_json(&batch)?
                } else {
                    Vec::new()
                }
                .into_iter();
                for f in from_batch::<TimelineFields>(&fields)? {
                    let ms = f.eventtime;
                    read.push((ms, timeline_row(&chain, f), events.next()));
                }
            }
            read.sort_by(|a, b| {
                a.0.cmp(&b.0)
                    .then_with(|| nulls_last(&a.1.event_id, &b.1.event_id))
            });
            let mut chunk = TimelineChunk {
                rows: Vec::with_capacity(read.len()),
                events_json: Vec::with_capacity(if with_events { read.len() } else { 0 }),
            };
            for (_, row, event) in read {
                chunk.rows.push(row);
                chunk.events_json.extend(event);
            }
            Ok(chunk)
        })))
    }
}

/// `a` and `b` in order, `None` after every value.
fn nulls_last(a: &Option<String>, b: &Option<String>) -> std::cmp::Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.cmp(b),
        (a, b) => a.is_none().cmp(&b.is_none()),
    }
}

/// A row of the timeline of the keys of `chain`.
fn timeline_row(chain: &BTreeSet<String>, f: TimelineFields) -> TimelineRow {
    let relation = if f.accesskeyid.as_ref().is_some_and(|k| chain.contains(k)) {
        MADE_WITH
    } else {
        NAMES
    };
    TimelineRow {
        time: format_millis(f.eventtime),
        event_id: f.eventid,
        key: f.accesskeyid,
        relation,
        identity_type: f.kt_type,
        identity_arn: f.kt_arn,
        event_source: f.eventsource,
        summary: summary::summarize(
            f.eventname.as_deref().unwrap_or_default(),
            f.requestparameters.as_deref(),
            f.mintedkeyid.as_deref(),
            f.mintedprincipal.as_deref(),
        ),
        event_name: f.eventname,
        region: f.awsregion,
        source_ip: f.sourceipaddress,
        user_agent: f.useragent,
        error_code: f.errorcode,
    }
}

/// The columns [`TimelineFields`] reads, from a batch of whole `events` rows.
fn fields_of(batch: &arrow::array::RecordBatch) -> Result<arrow::array::RecordBatch, EngineError> {
    use arrow::array::{Array, AsArray};
    let mut cols: Vec<(&str, Arc<dyn Array>)> = Vec::new();
    for name in [
        c::ACCESSKEYID,
        c::EVENTTIME,
        c::EVENTID,
        c::EVENTSOURCE,
        c::EVENTNAME,
        c::AWSREGION,
        c::SOURCEIPADDRESS,
        c::USERAGENT,
        c::ERRORCODE,
        c::REQUESTPARAMETERS,
        c::MINTEDKEYID,
        c::MINTEDPRINCIPAL,
    ] {
        let a = batch
            .column_by_name(name)
            .ok_or_else(|| EngineError::Invalid(format!("internal: no column {name}")))?;
        cols.push((name, Arc::clone(a)));
    }
    let ui = batch
        .column_by_name(c::USERIDENTITY)
        .and_then(|a| a.as_struct_opt())
        .ok_or_else(|| EngineError::Invalid("internal: no useridentity".into()))?;
    for (field, name) in [("type", "kt_type"), ("arn", "kt_arn")] {
        let a = ui
            .column_by_name(field)
            .ok_or_else(|| EngineError::Invalid(format!("internal: no useridentity.{field}")))?;
        // A null identity makes its members null.
        let a = match ui.nulls() {
            Some(n) if n.null_count() > 0 => {
                let s = a.as_string::<i32>();
                Arc::new(
                    (0..s.len())
                        .map(|i| (ui.is_valid(i) && s.is_valid(i)).then(|| s.value(i)))
                        .collect::<arrow::array::StringArray>(),
                ) as Arc<dyn Array>
            }
            _ => Arc::clone(a),
        };
        cols.push((name, a));
    }
    Ok(arrow::array::RecordBatch::try_from_iter(cols)?)
}

/// Each row of a batch of whole `events` rows as one JSON object: every column, nulls
/// written, timestamps in RFC 3339, the JSON columns embedded as JSON.
pub fn events_json(batch: &arrow::array::RecordBatch) -> Result<Vec<String>, EngineError> {
    keytrail_engine::json::rows_as_json(batch)
}

/// Investigate the lake at `lake` (everything but the timeline's rows).
pub fn investigate_lake(
    lake: impl Into<keytrail_engine::LakeLocation>,
    opts: &InvestigateOptions,
    session: &SessionOptions,
) -> Result<Investigation, InvestigateError> {
    block_on(session.threads, async {
        let s = LakeSession::open(lake, session).await?;
        investigate(&s, opts).await
    })
}

/// The timeline's rows of an investigation of `root` (for tests and callers that want them in
/// memory; renderers stream [`Timeline`] instead).
pub async fn timeline_rows(
    session: &LakeSession,
    inv: &Investigation,
) -> Result<Vec<TimelineRow>, InvestigateError> {
    let mut t = Timeline::open(session, inv, false).await?;
    let mut out = Vec::new();
    while let Some(chunk) = t.next(session).await? {
        out.extend(chunk.rows);
    }
    Ok(out)
}
