//! Detections: rules as data (YAML under `rules/<category>/`, compiled to SQL and evaluated
//! in one scan of the lake) and stateful detectors in code (per access key: new addresses,
//! clients and regions, bursts of denied calls and of reconnaissance, one key from two
//! networks at once, workload credentials used elsewhere, use after deactivation). Findings
//! carry the rule, severity, category, time, key, principal, a one-line reason and the IDs of
//! the events that prove it; keys are ranked by their findings.
//!
//! `docs/rules.md` documents the rule format, each detector and the limits of what can be
//! judged offline.

pub mod alternatives;
pub mod catalog;
pub mod compile;
pub mod detectors;
pub mod eval;
pub mod fixture;
pub mod kept;
pub mod lint;
pub mod scan;
pub mod settings;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use datafusion::prelude::SessionContext;
use serde::Serialize;

pub use keytrail_rules::{CATEGORIES, Rule, RuleError, RuleFormat, Severity};

use keytrail_engine::{EngineError, LakeSession, SessionOptions};

mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled_rules.rs"));
}

/// What can go wrong loading rules or detecting.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A rule file that cannot be read, is not a valid rule, or uses what keytrail cannot run.
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("rule id {id} is defined twice: in {first} and in {second}")]
    Duplicate {
        id: String,
        first: String,
        second: String,
    },
    #[error("{}: {reason}", path.display())]
    Dir { path: PathBuf, reason: String },
    /// A fixture event that is not a CloudTrail record keytrail can decode.
    #[error("test event {rule}: {reason}")]
    Fixture { rule: String, reason: String },
    #[error(transparent)]
    Query(#[from] EngineError),
    #[error("building results: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<datafusion::error::DataFusionError> for DetectError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        DetectError::Query(EngineError::from(e))
    }
}

/// A set of rules with unique ids, and the rules left out because they cannot run.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    /// Rules left out: constructs keytrail cannot run, a Sigma id loaded twice.
    pub skipped: Vec<Skipped>,
}

/// A rule file left out of a set, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub origin: String,
    pub rule: Option<String>,
    pub reason: String,
}

impl RuleSet {
    /// The rules bundled with keytrail (the repository's `rules/`).
    pub fn bundled() -> Result<RuleSet, DetectError> {
        RuleSet::load(true, &[])
    }

    /// Bundled rules (unless `bundled` is false) and every `*.yaml`/`*.yml` file under each of
    /// `dirs`. A broken keytrail rule stops (the first problem is returned); a rule keytrail
    /// cannot run (a Sigma aggregation, another log source, ...) is left out and listed in
    /// [`RuleSet::skipped`].
    pub fn load(bundled: bool, dirs: &[PathBuf]) -> Result<RuleSet, DetectError> {
        let (mut set, errors) = RuleSet::collect(bundled, dirs);
        for e in errors {
            match e {
                DetectError::Rule(RuleError::Unsupported {
                    origin,
                    rule,
                    construct,
                }) => set.skipped.push(Skipped {
                    origin,
                    rule,
                    reason: construct,
                }),
                other => return Err(other),
            }
        }
        Ok(set)
    }

    /// Like [`RuleSet::load`], but go on past bad files and return every problem (for lint).
    pub fn collect(bundled: bool, dirs: &[PathBuf]) -> (RuleSet, Vec<DetectError>) {
        let mut set = RuleSet::default();
        let mut errors = Vec::new();
        let mut add = |r: Result<Rule, DetectError>, set: &mut RuleSet| match r {
            Ok(r) => {
                if let Some(first) = set.rules.iter().find(|x| x.id == r.id) {
                    // Sigma suites share rules (the same id in two folders): the second copy
                    // is left out; two keytrail rules with one id are an error.
                    if r.format == RuleFormat::Sigma {
                        errors.push(DetectError::Rule(RuleError::Unsupported {
                            origin: r.origin.clone(),
                            rule: Some(r.id.clone()),
                            construct: format!(
                                "the id {} is already loaded from {}",
                                r.id, first.origin
                            ),
                        }));
                    } else {
                        errors.push(DetectError::Duplicate {
                            id: r.id.clone(),
                            first: first.origin.clone(),
                            second: r.origin.clone(),
                        });
                    }
                } else {
                    set.rules.push(r);
                }
            }
            Err(e) => errors.push(e),
        };
        if bundled {
            for (path, text) in bundled::BUNDLED {
                add(
                    Rule::parse(text, &format!("rules/{path}")).map_err(DetectError::from),
                    &mut set,
                );
            }
        }
        for d in dirs {
            match rule_files(d) {
                Ok(files) => {
                    for f in files {
                        add(Rule::load(&f).map_err(DetectError::from), &mut set);
                    }
                }
                Err(e) => add(Err(e), &mut set),
            }
        }
        (set, errors)
    }

    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }
}

