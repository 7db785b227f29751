//! The hostile-input corpus (`testdata/corrupt/`): each object gets a reason naming it, the run
//! goes on, the good rows are written, and every object and record is accounted for.

use std::collections::BTreeMap;

use crate::util::*;

#[test]
fn hostile_objects_fail_alone_and_everything_is_accounted_for() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let corpus = testdata().join("corrupt");
    let s = ingest_json(&[&corpus], &lake, &[], 1);
    assert_balanced(&s);
    assert_eq!(s["partial"], true);
    assert_eq!(s["objects"]["seen"], 22);
    assert_eq!(s["objects"]["read"], 11);
    assert_eq!(s["objects"]["failed"], 7);
    assert_eq!(
        s["objects"]["skipped"]["digest"], 2,
        "one by name, one by content"
    );
    assert_eq!(
        s["objects"]["skipped"]["not-a-log-file"], 2,
        "README.md and make_corpus.py"
    );

    let failures: BTreeMap<String, String> = s["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|f| {
            let object = f["object"].as_str().expect("object");
            let name = object.rsplit('/').next().expect("name").to_owned();
            assert!(
                object.contains("testdata/corrupt/"),
                "the object is named in full: {object}"
            );
            (name, f["code"].as_str().expect("code").to_owned())
        })
        .collect();
    let want: BTreeMap<String, String> = [
        ("binary.json", "not-json"),
        ("cut-mid-array.json", "not-json"),
        ("deep-document.json.gz", "too-deep"),
        ("empty.json.gz", "empty"),
        ("not-json.json", "not-json"),
        ("records-not-array.json", "records-not-array"),
        ("truncated.json.gz", "corrupt-gzip"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!(failures, want);

    assert_eq!(s["events"]["read"], 26);
    assert_eq!(s["events"]["written"], 19);
    assert_eq!(s["events"]["skipped"], 7);
    assert_eq!(s["skipped_records_by_reason"]["wrong-type"], 2);
    assert_eq!(s["skipped_records_by_reason"]["invalid-json"], 1);
    assert_eq!(s["skipped_records_by_reason"]["too-deep"], 4);
    let mut samples: Vec<(String, u64)> = s["skipped_record_samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|r| {
            let o = r["object"].as_str().expect("o");
            (
                o.rsplit('/').next().expect("n").to_owned(),
                r["record"].as_u64().expect("i"),
            )
        })
        .collect();
    samples.sort();
    assert_eq!(
        samples,
        [
            ("deep-field.json.gz".to_owned(), 1),
            ("deep-lines.jsonl.gz".to_owned(), 1),
            ("deep-lookup.json.gz".to_owned(), 1),
            ("deep-records.json.gz".to_owned(), 1),
            ("lines.jsonl".to_owned(), 1),
            ("wrong-types.json".to_owned(), 1),
            ("wrong-types.json".to_owned(), 2)
        ]
    );

    // Exactly the good records are in the lake.
    let ids: Vec<String> = rows(&lake, "events")
        .into_iter()
        .filter_map(|r| r.event_id)
        .collect();
    let mut ids = ids;
    ids.sort();
    assert_eq!(
        ids,
        [
            "corpus-0001",
            "corpus-0002",
            "corpus-0100",
            "corpus-0102",
            "corpus-0200",
            "corpus-0201",
            "corpus-0202",
            "corpus-0300",
            "corpus-0301",
            "corpus-0400",
            "corpus-0500",
            "corpus-0600",
            "corpus-0700",
            "corpus-0701",
            "corpus-0710",
            "corpus-0712",
            "corpus-0730",
            "corpus-0732",
            "corpus-0740"
        ]
    );

    // Failed objects are not in the manifest: a rerun tries them again (and they fail again),
    // while the objects that were read are not read twice.
    let again = ingest_json(&[&corpus], &lake, &[], 1);
    assert_balanced(&again);
    assert_eq!(again["objects"]["failed"], 7);
    assert_eq!(again["objects"]["read"], 0);
    assert_eq!(rows(&lake, "events").len(), 19);
}

#[test]
fn limits_turn_oversized_input_into_reasons() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    // An 800-byte record limit skips the one bigger record of this capture (984 bytes of values;
    // member names, punctuation and indentation are not counted).
    let file = testdata().join("stratus/aws.persistence.iam-create-admin-user.json");
    let s = ingest_json(&[&file], &lake, &["--max-event-size", "800"], 0);
    assert_balanced(&s);
    assert_eq!(s["skipped_records_by_reason"]["too-large"], 1);
    assert_eq!(s["events"]["written"], 2);
    assert_eq!(s["skipped_record_samples"][0]["record"], 2);
    assert!(
        s["skipped_record_samples"][0]["reason"]
            .as_str()
            .expect("r")
            .contains("984 bytes")
    );
    // `--max-object-size` bounds what is held whole. An array is read record by record, so
    // its one record of 1.6 kB is skipped alone under a 1 KiB limit...
    let other = testdata().join("stratus/aws.persistence.iam-backdoor-role.json");
    let s = ingest_json(&[&other], &lake, &["--max-object-size", "1K"], 0);
    assert_balanced(&s);
    assert_eq!(s["objects"]["read"], 1);
    assert_eq!(s["skipped_records_by_reason"]["too-large"], 1);
    // ...while the same event as a document of its own must be held whole, and fails.
    let text = std::fs::read_to_string(&other).expect("read");
    let alone = tmp.path().join("alone.json");
    let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
    std::fs::write(&alone, inner).expect("write");
    let s = ingest_json(&[&alone], &lake, &["--max-object-size", "1K"], 1);
    assert_eq!(s["failures"][0]["code"], "too-large");
    assert_eq!(s["objects"]["failed"], 1);
}
