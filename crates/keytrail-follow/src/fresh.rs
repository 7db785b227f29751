//! Findings on arrival: what the events of new commits raise.
//!
//! For the commits after the findings cursor (`seq > after`):
//!
//! - **Rules** run over the new events alone: the `events` files those commits added (or,
//!   when a later rewrite replaced them, the rows whose `sourceobject` the commits read).
//!   Every finding is new. A rule's matches group into one finding per key within an hour as
//!   in `keytrail detect`, but only within one batch; whether a match is routine is judged, as
//!   in `keytrail detect`, against what the same rule matched in the lake before.
//! - **Detectors** need a key's history. They read the *touched* keys (keys that made a new
//!   event or that a new event changed or minted, and the keys those keys minted) one by one
//!   with their whole history, keys' lifecycle and lineage from every event, and what the
//!   touched keys' principals did with any of their keys (first calls, calls of the catalog
//!   of abused calls), twice: on the lake as it is and on the lake without the new commits'
//!   events. A finding is new when its identity (detector, key, first event) is in the first
//!   run and not in the second: findings that only grew with the new events (a burst that
//!   goes on) are not raised again, and findings of old events are never raised for the first
//!   time here. What a detector learns across keys from the keys it reads (the addresses
//!   people's long-term keys use) comes from the touched keys only.
//!
//! The identity of a finding is its rule, its key (else its principal) and its first event:
//! [`identity`].

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use keytrail_detect::{DetectOptions, Finding, RuleSet, Severity, detect_in, detectors};
use keytrail_engine::datafusion::logical_expr::Expr;
use keytrail_engine::datafusion::prelude::{DataFrame, SessionContext, col, lit};
use keytrail_engine::{LakeLocation, LakeSession, SessionOptions};
use keytrail_lake::{DataFile, Manifest, Snapshot};
use keytrail_model::Table;
use keytrail_model::schema::col as c;

use crate::error::FollowError;

/// How to detect on arrival.
#[derive(Clone, Debug)]
pub struct Detection {
    pub rules: RuleSet,
    /// Run the stateful detectors too.
    pub detectors: bool,
    pub min_severity: Severity,
    pub config: detectors::Config,
    pub threads: usize,
}

impl Default for Detection {
    fn default() -> Self {
        Detection {
            rules: RuleSet::default(),
            detectors: true,
            min_severity: Severity::Low,
            config: detectors::Config::default(),
            threads: SessionOptions::default().threads,
        }
    }
}

/// A finding raised on arrival.
#[derive(Clone, Debug)]
pub struct Raised {
    /// [`identity`] of the finding.
    pub id: String,
    /// The last commit of the ones whose events raised it.
    pub commit: u64,
    pub finding: Finding,
}

/// What the new commits raised.
#[derive(Clone, Debug, Default)]
pub struct Fresh {
    /// The last commit looked at.
    pub upto: u64,
    pub findings: Vec<Raised>,
    /// Events of the new commits.
    pub events: u64,
    /// Keys whose history the detectors read.
    pub touched: usize,
}

/// A finding's identity: xxh3-128 of its rule, its key (else its principal) and its first
/// event ID, as 32 hex digits. The same finding found again has the same identity, even when
/// later events added to its evidence.
pub fn identity(f: &Finding) -> String {
    let who = f.key.as_deref().or(f.principal.as_deref()).unwrap_or("");
    let first = f.events.first().map_or("", String::as_str);
    format!(
        "{:032x}",
        xxhash_rust::xxh3::xxh3_128(format!("{}\0{who}\0{first}", f.rule).as_bytes())
    )
}

/// The value of `sourceobject` for an object the manifest records (`file://` paths are shown
/// without the scheme).
fn shown(source: &str) -> String {
    source.strip_prefix("file://").unwrap_or(source).to_owned()
}

fn subset(snap: &Snapshot, keep: impl Fn(&DataFile) -> bool) -> Snapshot {
    Snapshot {
        root: snap.root.clone(),
        seq: snap.seq,
        files: snap
            .files
            .iter()
            .filter(|f| f.table == Table::Events && keep(f))
            .cloned()
            .collect(),
        index_files: snap.index_files.clone(),
        index: snap.index.clone(),
    }
}

/// Rows of `events` by the objects that were read: only these, or all but these.
#[derive(Clone)]
enum Objects {
    Only(Vec<String>),
    Except(Vec<String>),
}