/// Every rule file under `dir` (or `dir` itself when it is a file), sorted.
pub fn rule_files(dir: &Path) -> Result<Vec<PathBuf>, DetectError> {
    if dir.is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| DetectError::Dir {
            path: d.clone(),
            reason: e.to_string(),
        })?;
        for e in entries {
            let p = e
                .map_err(|e| DetectError::Dir {
                    path: d.clone(),
                    reason: e.to_string(),
                })?
                .path();
            // Hidden entries (`.github/` of a rule repository) are not rules.
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Run `f` to completion on a runtime of `threads` workers.
pub fn block_on<T>(
    threads: usize,
    f: impl std::future::Future<Output = Result<T, DetectError>>,
) -> Result<T, DetectError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("keytrail-detect")
        // I/O for a lake in an object store (HTTP).
        .enable_all()
        .build()
        .map_err(|e| DetectError::Query(EngineError::Runtime(e)))?;
    rt.block_on(f)
}

/// Run every rule's fixtures.
pub fn test_rules(
    set: &RuleSet,
    threads: usize,
) -> Result<Vec<fixture::FixtureResult>, DetectError> {
    block_on(threads, async {
        let mut out = Vec::new();
        for r in &set.rules {
            out.extend(fixture::test_rule(r, threads).await.map_err(|e| match e {
                DetectError::Fixture { rule, reason } => DetectError::Fixture {
                    rule: format!("{rule} ({})", r.origin),
                    reason,
                },
                other => other,
            })?);
        }
        Ok(out)
    })
}

/// Where a finding comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Rule,
    Detector,
}

/// Something suspicious, with the events that prove it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: String,
    pub title: String,
    pub severity: Severity,
    pub category: String,
    pub source: Source,
    /// Time of the first event (ms since the epoch, UTC).
    #[serde(serialize_with = "ser_time")]
    pub time: i64,
    /// Time of the last event.
    #[serde(serialize_with = "ser_time")]
    pub last: i64,
    pub key: Option<String>,
    pub principal: Option<String>,
    pub account: Option<String>,
    pub source_ip: Option<String>,
    pub reason: String,
    /// IDs of the events that prove it.
    pub events: Vec<String>,
    /// Fields the rule shows, by name.
    pub details: BTreeMap<String, String>,
    /// ATT&CK tags of the rule or detector (`attack.persistence`, `attack.t1098.001`).
    pub tags: Vec<String>,
}

fn ser_time<S: serde::Serializer>(t: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&keytrail_model::time::format_millis(*t))
}

/// A key's findings, summed up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyRisk {
    /// The access key (absent for findings on events made without one, e.g. console sign-in).
    pub key: Option<String>,
    pub principal: Option<String>,
    /// Sum of the findings' severity weights (info 1, low 3, medium 10, high 30, critical 100).
    pub score: u64,
    pub max_severity: Severity,
    pub findings: usize,
    /// Distinct rules and detectors, most severe first.
    pub rules: Vec<String>,
    #[serde(serialize_with = "ser_time")]
    pub first: i64,
    #[serde(serialize_with = "ser_time")]
    pub last: i64,
}

