//! `report alternatives`: each long-term key classified by how it is used.

use keytrail_detect::alternatives::{Recommendation, advise_in};
use keytrail_detect::block_on;
use keytrail_detect::fixture::{batch_of, session_with};
use serde_json::{Value, json};

/// 2024-11-01T00:00:00Z
const T0: i64 = 1_730_419_200_000;
const DAY: i64 = 86_400_000;

fn ev(id: &str, t: i64, key: &str, ip: &str, ua: &str) -> (String, Value) {
    (
        id.to_owned(),
        json!({
            "eventVersion": "1.08",
            "userIdentity": {"type": "IAMUser", "arn": format!("arn:aws:iam::111122223333:user/{key}"), "accountId": "111122223333", "accessKeyId": key, "userName": key},
            "eventTime": keytrail_model::time::format_millis(T0 + t),
            "eventSource": "s3.amazonaws.com", "eventName": "ListBuckets", "awsRegion": "us-east-1",
            "sourceIPAddress": ip, "userAgent": ua, "eventID": id, "eventType": "AwsApiCall",
            "recipientAccountId": "111122223333"
        }),
    )
}

#[test]
fn each_long_term_key_gets_the_replacement_its_use_calls_for() {
    let lambda = "AKIALAMBDAKEY0000001";
    let person = "AKIAPERSONKEY0000001";
    let program = "AKIAPROGRAMKEY000001";
    let few = "AKIAFEWEVENTS0000001";
    let on_ec2 = "AKIAONEC2KEY00000001";
    let mut r = Vec::new();
    for d in 0..4 {
        // A plain SDK on an EC2 instance's public address: AWS's ranges say it runs there.
        r.push(ev(
            &format!("e{d}"),
            d * DAY,
            on_ec2,
            "52.23.148.12",
            "Boto3/1.34.0 md/Botocore#1.34.0 ua/2.0 os/linux#5.15",
        ));
        r.push(ev(
            &format!("l{d}"),
            d * DAY,
            lambda,
            "3.5.140.2",
            "aws-sdk-js/3.614.0 exec-env/AWS_Lambda_nodejs20.x",
        ));
        r.push(ev(
            &format!("p{d}"),
            d * DAY,
            person,
            &format!("198.51.{d}.7"),
            "aws-cli/2.15.30 Python/3.11.8 Darwin/23.1.0 exe/x86_64",
        ));
        r.push(ev(
            &format!("g{d}"),
            d * DAY,
            program,
            "203.0.113.10",
            "Boto3/1.34.0 md/Botocore#1.34.0 ua/2.0 os/linux#5.15",
        ));
    }
    r.push(ev("f0", 0, few, "192.0.2.9", "Boto3/1.34.0"));
    // A temporary key is not a long-term key: not listed.
    r.push(ev(
        "t0",
        0,
        "ASIATEMPKEY000000001",
        "192.0.2.9",
        "Boto3/1.34.0",
    ));
    let ctx = session_with(batch_of(&r).expect("records"), 1).expect("session");
    let ranges = keytrail_model::awsip::AwsRanges::bundled();
    let rows = block_on(1, async move { advise_in(&ctx, None, &ranges).await }).expect("advice");
    let got: Vec<(&str, &str, Recommendation, u64, usize, usize)> = rows
        .iter()
        .map(|a| {
            (
                a.key.as_str(),
                a.usage,
                a.recommendation,
                a.events,
                a.days,
                a.networks,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (lambda, "aws-hosted", Recommendation::IamRole, 4, 4, 1),
            (on_ec2, "aws-hosted", Recommendation::IamRole, 4, 4, 1),
            (person, "person", Recommendation::IdentityCenter, 4, 4, 4),
            (
                program,
                "steady-program",
                Recommendation::RolesAnywhere,
                4,
                4,
                1
            ),
            (few, "unclear", Recommendation::Review, 1, 1, 1),
        ]
    );
    assert_eq!(
        rows[0].why,
        "100% of its 4 events run inside AWS: Lambda runtime in the user agent (4 events); give the workload a role (instance profile, Lambda execution role or ECS task role) and delete the key"
    );
    assert_eq!(
        rows[1].why,
        "100% of its 4 events run inside AWS: an AWS address (in AWS's published ranges) (4 events); give the workload a role (instance profile, Lambda execution role or ECS task role) and delete the key"
    );
    assert_eq!(rows[3].addresses, vec!["203.0.113.10".to_owned()]);
    assert_eq!(rows[2].clients, vec!["aws-cli".to_owned()]);
}
