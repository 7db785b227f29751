//! The catalog of AWS API calls attackers are known to abuse, and the detector it drives
//! (`kt-abused-call`).
//!
//! The catalog is TrailDiscover's (adanalvarez/TrailDiscover, CC BY 4.0): for each call its
//! event source, event name, ATT&CK tactics and techniques, and whether public incident
//! reports show it used in the wild. keytrail ships those facts (`data/abused-calls.tsv`,
//! attributed in `data/README.md`), not the project's text.
//!
//! Every call of the catalog that is not discovery alone raises a finding, tagged with its
//! tactics and techniques:
//!
//! | what | severity |
//! |---|---|
//! | the principal (the role, for role sessions; with any of its keys) made the call successfully on `routine_days` (1) or more earlier days within the `routine_window_days` (90) before the call's day | info |
//! | a success that is not routine | low |
//! | a success that is not routine, after the same key's denied attempts (refusals, not throttling or other failures) at the same call within the hour | medium |
//! | a success that joins a sequence: 3 or more distinct non-routine persistence or privilege-escalation calls by one key within the hour | medium |
//! | a denied attempt at a persistence, privilege-escalation, defence-evasion, credential-access or impact call the principal does not make routinely | low |
//! | any other denied or failed attempt | info |
//!
//! The [`EVERYDAY`] calls (object reads and writes, role assumption, ...) are at most info when
//! they succeed. Discovery calls alone stay quiet (the reconnaissance and denied-call bursts cover them).
//! Events a bundled or user rule already reported at low or above are not reported again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use datafusion::prelude::SessionContext;
use futures::StreamExt;

use super::detectors::{Config, Scope, WHO, principal_of};
use super::kept::Kept;
use super::{DetectError, Finding, Source};
use keytrail_rules::rule::Severity;

/// The catalog's text: `eventSource`, `eventName`, tactics, techniques, used in the wild.
const DATA: &str = include_str!("../data/abused-calls.tsv");

pub const ABUSED_CALL: &str = "kt-abused-call";

/// Calls of the catalog that every workload makes all day (object reads and writes, role
/// assumption, function invocations, image pulls, encryption, log delivery, secrets and
/// parameters read by applications): reported at info only, whatever their history or
/// outcome. What they cannot show is said in `docs/rules.md`.
pub const EVERYDAY: [(&str, &str); 14] = [
    ("lambda.amazonaws.com", "Invoke"),
    ("ecr.amazonaws.com", "BatchGetImage"),
    ("s3.amazonaws.com", "GetObject"),
    ("s3.amazonaws.com", "PutObject"),
    ("sts.amazonaws.com", "AssumeRole"),
    ("sts.amazonaws.com", "AssumeRoleWithWebIdentity"),
    ("sts.amazonaws.com", "AssumeRoleWithSAML"),
    ("kms.amazonaws.com", "Encrypt"),
    ("kms.amazonaws.com", "GenerateDataKeyWithoutPlaintext"),
    ("logs.amazonaws.com", "CreateLogStream"),
    ("logs.amazonaws.com", "PutLogEvents"),
    ("secretsmanager.amazonaws.com", "GetSecretValue"),
    ("secretsmanager.amazonaws.com", "DescribeSecret"),
    ("ssm.amazonaws.com", "GetParameters"),
];

/// One abused call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub source: String,
    pub name: String,
    /// ATT&CK tactics, as Sigma tags name them (`privilege-escalation`).
    pub tactics: Vec<String>,
    /// ATT&CK technique IDs (`T1098.001`).
    pub techniques: Vec<String>,
    pub in_the_wild: bool,
}

impl Call {
    /// Discovery only: left to the bursts.
    pub fn discovery_only(&self) -> bool {
        self.tactics.iter().all(|t| t == "discovery")
    }

    /// A call whose denied attempt is itself a finding (low).
    pub fn grave(&self) -> bool {
        self.tactics.iter().any(|t| {
            matches!(
                t.as_str(),
                "persistence"
                    | "privilege-escalation"
                    | "defense-evasion"
                    | "credential-access"
                    | "impact"
            )
        })
    }

    /// One of the [`EVERYDAY`] calls.
    pub fn everyday(&self) -> bool {
        EVERYDAY
            .iter()
            .any(|(s, n)| *s == self.source && *n == self.name)
    }

    fn escalates(&self) -> bool {
        self.tactics
            .iter()
            .any(|t| t == "persistence" || t == "privilege-escalation")
    }

    /// `attack.<tactic>` and `attack.<technique>` tags.
    pub fn tags(&self) -> Vec<String> {
        self.tactics
            .iter()
            .map(|t| format!("attack.{t}"))
            .chain(
                self.techniques
                    .iter()
                    .map(|t| format!("attack.{}", t.to_ascii_lowercase())),
            )
            .collect()
    }
}