/// How to detect.
#[derive(Clone, Debug)]
pub struct DetectOptions {
    /// Report findings at or after this time (detectors still learn from earlier events).
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub min_severity: Severity,
    pub rules: RuleSet,
    /// Run the stateful detectors too.
    pub detectors: bool,
    pub config: detectors::Config,
    pub threads: usize,
    /// IDs of events that rules run elsewhere already reported at low or above (`keytrail
    /// follow` runs the rules over the new events in a pass of their own): like the events
    /// this run's rules report, `kt-abused-call` does not report them again below medium.
    pub reported: std::collections::HashSet<String>,
    /// Only these keys' detector findings (`keytrail follow`: the keys new events touched).
    /// Keys' lifecycle and lineage still come from every event; principals' first calls and
    /// the catalog of abused calls from every call of these keys' principals (with any of
    /// their keys), all a finding of these keys depends on; an EC2 instance's other sessions
    /// are read with its session's key. The addresses of people's keys that the detectors
    /// compare a key's with are those of the keys read.
    pub keys: Option<std::collections::BTreeSet<String>>,
    /// With `keys`: their [`detectors::Scope`], already named (over a lake holding every
    /// event the run reads), so it is not named again.
    pub scope: Option<std::sync::Arc<detectors::Scope>>,
}

impl Default for DetectOptions {
    fn default() -> Self {
        DetectOptions {
            since: None,
            until: None,
            min_severity: Severity::Low,
            rules: RuleSet::default(),
            detectors: true,
            config: detectors::Config::default(),
            threads: SessionOptions::default().threads,
            reported: std::collections::HashSet::new(),
            keys: None,
            scope: None,
        }
    }
}

/// What a detection run found.
#[derive(Clone, Debug, Serialize)]
pub struct DetectReport {
    /// Findings at or above the minimum severity, by time.
    pub findings: Vec<Finding>,
    /// Keys ranked by their findings (most severe, then highest score, first).
    pub keys: Vec<KeyRisk>,
    /// Events in the window that were scanned.
    pub events: u64,
    /// Findings below the minimum severity, not listed.
    pub below_min_severity: usize,
    pub rules: usize,
    pub detectors: usize,
    pub min_severity: Severity,
}

impl DetectReport {
    /// Whether anything at or above the minimum severity was found.
    pub fn found(&self) -> bool {
        !self.findings.is_empty()
    }
}

/// Detect over the lake at `lake` (a directory, or a lake in S3).
pub fn detect(
    lake: impl Into<keytrail_engine::LakeLocation>,
    opts: &DetectOptions,
) -> Result<DetectReport, DetectError> {
    block_on(opts.threads, async {
        let session = LakeSession::open(
            lake,
            &SessionOptions {
                threads: opts.threads,
                ..SessionOptions::default()
            },
        )
        .await?;
        let mut ctx = session.context().clone();
        detect_in(&mut ctx, true, opts).await
    })
}