/// Make `events` in `ctx` the rows of `snap` (restricted by `objects`), read as `session`
/// reads its files.
async fn use_events(
    session: &LakeSession,
    ctx: &SessionContext,
    snap: Snapshot,
    objects: Option<&Objects>,
) -> Result<(), FollowError> {
    const BASE: &str = "kt_follow_events";
    // `key_daily` stays the whole lake's: the detectors only use its counts to split the
    // touched keys into ranges that bound their sort.
    for t in [Table::Events.name(), BASE] {
        ctx.deregister_table(t)
            .map_err(keytrail_engine::EngineError::from)?;
    }
    ctx.register_table(BASE, Arc::new(session.table(Table::Events, Arc::new(snap))))
        .map_err(keytrail_engine::EngineError::from)?;
    let q = |e: keytrail_engine::datafusion::error::DataFusionError| {
        FollowError::Engine(keytrail_engine::EngineError::from(e))
    };
    let mut df: DataFrame = ctx.table(BASE).await.map_err(q)?;
    let lits = |v: &[String]| v.iter().map(|s| lit(s.clone())).collect::<Vec<Expr>>();
    match objects {
        Some(Objects::Only(v)) => {
            df = df
                .filter(col(c::SOURCEOBJECT).in_list(lits(v), false))
                .map_err(q)?;
        }
        Some(Objects::Except(v)) => {
            df = df
                .filter(
                    col(c::SOURCEOBJECT)
                        .in_list(lits(v), true)
                        .or(col(c::SOURCEOBJECT).is_null()),
                )
                .map_err(q)?;
        }
        None => {}
    }
    ctx.register_table(Table::Events.name(), df.into_view())
        .map_err(keytrail_engine::EngineError::from)?;
    Ok(())
}

#[derive(serde::Deserialize)]
struct KeyRow {
    k: Option<String>,
}

async fn keys_of(ctx: &SessionContext, sql: &str) -> Result<BTreeSet<String>, FollowError> {
    let batches = ctx
        .sql(sql)
        .await
        .map_err(keytrail_engine::EngineError::from)?
        .collect()
        .await
        .map_err(keytrail_engine::EngineError::from)?;
    Ok(keytrail_engine::rows::from_batches::<KeyRow>(&batches)?
        .into_iter()
        .filter_map(|r| r.k)
        .collect())
}

async fn count(ctx: &SessionContext) -> Result<u64, FollowError> {
    #[derive(serde::Deserialize)]
    struct N {
        n: i64,
    }
    let batches = ctx
        .sql("SELECT count(*) AS n FROM events")
        .await
        .map_err(keytrail_engine::EngineError::from)?
        .collect()
        .await
        .map_err(keytrail_engine::EngineError::from)?;
    Ok(keytrail_engine::rows::from_batches::<N>(&batches)?
        .first()
        .map_or(0, |r| u64::try_from(r.n).unwrap_or(0)))
}

/// What the commits after `after` of the lake at `lake` (a directory, or a lake in S3) raise
/// (see the module's documentation).
pub fn fresh(
    lake: impl Into<LakeLocation>,
    after: u64,
    d: &Detection,
) -> Result<Fresh, FollowError> {
    fresh_as_of(lake, None, after, d)
}

