//! The reports on the bundled sample (2024-11-24..30, with a scripted incident) and the key
//! inventories in `testdata/inventory/`, with known answers.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use keytrail_engine::rows::{cells, csv as csv_text};
use keytrail_engine::{SessionOptions, sql};
use keytrail_ingest::{IngestOptions, NoProgress, ingest};
use keytrail_model::time::parse_event_time;
use keytrail_report::{KindFilter, Report, ReportKind, ReportRequest, report};

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

/// The sample's lake, ingested once for every test of this binary.
fn lake() -> &'static Path {
    static LAKE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &LAKE
        .get_or_init(|| {
            let tmp = tempfile::tempdir().expect("tmp");
            let lake = tmp.path().join("lake");
            let summary = ingest(
                &IngestOptions::new(vec![testdata().join("sample")], lake.clone()),
                &NoProgress,
            )
            .expect("ingest");
            assert_eq!(summary.events.written, 1279);
            (tmp, lake)
        })
        .1
}

fn t(s: &str) -> i64 {
    parse_event_time(s).expect("time")
}

fn inv(name: &str) -> PathBuf {
    testdata().join("inventory").join(name)
}

fn run(kind: ReportKind, as_of: &str, inventory: &[&str]) -> Report {
    let req = ReportRequest {
        kind,
        as_of: t(as_of),
        inventory: inventory.iter().map(|n| inv(n)).collect(),
        charts: true,
    };
    report(
        lake(),
        &req,
        &SessionOptions {
            threads: 2,
            ..SessionOptions::default()
        },
    )
    .expect("report")
}

fn csv(r: &Report) -> String {
    csv_text(&r.schema, &r.batches).expect("csv")
}

const AS_OF: &str = "2024-12-01T00:00:00Z";

fn last_used(since: &str, as_of: &str, inventory: &[&str]) -> Report {
    run(
        ReportKind::LastUsed {
            since: t(since),
            kinds: KindFilter::All,
        },
        as_of,
        inventory,
    )
}