/// Detect over the `events` table of a session (`partitioned`: it has the `date` column of a
/// lake, used to prune partitions).
pub async fn detect_in(
    ctx: &mut SessionContext,
    partitioned: bool,
    opts: &DetectOptions,
) -> Result<DetectReport, DetectError> {
    scan::register(ctx)?;
    let window = scan::window_sql(opts.since, opts.until, partitioned);
    let count = ctx
        .sql(&format!("SELECT count(*) AS n FROM events WHERE {window}"))
        .await?
        .collect()
        .await?;
    let events = count
        .first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .map(|a| a.value(0))
        })
        .unwrap_or(0) as u64;
    let rules: Vec<&Rule> = opts.rules.rules.iter().collect();
    let hits = scan::scan(ctx, &rules, "events", &window).await?;
    let all = group_hits(&rules, hits);
    // Whether a rule finding is routine depends on the days before `--since` too.
    let past = opts
        .since
        .map(|since| scan::window_sql(None, Some(since), partitioned));
    let all = routine_with_past(ctx, &rules, all, past.as_deref(), &opts.config).await?;
    // The events the rules reported at low or above: the catalog of abused calls does not
    // flag them again.
    let mut reported: std::collections::HashSet<String> = if opts.detectors {
        all.iter()
            .filter(|f| f.severity >= Severity::Low)
            .flat_map(|f| f.events.iter().cloned())
            .collect()
    } else {
        Default::default()
    };
    // Below `--min-severity` or outside the window a rule finding is only counted, before the
    // detectors' state grows.
    let mut kept = kept::Kept::new(opts.min_severity, opts.since, opts.until);
    for f in all {
        kept.push(f);
    }
    if opts.detectors {
        reported.extend(opts.reported.iter().cloned());
        let started = std::time::Instant::now();
        let scope = match (&opts.scope, &opts.keys) {
            (Some(s), _) => Some(std::sync::Arc::clone(s)),
            (None, Some(keys)) => Some(std::sync::Arc::new(detectors::Scope::of(ctx, keys).await?)),
            (None, None) => None,
        };
        detectors::run(ctx, &opts.config, scope.as_deref(), &mut kept).await?;
        let detected = started.elapsed();
        catalog::run(ctx, &opts.config, &reported, scope.as_deref(), &mut kept).await?;
        tracing::debug!(
            detectors_ms = detected.as_millis() as u64,
            catalog_ms = (started.elapsed() - detected).as_millis() as u64,
            "detectors and the catalog of abused calls ran"
        );
    }
    let (mut all, below) = kept.finish();
    all.sort_by(|a, b| {
        (a.time, &a.key, &a.rule, &a.events).cmp(&(b.time, &b.key, &b.rule, &b.events))
    });
    let keys = risk(&all);
    Ok(DetectReport {
        findings: all,
        keys,
        events,
        below_min_severity: below,
        rules: rules.len(),
        detectors: if opts.detectors {
            detectors::CATALOG.len()
        } else {
            0
        },
        min_severity: opts.min_severity,
    })
}

/// Judge the rule findings `found` routine or not ([`routine_rules`]) against each other and,
/// with `past` (a condition on `events`), against what the same rules matched in those rows:
/// the rules that found something that could be routine are run again over them. The past's
/// own findings only inform; `found` is returned, judged.
pub async fn routine_with_past(
    ctx: &mut SessionContext,
    rules: &[&Rule],
    found: Vec<Finding>,
    past: Option<&str>,
    cfg: &detectors::Config,
) -> Result<Vec<Finding>, DetectError> {
    scan::register(ctx)?;
    let mut with_past = match past {
        Some(past) => {
            let maybe: Vec<&Rule> = rules
                .iter()
                .filter(|r| {
                    r.severity > Severity::Info
                        && r.severity <= Severity::Medium
                        && found.iter().any(|f| f.rule == r.id)
                })
                .copied()
                .collect();
            if maybe.is_empty() {
                Vec::new()
            } else {
                group_hits(&maybe, scan::scan(ctx, &maybe, "events", past).await?)
            }
        }
        None => Vec::new(),
    };
    let n_past = with_past.len();
    with_past.extend(found);
    routine_rules(&mut with_past, cfg.routine_days, cfg.routine_window_days);
    Ok(with_past.split_off(n_past))
}

/// One row of `keytrail rules list`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Listed {
    pub id: String,
    /// `rule`, `sigma` (a Sigma rule), `detector`, `setting` (a detector setting), or `data`
    /// (the AWS address ranges in use).
    pub kind: &'static str,
    pub severity: String,
    pub category: String,
    pub title: String,
    /// ATT&CK tags, space-separated.
    pub tags: String,
    pub origin: String,
}

impl Listed {
    /// The row that says which AWS address ranges are in use, and of when.
    pub fn aws_ranges(r: &keytrail_model::awsip::AwsRanges) -> Listed {
        Listed {
            id: "aws-ip-ranges".into(),
            kind: "data",
            severity: String::new(),
            category: "credential-use".into(),
            title: r.describe(),
            tags: String::new(),
            origin: r.origin.clone(),
        }
    }

    /// A detector setting's row: its value, and whether `--set` changed it.
    fn setting(s: &settings::Setting, value: &str, default: &str) -> Listed {
        Listed {
            id: s.name.into(),
            kind: "setting",
            severity: String::new(),
            category: "detector-settings".into(),
            title: format!("{}: {value}", s.about),
            tags: String::new(),
            origin: if value == default { "default" } else { "--set" }.into(),
        }
    }

