//! One meaning, whichever command asks: on the sample's leaked-key night, the events `sql` says
//! are denied, the key a call minted, the key a call deactivated and the caller's account are
//! the same ones `investigate`, `detect` and `report` use.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::util::*;

const LEAKED: &str = "AKIARTXV5AHDZMKNCBCQ";

fn json(cmd: &mut std::process::Command, code: i32) -> Value {
    let out = run_code(cmd, code);
    serde_json::from_slice(&out.stdout).expect("json")
}

fn sql(lake: &Path, q: &str) -> Vec<Value> {
    let v = json(
        keytrail()
            .args(["sql", q, "--format", "json", "--lake"])
            .arg(lake),
        0,
    );
    v.as_array().expect("rows").clone()
}

fn strings(rows: &[Value], col: &str) -> BTreeSet<String> {
    rows.iter()
        .filter_map(|r| r[col].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn denied_minted_deactivated_and_the_account_agree_across_commands() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    ingest_json(&[&testdata().join("sample")], &lake, &[], 0);
    let inv = json(
        keytrail()
            .args(["investigate", LEAKED, "--format", "json", "--lake"])
            .arg(&lake),
        0,
    );
    let det = json(
        keytrail()
            .args([
                "detect",
                "--format",
                "json",
                "--min-severity",
                "info",
                "--lake",
            ])
            .arg(&lake),
        1,
    );
    let findings = det["findings"].as_array().expect("findings");
    let finding = |rule: &str| -> &Value {
        findings
            .iter()
            .find(|f| f["rule"] == rule && (f["key"] == LEAKED || rule.contains("session")))
            .unwrap_or_else(|| panic!("finding {rule}"))
    };

    // Denied: the same sixteen events.
    let denied = strings(
        &sql(
            &lake,
            &format!("SELECT eventid FROM events WHERE accesskeyid = '{LEAKED}' AND denied"),
        ),
        "eventid",
    );
    assert_eq!(denied.len(), 16);
    let burst: BTreeSet<String> = finding("kt-denied-burst")["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e.as_str().map(str::to_owned))
        .collect();
    assert_eq!(burst, denied, "the denied-burst detector's evidence");
    let rule = finding("recon-account-authorization-details");
    assert!(
        rule["reason"]
            .as_str()
            .is_some_and(|r| r.contains("(denied: AccessDenied)"))
    );
    let blast_denied: u64 = inv["blast_radius"]
        .as_array()
        .expect("blast")
        .iter()
        .filter(|b| b["group"] == "denied" && b["key"] == LEAKED)
        .map(|b| b["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(blast_denied, 16, "the investigation's denied calls");

    // Minted: the investigation's edges are the lake's mintedkeyid rows of the chain's keys.
    let chain: Vec<String> = inv["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["key"].as_str().expect("key").to_owned())
        .collect();
    let list = chain
        .iter()
        .map(|k| format!("'{k}'"))
        .collect::<Vec<_>>()
        .join(",");
    let minted: BTreeSet<(String, String, String)> = sql(
        &lake,
        &format!(
            "SELECT accesskeyid, mintedkeyid, eventid FROM events \
             WHERE mintedkeyid IS NOT NULL AND accesskeyid IN ({list})"
        ),
    )
    .iter()
    .map(|r| {
        (
            r["accesskeyid"].as_str().unwrap_or("").to_owned(),
            r["mintedkeyid"].as_str().unwrap_or("").to_owned(),
            r["eventid"].as_str().unwrap_or("").to_owned(),
        )
    })
    .collect();
    let edges: BTreeSet<(String, String, String)> = inv["derived"]
        .as_array()
        .expect("derived")
        .iter()
        .map(|e| {
            (
                e["parent"].as_str().unwrap_or("").to_owned(),
                e["child"].as_str().unwrap_or("").to_owned(),
                e["event_id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(edges.len(), 4);
    assert_eq!(edges, minted);

    // Deactivated: one UpdateAccessKey, the same event and time everywhere.
    let deactivated = sql(
        &lake,
        &format!(
            "SELECT eventid, eventtime FROM events WHERE targetkeyid = '{LEAKED}' \
             AND keystatus IN ('Inactive', 'Deleted')"
        ),
    );
    assert_eq!(deactivated.len(), 1);
    let leaked = &inv["keys"][0];
    assert_eq!(leaked["key"], LEAKED);
    assert_eq!(leaked["deactivated"]["event_id"], deactivated[0]["eventid"]);
    assert_eq!(leaked["deactivated"]["time"], deactivated[0]["eventtime"]);
    let after = finding("kt-session-used-after-parent-deactivated");
    assert!(
        after["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&format!(
                "used after {LEAKED} was set Inactive at {}",
                deactivated[0]["eventtime"].as_str().unwrap_or("?")
            ))),
        "{}",
        after["reason"]
    );

    // The caller's account.
    let accounts = strings(
        &sql(
            &lake,
            &format!("SELECT DISTINCT calleraccountid FROM events WHERE accesskeyid = '{LEAKED}'"),
        ),
        "calleraccountid",
    );
    assert_eq!(accounts.len(), 1);
    let account = accounts.iter().next().expect("account");
    assert_eq!(leaked["account"].as_str(), Some(account.as_str()));
    let report = json(
        keytrail()
            .args([
                "report",
                "last-used",
                "--as-of",
                "2024-12-01",
                "--format",
                "json",
                "--lake",
            ])
            .arg(&lake),
        0,
    );
    let row = report
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["access_key_id"] == LEAKED)
        .expect("the leaked key's row");
    assert_eq!(row["account_id"].as_str(), Some(account.as_str()));
}