/// The catalog, by (event source, event name).
pub fn catalog() -> &'static BTreeMap<(String, String), Call> {
    static C: std::sync::OnceLock<BTreeMap<(String, String), Call>> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        let mut out = BTreeMap::new();
        for line in DATA.lines().filter(|l| !l.starts_with('#')) {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() < 5 {
                continue;
            }
            let list = |s: &str| -> Vec<String> {
                s.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect()
            };
            out.insert(
                (f[0].to_owned(), f[1].to_owned()),
                Call {
                    source: f[0].to_owned(),
                    name: f[1].to_owned(),
                    tactics: list(f[2]),
                    techniques: list(f[3]),
                    in_the_wild: f[4] == "true",
                },
            );
        }
        out
    })
}

/// An event of a catalogued call.
#[derive(serde::Deserialize)]
struct Row {
    t: i64,
    id: Option<String>,
    k: Option<String>,
    arn: Option<String>,
    src: String,
    name: String,
    ip: Option<String>,
    account: Option<String>,
    error: Option<String>,
    denied: bool,
}

struct Ev {
    t: i64,
    id: String,
    who: String,
    key: Option<String>,
    arn: Option<String>,
    ip: Option<String>,
    account: Option<String>,
    error: Option<String>,
    denied: bool,
}