    /// The rows of every detector setting of `cfg`.
    pub fn settings(cfg: &detectors::Config) -> Vec<Listed> {
        let defaults = detectors::Config::default().settings();
        cfg.settings()
            .iter()
            .zip(&defaults)
            .map(|((s, value), (_, default))| Listed::setting(s, value, default))
            .collect()
    }
}

/// Every rule and detector, by category then id.
pub fn listing(rules: &[Rule], detectors: bool) -> Vec<Listed> {
    let mut out: Vec<Listed> = rules
        .iter()
        .map(|r| Listed {
            id: r.id.clone(),
            kind: match r.format {
                RuleFormat::Keytrail => "rule",
                RuleFormat::Sigma => "sigma",
            },
            severity: r.severity.to_string(),
            category: r.category.clone(),
            title: r.title.clone(),
            tags: r.tags.join(" "),
            origin: r.origin.clone(),
        })
        .collect();
    if detectors {
        out.extend(detectors::CATALOG.iter().map(|d| Listed {
            id: d.id.to_owned(),
            kind: "detector",
            severity: d.severity.to_string(),
            category: d.category.to_owned(),
            title: d.title.to_owned(),
            tags: d.tags.join(" "),
            origin: "built in".to_owned(),
        }));
    }
    out.sort_by(|a, b| (&a.category, &a.id).cmp(&(&b.category, &b.id)));
    out
}

/// Whether an error code says the caller was not allowed: the one definition, the `denied`
/// fact's.
pub use keytrail_model::facts::is_denied;

fn outcome(error: Option<&str>) -> String {
    match error {
        None | Some("") => String::new(),
        Some(c) if is_denied(c) => format!(" (denied: {c})"),
        Some(c) => format!(" (failed: {c})"),
    }
}