/// [`fresh`] with the lake's commits as `manifest` when the caller has just read them (a lake
/// in an object store: see [`LakeSession::open_as_of`]).
pub fn fresh_as_of(
    lake: impl Into<LakeLocation>,
    manifest: Option<Manifest>,
    after: u64,
    d: &Detection,
) -> Result<Fresh, FollowError> {
    let lake = lake.into();
    keytrail_engine::block_on(d.threads, async {
        let started = std::time::Instant::now();
        let phase = |what: &str| {
            tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                "findings of new commits: {what}"
            );
        };
        let session = LakeSession::open_as_of(
            &lake,
            manifest,
            &SessionOptions {
                threads: d.threads,
                ..SessionOptions::default()
            },
        )
        .await?;
        let snap = session.snapshot().clone();
        let mut out = Fresh {
            upto: snap.seq.max(after),
            ..Fresh::default()
        };
        if snap.seq <= after {
            return Ok(out);
        }
        let manifest = session.manifest();
        let pending: Vec<_> = manifest
            .commits()
            .iter()
            .filter(|c| c.seq > after && c.seq <= snap.seq && !c.objects.is_empty())
            .collect();
        if pending.is_empty() {
            return Ok(out);
        }
        let new_files: HashSet<&str> = pending
            .iter()
            .flat_map(|c| c.files.iter())
            .filter(|f| f.table == Table::Events.name())
            .map(|f| f.path.as_str())
            .collect();
        let objects: Vec<String> = pending
            .iter()
            .flat_map(|c| c.objects.iter())
            .map(|o| shown(&o.source))
            .collect();
        let live: HashSet<&str> = snap
            .table_files(Table::Events)
            .map(|f| f.record.path.as_str())
            .collect();
        // The new commits' files are all still live (no rewrite replaced them since): they
        // hold exactly the new events. Otherwise the rows are told apart by their object.
        let exact = new_files.iter().all(|f| live.contains(f));
        let (new_snap, new_rows, old_snap, old_rows) = if exact {
            (
                subset(&snap, |f| new_files.contains(f.record.path.as_str())),
                None,
                subset(&snap, |f| !new_files.contains(f.record.path.as_str())),
                None,
            )
        } else {
            (
                subset(&snap, |_| true),
                Some(Objects::Only(objects.clone())),
                subset(&snap, |_| true),
                Some(Objects::Except(objects)),
            )
        };
        let mut ctx = session.context().clone();

        phase("lake opened");
        // Rules over the new events.
        use_events(&session, &ctx, new_snap.clone(), new_rows.as_ref()).await?;
        out.events = count(&ctx).await?;
        let mut raised: Vec<Finding> = Vec::new();
        if !d.rules.rules.is_empty() {
            let report = detect_in(
                &mut ctx,
                true,
                &DetectOptions {
                    rules: d.rules.clone(),
                    detectors: false,
                    min_severity: d.min_severity,
                    threads: d.threads,
                    ..DetectOptions::default()
                },
            )
            .await?;
            // Judged routine against what the same rules matched in the lake before these
            // commits, over the days that can make them routine, as `keytrail detect` judges
            // them against the whole history.
            let first = report.findings.iter().map(|f| f.time).min();
            let last = report.findings.iter().map(|f| f.time).max();
            if let (Some(first), Some(last)) = (first, last) {
                let days =
                    i64::from(keytrail_model::time::day_of(first) - d.config.routine_window_days);
                let past = keytrail_detect::scan::window_sql(
                    Some(days * keytrail_model::time::DAY_MS),
                    Some(last),
                    true,
                );
                use_events(&session, &ctx, old_snap.clone(), old_rows.as_ref()).await?;
                let rules: Vec<&keytrail_detect::Rule> = d.rules.rules.iter().collect();
                raised.extend(
                    keytrail_detect::routine_with_past(
                        &mut ctx,
                        &rules,
                        report.findings,
                        Some(&past),
                        &d.config,
                    )
                    .await?,
                );
                raised.retain(|f| f.severity >= d.min_severity);
                // The new events again, for the touched keys below.
                use_events(&session, &ctx, new_snap, new_rows.as_ref()).await?;
            }
        }

        phase("rules ran over the new events");
        if d.detectors {
            let mut touched = keys_of(
                &ctx,
                "SELECT DISTINCT k FROM (SELECT accesskeyid AS k FROM events \
                 UNION ALL SELECT targetkeyid AS k FROM events \
                 UNION ALL SELECT mintedkeyid AS k FROM events) WHERE k IS NOT NULL",
            )
            .await?;
            if !touched.is_empty() {
                // Credentials the touched keys minted: their use after the parent's
                // deactivation is the parent's story.
                use_events(&session, &ctx, subset(&snap, |_| true), None).await?;
                let list: Vec<String> = touched
                    .iter()
                    .map(|k| keytrail_detect::compile::quote(k))
                    .collect();
                let children = keys_of(
                    &ctx,
                    &format!(
                        "SELECT DISTINCT mintedkeyid AS k FROM events \
                         WHERE mintedkeyid IS NOT NULL AND accesskeyid IN ({})",
                        list.join(", ")
                    ),
                )
                .await?;
                touched.extend(children);
                phase("touched keys and the keys they minted found");
                out.touched = touched.len();
                // Named once over the lake as it is; the run without the new events reads the
                // same principals and sessions (the keys new events made have no older
                // events, so nothing of theirs is found there either way).
                let scope = Arc::new(detectors::Scope::of(&ctx, &touched).await?);
                phase("the touched keys' principals and sessions named");
                let opts = DetectOptions {
                    rules: RuleSet::default(),
                    detectors: true,
                    min_severity: d.min_severity,
                    config: d.config.clone(),
                    threads: d.threads,
                    // What the rules pass reported, the catalog of abused calls does not
                    // report again below medium (as in `keytrail detect`).
                    reported: raised
                        .iter()
                        .filter(|f| f.severity >= Severity::Low)
                        .flat_map(|f| f.events.iter().cloned())
                        .collect(),
                    keys: Some(touched.clone()),
                    scope: Some(scope),
                    ..DetectOptions::default()
                };
                let now = detect_in(&mut ctx, true, &opts).await?;
                phase("detectors ran over the lake");
                use_events(&session, &ctx, old_snap, old_rows.as_ref()).await?;
                let before: HashSet<String> = detect_in(&mut ctx, true, &opts)
                    .await?
                    .findings
                    .iter()
                    .map(identity)
                    .collect();
                raised.extend(now.findings.into_iter().filter(|f| {
                    f.key.as_ref().is_some_and(|k| touched.contains(k))
                        && !before.contains(&identity(f))
                }));
            }
        }
        phase("done");
        raised.sort_by(|a, b| {
            (a.time, &a.key, &a.rule, &a.events).cmp(&(b.time, &b.key, &b.rule, &b.events))
        });
        let mut seen = HashSet::new();
        for f in raised {
            let id = identity(&f);
            if seen.insert(id.clone()) {
                out.findings.push(Raised {
                    id,
                    commit: snap.seq,
                    finding: f,
                });
            }
        }
        Ok(out)
    })
}