/// The named columns of every row, joined by `|`.
fn rows(r: &Report, names: &[&str]) -> Vec<String> {
    let (header, cells) = cells(&r.schema, &r.batches).expect("cells");
    let idx: Vec<usize> = names
        .iter()
        .map(|n| header.iter().position(|h| h == n).expect(n))
        .collect();
    cells
        .iter()
        .map(|row| {
            idx.iter()
                .map(|&i| row[i].as_str())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

/// The row of one key, as column name → value.
fn row_of(r: &Report, key: &str) -> std::collections::BTreeMap<String, String> {
    let (header, cells) = cells(&r.schema, &r.batches).expect("cells");
    let c = header
        .iter()
        .position(|h| h == "access_key_id")
        .expect("id");
    let row = cells.iter().find(|row| row[c] == key).expect(key);
    header.into_iter().zip(row.iter().cloned()).collect()
}

fn lake_sql(q: &str) -> Vec<String> {
    let (schema, batches) = sql(
        lake(),
        q,
        &SessionOptions {
            threads: 2,
            ..SessionOptions::default()
        },
    )
    .expect("sql");
    let (_, cells) = cells(&schema, &batches).expect("cells");
    cells.into_iter().map(|r| r.join("|")).collect()
}

#[test]
fn last_used_lists_every_key_stalest_first() {
    let r = last_used("2024-11-24T00:00:00Z", AS_OF, &[]);
    assert_eq!(r.rows(), 22);
    // Stalest first: the reporting key stopped on the 29th, then the incident's keys.
    assert_eq!(
        rows(&r, &["access_key_id", "owner", "last_used"])[..7],
        [
            "AKIARTXV5AHDT3IDRTCQ|reporting|2024-11-29T06:00:40Z",
            "AKIARTXV5AHDZMKNCBCQ|ci-deploy|2024-11-30T03:17:30Z",
            "ASIARTXV5AHDYHPGSGN6|ci-deploy|2024-11-30T03:19:05Z",
            "AKIARTXV5AHDRQSG4VCH|backup-admin|2024-11-30T03:21:00Z",
            "ASIARTXV5AHDSRWPFM6V|DataPipeline|2024-11-30T03:22:30Z",
            "ASIASECOPSRESPONDER1|SecOps|2024-11-30T03:40:00Z",
            "ASIARTXV5AHD2DKLCJS3|svc|2024-11-30T04:02:00Z",
        ]
    );
    let ci = row_of(&r, "AKIARTXV5AHDZMKNCBCQ");
    let want = [
        ("kind", "long-term"),
        ("owner_arn", "arn:aws:iam::111111111111:user/ci-deploy"),
        ("account_id", "111111111111"),
        ("principal_type", "IAMUser"),
        ("first_seen", "2024-11-24T14:02:00Z"),
        ("last_used_from", "lake"),
        ("days_since_used", "0"),
        ("last_service", "sts.amazonaws.com"),
        ("last_event", "GetFederationToken"),
        ("last_region", "us-east-1"),
        ("last_source_ip", "198.51.100.77"),
        ("events", "54"),
        ("errors", "16"),
        ("source_ips", "2"),
        ("status", ""),
        ("inventory", ""),
    ];
    for (k, v) in want {
        assert_eq!(ci[k], v, "{k}");
    }
    // A role session's owner is the role.
    let role = row_of(&r, "ASIARTXV5AHDSRWPFM6V");
    assert_eq!(role["kind"], "temporary");
    assert_eq!(
        role["owner_arn"],
        "arn:aws:iam::111111111111:role/DataPipeline"
    );
    assert_eq!(role["last_event"], "PutBucketPolicy");
    // The window holds the whole lake: the counts add up to every event made with a key.
    let total: i64 = rows(&r, &["events"])
        .iter()
        .map(|n| n.parse::<i64>().expect("n"))
        .sum();
    assert_eq!(
        lake_sql("SELECT count(*) FROM events WHERE accesskeyid IS NOT NULL"),
        [total.to_string()]
    );
    assert_eq!(
        r.notes,
        [
            "Without --inventory, only keys used in the lake are listed: a key never used leaves no event."
        ]
    );
    assert_eq!(r.activity.days.len(), 7);
    assert_eq!(
        r.activity.per_key["AKIARTXV5AHDZMKNCBCQ"],
        [4, 4, 4, 4, 4, 4, 30]
    );
}

/// A window and a report time in the middle of days: the days at the edges come from
/// `events`, and every figure must equal a direct count over `events`.
#[test]
fn partial_days_are_counted_exactly() {
    for (since, as_of) in [
        ("2024-11-29T12:00:00Z", "2024-11-30T03:30:00Z"),
        ("2024-11-25T06:00:20Z", "2024-11-30T12:00:00Z"),
        ("2024-11-30T03:00:00Z", "2024-11-30T03:20:00Z"),
    ] {
        let r = last_used(since, as_of, &[]);
        let mut got = rows(
            &r,
            &[
                "access_key_id",
                "last_used",
                "events",
                "errors",
                "source_ips",
                "last_event",
            ],
        );
        got.sort();
        let mut want = lake_sql(&format!(
            "SELECT accesskeyid, \
               to_char(max(eventtime), '%Y-%m-%dT%H:%M:%SZ'), \
               count(*) FILTER (WHERE eventtime >= TIMESTAMP '{since}'), \
               count(*) FILTER (WHERE eventtime >= TIMESTAMP '{since}' AND errorcode <> ''), \
               count(DISTINCT CASE WHEN eventtime >= TIMESTAMP '{since}' THEN sourceipaddress END), \
               last_value(eventname ORDER BY eventtime, eventid) \
             FROM events WHERE accesskeyid IS NOT NULL AND eventtime < TIMESTAMP '{as_of}' \
             GROUP BY accesskeyid"
        ));
        want.sort();
        assert_eq!(got, want, "window {since} .. {as_of}");
    }
    // As of 03:20 on the 30th, the backdoor key made at 03:16:15 has not been used yet, and the
    // leaked key's last call was the GetFederationToken at 03:17:30.
    let r = last_used("2024-11-30T00:00:00Z", "2024-11-30T03:20:00Z", &[]);
    assert!(
        rows(&r, &["access_key_id"])
            .iter()
            .all(|k| k != "AKIARTXV5AHDRQSG4VCH")
    );
    let ci = row_of(&r, "AKIARTXV5AHDZMKNCBCQ");
    assert_eq!(ci["last_used"], "2024-11-30T03:17:30Z");
    assert_eq!(ci["events"], "30");
}

#[test]
fn kind_filter() {
    for (kinds, n, prefix) in [
        (KindFilter::LongTerm, 15, "AKIA"),
        (KindFilter::Temporary, 7, "ASIA"),
    ] {
        let r = run(
            ReportKind::LastUsed {
                since: t("2024-11-24T00:00:00Z"),
                kinds,
            },
            AS_OF,
            &[],
        );
        let keys = rows(&r, &["access_key_id"]);
        assert_eq!(keys.len(), n);
        assert!(keys.iter().all(|k| k.starts_with(prefix)), "{keys:?}");
    }
}

#[test]
fn key_list_json_and_csv_agree_and_add_unused_keys() {
    let json = last_used("2024-11-24T00:00:00Z", AS_OF, &["list-access-keys.json"]);
    let csv_form = last_used("2024-11-24T00:00:00Z", AS_OF, &["keys.csv"]);
    assert_eq!(
        json.rows(),
        26,
        "22 keys in the lake + 4 only in the inventory"
    );
    assert_eq!(
        csv(&json).replace("list-access-keys", "csv"),
        csv(&csv_form)
    );
    // Never used keys first, then by last use.
    assert_eq!(
        rows(
            &json,
            &[
                "access_key_id",
                "owner",
                "status",
                "created",
                "last_used",
                "events"
            ]
        )[..5],
        [
            "AKIARTXV5AHDROLDBATC|old-batch|Active|2024-03-04T10:00:00Z||0",
            "AKIARTXV5AHDSFORMER3|former-contractor|Inactive|2023-05-01T10:00:00Z||0",
            "AKIARTXV5AHDVLEGACY2|legacy-etl|Active|2022-01-10T10:00:00Z||0",
            "AKIARTXV5AHDYNEWKEY2|new-hire|Active|2024-11-27T09:00:00Z||0",
            "AKIARTXV5AHDT3IDRTCQ|reporting|Active|2024-02-01T12:00:00Z|2024-11-29T06:00:40Z|18",
        ]
    );
    assert_eq!(row_of(&json, "AKIARTXV5AHDZMKNCBCQ")["status"], "Inactive");
    assert!(json.notes.is_empty(), "{:?}", json.notes);
}

#[test]
fn credential_report_slots_are_matched_where_they_can_be() {
    let r = last_used("2024-11-24T00:00:00Z", AS_OF, &["credential-report.csv"]);
    let mut matched = rows(&r, &["access_key_id", "inventory_match"]);
    matched.retain(|m| m.contains("credential report key"));
    matched.sort();
    let unmatched: Vec<_> = matched
        .iter()
        .filter(|m| m.starts_with('|'))
        .cloned()
        .collect();
    let matched: Vec<_> = matched
        .iter()
        .filter(|m| !m.starts_with('|'))
        .cloned()
        .collect();
    assert_eq!(
        matched,
        [
            "AKIARTXV5AHD2VR4U7CR|credential report key 1: matched as the only key of the user in the lake",
            "AKIARTXV5AHDRQSG4VCH|credential report key 1: matched by creation time to a CreateAccessKey event",
            "AKIARTXV5AHDT3IDRTCQ|credential report key 1: matched as the only key of the user in the lake",
            "AKIARTXV5AHDUXBMER7F|credential report key 1: matched as the only key of the user in the lake",
            "AKIARTXV5AHDWGKAEW7M|credential report key 1: matched as the only key of the user in the lake",
            "AKIARTXV5AHDYJI6AXTW|credential report key 1: matched as the only key of the user in the lake",
            "AKIARTXV5AHDZMKNCBCQ|credential report key 1: matched as the only key of the user in the lake",
        ]
    );
    // Users with two keys in the lake cannot be told apart without a key list; users with no
    // key in the lake have no key ID to give.
    assert_eq!(unmatched.len(), 12, "{unmatched:#?}");
    assert!(unmatched.contains(
        &"|credential report key 2 of user0006: key ID unknown: its creation time (2024-11-10) matches no key of a key list nor a CreateAccessKey event in the lake, and the user has 2 long-term key(s) in the lake".to_owned()
    ));
    assert!(unmatched.contains(
        &"|credential report key 1 of old-batch: key ID unknown: no key of this user is in the lake or a key list".to_owned()
    ));
    assert!(
        r.notes
            .iter()
            .any(|n| n.starts_with("12 row(s) have no access key ID")),
        "{:?}",
        r.notes
    );
    // The credential report's own last use, for a key the lake never saw.
    let legacy: Vec<_> = rows(
        &r,
        &[
            "owner",
            "last_used",
            "last_used_from",
            "days_since_used",
            "last_service",
        ],
    )
    .into_iter()
    .filter(|x| x.starts_with("legacy-etl|"))
    .collect();
    assert_eq!(
        legacy,
        ["legacy-etl|2024-06-02T11:45:00Z|credential report|181|s3"]
    );

    // With the key list as well, every slot matches its key by creation time.
    let both = last_used(
        "2024-11-24T00:00:00Z",
        AS_OF,
        &["keys.csv", "credential-report.csv"],
    );
    assert_eq!(both.rows(), 26);
    let m = rows(&both, &["access_key_id", "inventory", "inventory_match"]);
    assert!(
        m.iter().all(|x| x.starts_with("ASIA") || x.ends_with("|csv + credential-report|credential report key 1: matched by creation time to the key list") || x.ends_with("|csv + credential-report|credential report key 2: matched by creation time to the key list")),
        "{m:#?}"
    );
    assert!(both.notes.is_empty(), "{:?}", both.notes);
}

#[test]
fn credential_report_uses_after_the_report_time_are_left_out() {
    let r = last_used(
        "2024-11-29T12:00:00Z",
        "2024-11-30T12:00:00Z",
        &["credential-report.csv"],
    );
    let u3 = row_of(&r, "AKIARTXV5AHD2VR4U7CR");
    // The report says 15:38 on the 30th, after the report's time: the lake's figure stands.
    assert_eq!(u3["last_used_from"], "lake");
    assert!(u3["last_used"].as_str() < "2024-11-30T12:00:00Z");
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("for 12 key(s); those uses are left out")),
        "{:?}",
        r.notes
    );
}

fn unused(days: u32, grace: u32, as_of: &str, inventory: &[&str]) -> Report {
    run(ReportKind::Unused { days, grace }, as_of, inventory)
}

#[test]
fn unused_keys_with_an_inventory() {
    let r = unused(90, 7, AS_OF, &["keys.csv", "credential-report.csv"]);
    assert_eq!(
        rows(
            &r,
            &[
                "access_key_id",
                "user_name",
                "flag",
                "days_since_used",
                "reason"
            ]
        ),
        [
            "AKIARTXV5AHDROLDBATC|old-batch|never-used||never used (per the credential report); created 2024-03-04, 271 days ago",
            "AKIARTXV5AHDVLEGACY2|legacy-etl|unused|181|not used for 181 days (last used 2024-06-02, per the credential report)",
        ]
    );
    // CIS's 45 days flags the same; a shorter grace period flags the new hire's key (made
    // 2024-11-27, 3.6 days before the report) too.
    let r = unused(45, 3, AS_OF, &["keys.csv", "credential-report.csv"]);
    assert_eq!(
        rows(&r, &["access_key_id", "flag"]),
        [
            "AKIARTXV5AHDROLDBATC|never-used",
            "AKIARTXV5AHDYNEWKEY2|never-used",
            "AKIARTXV5AHDVLEGACY2|unused",
        ]
    );
    // A key list alone cannot tell a key unused for 90 days from one used before the lake
    // began: said so, not guessed.
    let r = unused(90, 7, AS_OF, &["list-access-keys.json"]);
    assert_eq!(
        rows(&r, &["access_key_id", "flag", "reason"]),
        [
            "AKIARTXV5AHDVLEGACY2|unknown|no use in the lake, but the lake covers only 6 days (since 2024-11-24), fewer than 90, and no credential report gives its last use",
            "AKIARTXV5AHDROLDBATC|unknown|no use in the lake, but the lake covers only 6 days (since 2024-11-24), fewer than 90, and no credential report gives its last use",
        ]
    );
}

#[test]
fn unused_keys_from_the_lake_alone() {
    // Nothing is 90 days stale in a 7-day lake.
    let r = unused(90, 7, AS_OF, &[]);
    assert_eq!(r.rows(), 0);
    assert!(
        r.notes[0].starts_with("Without --inventory, a key never used"),
        "{:?}",
        r.notes
    );
    // Three days later, with --days 1: every long-term key is stale except ci-deploy's, which
    // SecOps set Inactive (an UpdateAccessKey call in the lake).
    let r = unused(1, 7, "2024-12-03T00:00:00Z", &[]);
    let keys = rows(&r, &["access_key_id"]);
    assert_eq!(keys.len(), 14, "{keys:?}");
    assert!(!keys.contains(&"AKIARTXV5AHDZMKNCBCQ".to_owned()));
    assert_eq!(
        rows(&r, &["access_key_id", "status", "reason"])[0],
        "AKIARTXV5AHDT3IDRTCQ||not used for 3 days (last used 2024-11-29, per the lake) (status unknown: not in an inventory; taken as active)"
    );
    // The backdoor key, made by CreateAccessKey at 03:16:15 and first used at 03:21: at 03:20
    // it is known never to have been used, and flagged once the grace period is 0.
    let r = unused(1, 0, "2024-11-30T03:20:00Z", &[]);
    assert_eq!(
        rows(
            &r,
            &[
                "access_key_id",
                "user_name",
                "status",
                "created",
                "flag",
                "reason"
            ]
        )[0],
        "AKIARTXV5AHDRQSG4VCH|backup-admin|Active|2024-11-30T03:16:15Z|never-used|never used (no use in the lake since its creation); created 2024-11-30, 0 days ago"
    );
    let r = unused(1, 7, "2024-11-30T03:20:00Z", &[]);
    assert!(!rows(&r, &["access_key_id"]).contains(&"AKIARTXV5AHDRQSG4VCH".to_owned()));
}

#[test]
fn rotation_flags_old_keys_and_users_with_two() {
    let r = run(
        ReportKind::Rotation { max_age: 90 },
        AS_OF,
        &["keys.csv", "credential-report.csv"],
    );
    assert_eq!(
        rows(&r, &["access_key_id", "user_name", "age_days", "flags"]),
        [
            "AKIARTXV5AHDVLEGACY2|legacy-etl|1055|too-old",
            "AKIARTXV5AHDYJI6AXTW|user0002|361|too-old",
            "AKIARTXV5AHDT3IDRTCQ|reporting|303|too-old",
            "AKIARTXV5AHDROLDBATC|old-batch|271|too-old",
            "AKIARTXV5AHDSBVXC7TA|user0000|163|too-old,two-active-keys",
            "AKIARTXV5AHDWKR5UOYH|user0006|146|too-old,two-active-keys",
            "AKIARTXV5AHDUXBMER7F|user0004|121|too-old",
            "AKIARTXV5AHDVXSPWTQJ|user0005|81|two-active-keys",
            "AKIARTXV5AHDRKHBZQNE|user0001|76|two-active-keys",
            "AKIARTXV5AHD36QGTO2B|user0000|60|two-active-keys",
            "AKIARTXV5AHDXN5ZJCAB|user0005|56|two-active-keys",
            "AKIARTXV5AHDWQXLPQRZ|user0001|29|two-active-keys",
            "AKIARTXV5AHDWQ6B77CX|user0006|20|two-active-keys",
        ]
    );
    assert_eq!(
        row_of(&r, "AKIARTXV5AHDSBVXC7TA")["reason"],
        "163 days old (created 2024-06-20, per the inventory), more than 90; user0000 has 2 active keys (per the credential report)"
    );
    // From the lake alone: no key is known to be old, and users with two keys in use are
    // flagged with their status stated as unknown.
    let r = run(ReportKind::Rotation { max_age: 90 }, AS_OF, &[]);
    let mut two = rows(&r, &["user_name", "flags"]);
    two.sort();
    two.dedup();
    assert_eq!(
        two,
        [
            "user0000|two-active-keys",
            "user0001|two-active-keys",
            "user0005|two-active-keys",
            "user0006|two-active-keys",
        ]
    );
    assert_eq!(r.rows(), 8);
}

#[test]
fn bad_requests_are_refused() {
    let req = |kind| ReportRequest {
        kind,
        as_of: t(AS_OF),
        inventory: vec![],
        charts: false,
    };
    let opts = SessionOptions {
        threads: 2,
        ..SessionOptions::default()
    };
    let err = report(
        lake(),
        &req(ReportKind::LastUsed {
            since: t("2024-12-02T00:00:00Z"),
            kinds: KindFilter::All,
        }),
        &opts,
    )
    .expect_err("since after as_of")
    .to_string();
    assert!(err.contains("after the report's time"), "{err}");
    let err = report(
        lake(),
        &req(ReportKind::Unused { days: 0, grace: 7 }),
        &opts,
    )
    .expect_err("days 0")
    .to_string();
    assert_eq!(err, "--days must be at least 1");
    let mut bad = req(ReportKind::Rotation { max_age: 90 });
    bad.inventory = vec![testdata().join("sample")];
    assert!(report(lake(), &bad, &opts).is_err());
}