fn render_reason(rule: &Rule, shown: &[(String, Option<String>)]) -> String {
    let Some(t) = &rule.reason else {
        return rule.title.clone();
    };
    let mut out = String::new();
    let mut rest = t.as_str();
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let value = after[..close]
            .split('|')
            .map(str::trim)
            .find_map(|name| {
                shown
                    .iter()
                    .find(|(n, _)| n == name)
                    .and_then(|(_, v)| v.clone())
                    .filter(|v| !v.is_empty())
            })
            .unwrap_or_else(|| "?".to_owned());
        out.push_str(&value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Matches of one rule by one key (or, without a key, one principal) within an hour of the
/// first become one finding: its reason is the first match's, followed by how many more
/// events matched and up to two of their other reasons.
const GROUP_MS: i64 = 3_600_000;

fn group_hits(rules: &[&Rule], hits: Vec<scan::Hit>) -> Vec<Finding> {
    let mut open: BTreeMap<(usize, Option<String>), usize> = BTreeMap::new();
    let mut out: Vec<Finding> = Vec::new();
    let mut reasons: Vec<Vec<String>> = Vec::new();
    for h in hits {
        let r = rules[h.rule];
        let reason = format!(
            "{}{}",
            render_reason(r, &h.shown),
            outcome(h.event.error.as_deref())
        );
        let who = h.event.key.clone().or(h.event.principal.clone());
        let k = (h.rule, who);
        if let Some(&i) = open.get(&k)
            && h.event.time - out[i].time < GROUP_MS
        {
            let f = &mut out[i];
            f.last = f.last.max(h.event.time);
            f.events.push(h.event.id);
            if !reasons[i].contains(&reason) {
                reasons[i].push(reason);
            }
            continue;
        }
        open.insert(k, out.len());
        reasons.push(vec![reason.clone()]);
        out.push(Finding {
            rule: r.id.clone(),
            title: r.title.clone(),
            severity: r.severity,
            category: r.category.clone(),
            source: Source::Rule,
            time: h.event.time,
            last: h.event.time,
            key: h.event.key,
            principal: h.event.principal,
            account: h.event.account,
            source_ip: h.event.source_ip,
            reason,
            events: vec![h.event.id],
            details: h
                .shown
                .into_iter()
                .filter_map(|(n, v)| v.map(|v| (n, v)))
                .collect(),
            tags: r.tags.clone(),
        });
    }
    for (f, rs) in out.iter_mut().zip(reasons) {
        let more = f.events.len() - 1;
        if more == 0 {
            continue;
        }
        let others: Vec<&str> = rs.iter().skip(1).take(2).map(String::as_str).collect();
        let rest = rs.len().saturating_sub(3);
        f.reason = match (others.is_empty(), rest) {
            (true, _) => format!("{} [{} events]", rs[0], more + 1),
            (false, 0) => format!("{}; {} [{} events]", rs[0], others.join("; "), more + 1),
            (false, n) => format!(
                "{}; {}; and {n} more [{} events]",
                rs[0],
                others.join("; "),
                more + 1
            ),
        };
    }
    out
}

/// A rule finding of medium or lower severity whose rule matched the same principal (the
/// role, for role sessions) on `routine_days` or more earlier days within the `window_days`
/// before its day (`findings` holds the
/// history: `detect_in` adds the matches before `--since`) is routine for it (a daily admin task): it is kept, at info, and says so. High and critical
/// rules are never routine.
pub fn routine_rules(findings: &mut [Finding], routine_days: usize, window_days: i32) {
    let who = |f: &Finding| {
        f.principal
            .as_deref()
            .map(detectors::principal_of)
            .map(str::to_owned)
            .or(f.key.clone())
    };
    let mut days: BTreeMap<(String, Option<String>), std::collections::BTreeSet<i32>> =
        BTreeMap::new();
    for f in findings.iter() {
        if f.source == Source::Rule {
            days.entry((f.rule.clone(), who(f)))
                .or_default()
                .insert(keytrail_model::time::day_of(f.time));
        }
    }
    for f in findings.iter_mut() {
        if f.source != Source::Rule || f.severity > Severity::Medium || f.severity == Severity::Info
        {
            continue;
        }
        let day = keytrail_model::time::day_of(f.time);
        let earlier = days
            .get(&(f.rule.clone(), who(f)))
            .map_or(0, |d| d.range(day.saturating_sub(window_days)..day).count());
        if earlier >= routine_days {
            f.reason = format!(
                "{} (routine: this rule matched the principal on {earlier} earlier day(s) within {window_days} days; {} otherwise)",
                f.reason, f.severity
            );
            f.severity = Severity::Info;
        }
    }
}

/// Rank keys by their findings.
pub fn risk(findings: &[Finding]) -> Vec<KeyRisk> {
    let mut by: BTreeMap<Option<String>, Vec<&Finding>> = BTreeMap::new();
    for f in findings {
        let who = f
            .key
            .clone()
            .or_else(|| f.principal.as_ref().map(|p| format!("(no key) {p}")));
        by.entry(who).or_default().push(f);
    }
    let mut out: Vec<KeyRisk> = by
        .into_iter()
        .map(|(who, fs)| {
            let mut rules: Vec<(Severity, String)> =
                fs.iter().map(|f| (f.severity, f.rule.clone())).collect();
            rules.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            rules.dedup_by(|a, b| a.1 == b.1);
            KeyRisk {
                key: fs[0].key.clone(),
                principal: fs
                    .iter()
                    .find_map(|f| f.principal.clone())
                    .or(if fs[0].key.is_none() { who } else { None }),
                score: fs.iter().map(|f| f.severity.weight()).sum(),
                max_severity: fs
                    .iter()
                    .map(|f| f.severity)
                    .max()
                    .unwrap_or(Severity::Info),
                findings: fs.len(),
                rules: rules.into_iter().map(|(_, r)| r).collect(),
                first: fs.iter().map(|f| f.time).min().unwrap_or(0),
                last: fs.iter().map(|f| f.last).max().unwrap_or(0),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.max_severity
            .cmp(&a.max_severity)
            .then(b.score.cmp(&a.score))
            .then(a.key.cmp(&b.key))
            .then(a.principal.cmp(&b.principal))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(rule: &str, severity: Severity, day: i64, principal: &str) -> Finding {
        Finding {
            rule: rule.into(),
            title: rule.into(),
            severity,
            category: "execution".into(),
            source: Source::Rule,
            time: day * 86_400_000 + 3_600_000,
            last: day * 86_400_000 + 3_600_000,
            key: Some("AKIAEXAMPLEEXAMPLE01".into()),
            principal: Some(principal.into()),
            account: None,
            source_ip: None,
            reason: "r".into(),
            events: vec![format!("e{day}")],
            details: BTreeMap::new(),
            tags: Vec::new(),
        }
    }

    #[test]
    fn by_default_a_rule_finding_is_routine_after_one_earlier_day_within_90_days() {
        let c = detectors::Config::default();
        assert_eq!((c.routine_days, c.routine_window_days), (1, 90));
        let ops = "arn:aws:sts::111122223333:assumed-role/ops/session-1";
        let alice = "arn:aws:iam::111122223333:user/alice";
        let mut f = vec![
            // ops: day 0 (first: medium), day 1 by another session (routine), day 91
            // (day 1 is 90 days before: routine), day 182 (nothing within 90 days: medium).
            finding("ssm-send-command", Severity::Medium, 0, ops),
            finding(
                "ssm-send-command",
                Severity::Medium,
                1,
                "arn:aws:sts::111122223333:assumed-role/ops/session-2",
            ),
            finding("ssm-send-command", Severity::Medium, 91, ops),
            finding("ssm-send-command", Severity::Medium, 182, ops),
            // alice: day 0, then day 91 (outside the window: medium), then the same day
            // again (the same day is not an earlier day: medium).
            finding("ssm-send-command", Severity::Medium, 0, alice),
            finding("ssm-send-command", Severity::Medium, 91, alice),
            finding("ssm-send-command", Severity::Low, 91, alice),
            // Another rule's history does not count for this one.
            finding("iam-create-user", Severity::Medium, 92, alice),
        ];
        routine_rules(&mut f, c.routine_days, c.routine_window_days);
        let sev: Vec<Severity> = f.iter().map(|f| f.severity).collect();
        use Severity::*;
        assert_eq!(
            sev,
            vec![Medium, Info, Info, Medium, Medium, Medium, Low, Medium]
        );
        assert_eq!(
            f[2].reason,
            "r (routine: this rule matched the principal on 1 earlier day(s) within 90 days; medium otherwise)"
        );
    }

    #[test]
    fn a_rule_matching_a_principal_on_three_earlier_days_is_routine() {
        let ops = "arn:aws:sts::111122223333:assumed-role/ops/session-1";
        let other = "arn:aws:sts::111122223333:assumed-role/ops/session-2";
        let mut f = vec![
            finding("ssm-send-command", Severity::Medium, 1, ops),
            finding("ssm-send-command", Severity::Medium, 2, ops),
            // Another session of the same role: the role is the principal.
            finding("ssm-send-command", Severity::Medium, 2, other),
            finding("ssm-send-command", Severity::Medium, 3, other),
            finding("ssm-send-command", Severity::Medium, 4, ops),
            finding("ssm-send-command", Severity::Medium, 4, ops),
            finding("trail-stopped", Severity::High, 1, ops),
            finding("trail-stopped", Severity::High, 2, ops),
            finding("trail-stopped", Severity::High, 3, ops),
            finding("trail-stopped", Severity::High, 4, ops),
            finding(
                "ssm-send-command",
                Severity::Medium,
                4,
                "arn:aws:iam::111122223333:user/alice",
            ),
        ];
        routine_rules(&mut f, 3, 90);
        let sev: Vec<Severity> = f.iter().map(|f| f.severity).collect();
        use Severity::*;
        assert_eq!(
            sev,
            vec![
                Medium, Medium, Medium, Medium, Info, Info, High, High, High, High, Medium
            ]
        );
        assert!(
            f[4].reason.contains(
                "routine: this rule matched the principal on 3 earlier day(s) within 90 days; medium otherwise"
            ),
            "{}",
            f[4].reason
        );
    }
}