/// Run the catalog detector over `events` (events of AWS services' own making excluded);
/// `reported` holds the IDs of events a rule already reported at low or above. With `scope`,
/// only its keys' findings are made, from its principals' calls alone (the same findings).
/// Findings go to `out` once no later call can join them (an hour after their first), so what
/// is held is the last hour's open findings, never those below `out`'s minimum severity.
pub async fn run(
    ctx: &SessionContext,
    cfg: &Config,
    reported: &HashSet<String>,
    scope: Option<&Scope>,
    out: &mut Kept,
) -> Result<(), DetectError> {
    let cat = catalog();
    let names: BTreeSet<&str> = cat
        .values()
        .filter(|c| !c.discovery_only())
        .map(|c| c.name.as_str())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let list = names
        .iter()
        .map(|n| super::compile::quote(n))
        .collect::<Vec<_>>()
        .join(", ");
    let only = scope.map_or(String::new(), |s| format!(" AND {}", s.sql(true)));
    let sql = format!(
        "SELECT eventtime AS t, eventid AS id, accesskeyid AS k, {WHO} AS arn, \
         eventsource AS src, eventname AS name, sourceipaddress AS ip, resourceaccountid AS account, \
         errorcode AS error, denied \
         FROM events WHERE eventname IN ({list}) AND NOT awsservice{only} \
         ORDER BY eventtime, eventid"
    );
    let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
    // Per principal and call: the days of its successful calls so far.
    let mut days: HashMap<(String, String, String), BTreeSet<i32>> = HashMap::new();
    // Per key (or principal) and call: denied attempts, by time.
    let mut denials: HashMap<(String, String, String), Vec<i64>> = HashMap::new();
    // Per key: the non-routine persistence/escalation calls of the last hour.
    let mut chain: HashMap<String, Vec<(i64, String)>> = HashMap::new();
    // (who, call) → its finding of the last hour, which later calls may join.
    let mut open: HashMap<(String, String, String), Finding> = HashMap::new();
    // When `open` was last cleared of findings no call can join any more.
    let mut swept = i64::MIN;
    const HOUR: i64 = 3_600_000;
    let mut close = |f: Finding| {
        if scope.is_none_or(|s| f.key.as_ref().is_some_and(|k| s.keys.contains(k))) {
            out.push(f);
        }
    };
    while let Some(b) = stream.next().await {
        for r in keytrail_engine::rows::from_batch::<Row>(&b?)? {
            if r.t.saturating_sub(swept) >= HOUR {
                // Events come by time: a finding begun an hour ago is complete.
                for (_, f) in open.extract_if(|_, f| r.t - f.time >= HOUR) {
                    close(f);
                }
                swept = r.t;
            }
            let Some(call) = cat.get(&(r.src.clone(), r.name.clone())) else {
                continue;
            };
            if call.discovery_only() {
                continue;
            }
            let principal = r.arn.as_deref().map(principal_of).unwrap_or("?").to_owned();
            if scope.is_some_and(|s| !s.has(&principal)) {
                continue;
            }
            let e = Ev {
                t: r.t,
                id: r.id.unwrap_or_default(),
                who: r.k.clone().unwrap_or_else(|| principal.clone()),
                key: r.k,
                arn: r.arn,
                ip: r.ip,
                account: r.account,
                error: r.error.filter(|x| !x.is_empty()),
                denied: r.denied,
            };
            let day = keytrail_model::time::day_of(e.t);
            let pk = (principal.clone(), call.source.clone(), call.name.clone());
            let ck = (e.who.clone(), call.source.clone(), call.name.clone());
            let earlier_days = days.get(&pk).map_or(0, |d| {
                d.range(day.saturating_sub(cfg.routine_window_days)..day)
                    .count()
            });
            let routine = earlier_days >= cfg.routine_days;
            let made_before = days
                .get(&pk)
                .is_some_and(|d| d.range(..day).next().is_some());
            let (severity, why) = if e.error.is_some() {
                // Only refusals count as attempts: a throttled or not-found call is no probe.
                if e.denied {
                    let d = denials.entry(ck.clone()).or_default();
                    // Only the last hour's attempts count.
                    d.retain(|t| e.t - *t <= HOUR);
                    d.push(e.t);
                }
                let what = if e.denied { "denied" } else { "failed" };
                if routine {
                    (
                        Severity::Info,
                        format!(
                            "{what} attempt at a call routine for the principal (made on {earlier_days} earlier day(s) within {} days)",
                            cfg.routine_window_days
                        ),
                    )
                } else if e.denied && call.grave() && !call.everyday() {
                    (Severity::Low, format!("{what} attempt"))
                } else {
                    (Severity::Info, format!("{what} attempt"))
                }
            } else {
                days.entry(pk).or_default().insert(day);
                let tried = denials
                    .get(&ck)
                    .map_or(0, |v| v.iter().filter(|t| e.t - **t <= HOUR).count());
                let mut sequence = 0;
                if !routine && call.escalates() && !call.everyday() {
                    let c = chain.entry(e.who.clone()).or_default();
                    c.retain(|(t, _)| e.t - *t <= HOUR);
                    if !c.iter().any(|(_, n)| *n == call.name) {
                        c.push((e.t, call.name.clone()));
                    }
                    sequence = c.len();
                }
                if call.everyday() {
                    (Severity::Info, "a call workloads make every day".to_owned())
                } else if routine {
                    // A call the principal makes every few days is not a probe that got
                    // through, even after a refusal (a resource it may not touch, a policy
                    // being rolled out).
                    let after = if tried > 0 {
                        format!(", after {tried} denied attempt(s) within the hour")
                    } else {
                        String::new()
                    };
                    (
                        Severity::Info,
                        format!(
                            "routine: made on {earlier_days} earlier day(s) within {} days{after}",
                            cfg.routine_window_days
                        ),
                    )
                } else if tried > 0 {
                    (
                        Severity::Medium,
                        format!("succeeded after {tried} denied attempt(s) within the hour"),
                    )
                } else if sequence >= 3 {
                    (
                        Severity::Medium,
                        format!(
                            "one of {sequence} distinct persistence or privilege-escalation calls within the hour"
                        ),
                    )
                } else if earlier_days > 0 {
                    (
                        Severity::Low,
                        format!("made on only {earlier_days} earlier day(s)"),
                    )
                } else if made_before {
                    (
                        Severity::Low,
                        format!(
                            "not made by this principal within {} days",
                            cfg.routine_window_days
                        ),
                    )
                } else {
                    (
                        Severity::Low,
                        "never made before by this principal".to_owned(),
                    )
                }
            };
            if reported.contains(&e.id) && severity < Severity::Medium {
                continue;
            }
            let reason = format!(
                "{} ({}; {}): {why}",
                call.name,
                call.source.trim_end_matches(".amazonaws.com"),
                call.tactics.join(", ")
            );
            if let Some(f) = open.get_mut(&ck)
                && e.t - f.time < HOUR
            {
                f.last = f.last.max(e.t);
                if f.events.len() < cfg.evidence_cap {
                    f.events.push(e.id.clone());
                }
                if severity > f.severity {
                    f.severity = severity;
                    f.reason = reason;
                }
                continue;
            }
            let f = Finding {
                rule: ABUSED_CALL.to_owned(),
                title: "Call from the catalog of abused AWS API calls".to_owned(),
                severity,
                category: call
                    .tactics
                    .iter()
                    .find(|t| *t != "discovery")
                    .cloned()
                    .unwrap_or_else(|| "discovery".to_owned()),
                source: Source::Detector,
                time: e.t,
                last: e.t,
                key: e.key,
                principal: e.arn,
                account: e.account,
                source_ip: e.ip,
                reason,
                events: vec![e.id],
                details: BTreeMap::new(),
                tags: call.tags(),
            };
            if let Some(done) = open.insert(ck, f) {
                close(done);
            }
        }
    }
    for (_, f) in open {
        close(f);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_loads_with_tactics() {
        let c = catalog();
        assert_eq!(c.len(), 380);
        let k = (
            "sts.amazonaws.com".to_owned(),
            "GetFederationToken".to_owned(),
        );
        assert!(c.contains_key(&k), "GetFederationToken");
        let u = &c[&("iam.amazonaws.com".to_owned(), "CreateUser".to_owned())];
        assert!(u.tactics.contains(&"persistence".to_owned()), "{u:?}");
        assert!(u.grave() && !u.discovery_only());
        let l = &c[&("s3.amazonaws.com".to_owned(), "ListBuckets".to_owned())];
        assert!(l.discovery_only());
    }
}
