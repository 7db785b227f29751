use crate::util::*;

#[test]
fn decodes_the_account_offline() {
    let out = run_code(
        keytrail().args([
            "key-info",
            "ASIAY34FZKBOKMUTVV7A",
            "AKIAIOSFODNN7EXAMPLE",
            "--json",
        ]),
        0,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v[0]["account"], "609629065308");
    assert_eq!(v[0]["key_kind"], "temporary");
    assert_eq!(v[1]["account"], serde_json::Value::Null);
    assert!(
        v[1]["account_note"]
            .as_str()
            .expect("note")
            .contains("predates account encoding")
    );
    let out = run_code(keytrail().args(["key-info", "AROAY34FZKBOKMUTVV7A"]), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("AROA: IAM role"), "{text}");
    assert!(text.contains("account  609629065308"), "{text}");
    let out = run_code(keytrail().args(["key-info", "hello"]), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("`hello` is not a key ID"));
}
