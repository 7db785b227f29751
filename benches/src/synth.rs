//! A generator of realistic synthetic CloudTrail, for benchmarks and demos.
//!
//! Deterministic for a seed. Files follow the S3 delivery layout and shape
//! (`AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_<time>_<id>.json.gz`
//! holding `{"Records": [...]}`). Events mix the identities real trails carry (IAM users with
//! long-term keys, assumed roles with temporary keys and session context, AWS services without
//! a key, the root user), request and response objects from a few bytes to several kB,
//! read-only and mutating calls, and errors.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenOptions {
    pub events: u64,
    pub seed: u64,
    /// Average events per file (CloudTrail delivers a file about every 5 minutes per region).
    pub events_per_file: u64,
    pub accounts: usize,
    pub users: usize,
    pub roles: usize,
    /// First day of activity.
    pub start: DateTime<Utc>,
    /// Days the activity spans.
    pub days: i64,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            events: 900_000,
            seed: 42,
            events_per_file: 1100,
            accounts: 3,
            users: 200,
            roles: 40,
            start: Utc
                .with_ymd_and_hms(2024, 11, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            days: 14,
        }
    }
}

/// What was written.
#[derive(Clone, Debug, Default)]
pub struct Generated {
    pub files: u64,
    pub events: u64,
    pub json_bytes: u64,
    pub gz_bytes: u64,
}

const REGIONS: [(&str, u32); 5] = [
    ("us-east-1", 55),
    ("eu-west-1", 20),
    ("us-west-2", 15),
    ("ap-southeast-2", 7),
    ("sa-east-1", 3),
];

/// `(source, name, read_only, weight, request kind)`.
const CALLS: [(&str, &str, bool, u32, Req); 30] = [
    ("s3.amazonaws.com", "GetObject", true, 120, Req::S3Object),
    ("s3.amazonaws.com", "PutObject", false, 40, Req::S3Object),
    ("s3.amazonaws.com", "HeadObject", true, 30, Req::S3Object),
    ("s3.amazonaws.com", "ListObjects", true, 25, Req::S3Bucket),
    ("s3.amazonaws.com", "ListBuckets", true, 5, Req::None),
    ("kms.amazonaws.com", "Decrypt", true, 90, Req::Kms),
    ("kms.amazonaws.com", "GenerateDataKey", true, 40, Req::Kms),
    ("sts.amazonaws.com", "AssumeRole", true, 25, Req::AssumeRole),
    (
        "sts.amazonaws.com",
        "GetCallerIdentity",
        true,
        15,
        Req::None,
    ),
    (
        "ec2.amazonaws.com",
        "DescribeInstances",
        true,
        45,
        Req::Filters,
    ),
    (
        "ec2.amazonaws.com",
        "DescribeSecurityGroups",
        true,
        15,
        Req::Filters,
    ),
    (
        "ec2.amazonaws.com",
        "DescribeVolumes",
        true,
        12,
        Req::Filters,
    ),
    (
        "ec2.amazonaws.com",
        "RunInstances",
        false,
        2,
        Req::RunInstances,
    ),
    ("ec2.amazonaws.com", "CreateTags", false, 6, Req::Tags),
    (
        "logs.amazonaws.com",
        "CreateLogStream",
        false,
        20,
        Req::Logs,
    ),
    (
        "logs.amazonaws.com",
        "DescribeLogGroups",
        true,
        8,
        Req::None,
    ),
    (
        "monitoring.amazonaws.com",
        "GetMetricData",
        true,
        35,
        Req::Metrics,
    ),
    (
        "monitoring.amazonaws.com",
        "PutMetricAlarm",
        false,
        2,
        Req::Metrics,
    ),
    ("lambda.amazonaws.com", "Invoke", false, 25, Req::Lambda),
    (
        "lambda.amazonaws.com",
        "ListFunctions20150331",
        true,
        6,
        Req::None,
    ),
    (
        "dynamodb.amazonaws.com",
        "DescribeTable",
        true,
        15,
        Req::Dynamo,
    ),
    (
        "dynamodb.amazonaws.com",
        "UpdateItem",
        false,
        10,
        Req::Dynamo,
    ),
    ("iam.amazonaws.com", "ListUsers", true, 4, Req::None),
    ("iam.amazonaws.com", "GetRole", true, 6, Req::Role),
    ("iam.amazonaws.com", "PutRolePolicy", false, 1, Req::Policy),
    ("iam.amazonaws.com", "ListAccessKeys", true, 2, Req::User),
    (
        "secretsmanager.amazonaws.com",
        "GetSecretValue",
        true,
        10,
        Req::Secret,
    ),
    ("ssm.amazonaws.com", "GetParameter", true, 18, Req::Param),
    (
        "cloudtrail.amazonaws.com",
        "LookupEvents",
        true,
        2,
        Req::None,
    ),
    (
        "ecr.amazonaws.com",
        "GetAuthorizationToken",
        true,
        8,
        Req::None,
    ),
];

#[derive(Clone, Copy, Debug)]
enum Req {
    None,
    S3Object,
    S3Bucket,
    Kms,
    AssumeRole,
    Filters,
    RunInstances,
    Tags,
    Logs,
    Metrics,
    Lambda,
    Dynamo,
    Role,
    Policy,
    User,
    Secret,
    Param,
}

const AGENTS: [&str; 8] = [
    "aws-cli/2.15.30 Python/3.11.8 Linux/6.1.79-99.164.amzn2023.x86_64 exe/x86_64.amzn.2023 prompt/off command/s3.cp",
    "aws-sdk-java/2.25.11 Linux/5.10.210-201.852.amzn2.x86_64 OpenJDK_64-Bit_Server_VM/17.0.10+7-LTS Java/17.0.10 vendor/Amazon.com_Inc. io/sync http/Apache cfg/retry-mode/standard",
    "Boto3/1.34.69 md/Botocore#1.34.69 ua/2.0 os/linux#5.10.213 md/arch#x86_64 lang/python#3.12.2 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.34.69",
    "aws-sdk-go-v2/1.26.0 os/linux lang/go#1.22.1 md/GOOS#linux md/GOARCH#amd64 api/s3#1.53.0",
    "Terraform/1.7.5 (+https://www.terraform.io) terraform-provider-aws/5.42.0 (+https://registry.terraform.io/providers/hashicorp/aws) aws-sdk-go-v2/1.26.0",
    "console.amazonaws.com",
    "aws-internal/3 aws-sdk-java/1.12.680 Linux/5.10.213-179.855.amzn2int.x86_64 OpenJDK_64-Bit_Server_VM/25.402-b08 java/1.8.0_402",
    "[S3Console/0.4, aws-internal/3 aws-sdk-java/1.12.680]",
];

const ERRORS: [(&str, &str); 5] = [
    (
        "AccessDenied",
        "User is not authorized to perform this action because no identity-based policy allows it",
    ),
    ("ThrottlingException", "Rate exceeded"),
    ("NoSuchKey", "The specified key does not exist."),
    ("ResourceNotFoundException", "Requested resource not found"),
    (
        "Client.UnauthorizedOperation",
        "You are not authorized to perform this operation.",
    ),
];

const SERVICES: [&str; 6] = [
    "ec2.amazonaws.com",
    "lambda.amazonaws.com",
    "cloudtrail.amazonaws.com",
    "config.amazonaws.com",
    "autoscaling.amazonaws.com",
    "elasticloadbalancing.amazonaws.com",
];

/// A key ID of `prefix` that encodes `account` the way newer AWS key IDs do.
pub fn key_id(rng: &mut StdRng, prefix: &str, account: u64) -> String {
    let z: u64 = (1 << 47) | ((account & 0xFF_FFFF_FFFF) << 7) | rng.random_range(0..128);
    let mut bytes = [0u8; 10];
    bytes[..6].copy_from_slice(&z.to_be_bytes()[2..]);
    rng.fill(&mut bytes[6..]);
    format!("{prefix}{}", data_encoding::BASE32_NOPAD.encode(&bytes))
}

#[derive(Clone, Debug)]
struct User {
    account: u64,
    name: String,
    id: String,
    keys: Vec<String>,
    agent: usize,
    ip: String,
}

#[derive(Clone, Debug)]
struct Role {
    account: u64,
    name: String,
    id: String,
    /// Current session's temporary key, renewed now and then.
    session_key: String,
    session_name: String,
    agent: usize,
    ip: String,
    ec2: bool,
}

struct World {
    accounts: Vec<u64>,
    users: Vec<User>,
    roles: Vec<Role>,
    call_weights: u32,
    region_weights: u32,
}

fn pick_weighted<T: Copy>(rng: &mut StdRng, items: &[(T, u32)], total: u32) -> T {
    let mut x = rng.random_range(0..total);
    for (item, w) in items {
        if x < *w {
            return *item;
        }
        x -= w;
    }
    items[0].0
}

fn ip(rng: &mut StdRng) -> String {
    format!(
        "{}.{}.{}.{}",
        rng.random_range(1..224),
        rng.random_range(0..256),
        rng.random_range(0..256),
        rng.random_range(1..255)
    )
}

fn uuid(rng: &mut StdRng) -> String {
    let b: [u8; 16] = rng.random();
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff | 0x4000,
        u16::from_be_bytes([b[8], b[9]]) & 0x3fff | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

fn unique_id(rng: &mut StdRng, prefix: &str) -> String {
    let b: [u8; 11] = rng.random();
    format!("{prefix}{}", &data_encoding::BASE32_NOPAD.encode(&b)[..17])
}

impl World {
    fn new(rng: &mut StdRng, o: &GenOptions) -> World {
        let accounts: Vec<u64> = (0..o.accounts.max(1))
            .map(|i| 111_111_111_111 * (i as u64 + 1) % 1_000_000_000_000)
            .collect();
        let users = (0..o.users)
            .map(|i| {
                let account = accounts[i % accounts.len()];
                let n = if rng.random_bool(0.2) { 2 } else { 1 };
                User {
                    account,
                    name: format!("user{i:04}"),
                    id: unique_id(rng, "AIDA"),
                    keys: (0..n).map(|_| key_id(rng, "AKIA", account)).collect(),
                    agent: rng.random_range(0..5),
                    ip: ip(rng),
                }
            })
            .collect();
        let roles = (0..o.roles)
            .map(|i| {
                let account = accounts[i % accounts.len()];
                let ec2 = i % 4 == 0;
                Role {
                    account,
                    name: if ec2 {
                        format!("app-instance-role-{i}")
                    } else {
                        format!("service-role-{i}")
                    },
                    id: unique_id(rng, "AROA"),
                    session_key: key_id(rng, "ASIA", account),
                    session_name: if ec2 {
                        format!("i-0{:016x}", rng.random::<u64>())
                    } else {
                        format!("session-{i}")
                    },
                    agent: rng.random_range(0..5),
                    ip: ip(rng),
                    ec2,
                }
            })
            .collect();
        World {
            accounts,
            users,
            roles,
            call_weights: CALLS.iter().map(|c| c.3).sum(),
            region_weights: REGIONS.iter().map(|r| r.1).sum(),
        }
    }
}

fn request(
    rng: &mut StdRng,
    req: Req,
    account: u64,
    region: &str,
) -> (Value, Value, Option<Value>) {
    let bucket = format!("data-{account}-{}", rng.random_range(0..12));
    match req {
        Req::None => (Value::Null, Value::Null, None),
        Req::S3Object => {
            let key = format!(
                "warehouse/year=2024/month={:02}/part-{:05}-{}.snappy.parquet",
                rng.random_range(1..13),
                rng.random_range(0..99999),
                uuid(rng)
            );
            let arn = format!("arn:aws:s3:::{bucket}/{key}");
            (
                json!({"bucketName": bucket, "Host": format!("{bucket}.s3.{region}.amazonaws.com"), "key": key}),
                Value::Null,
                Some(json!([
                    {"type": "AWS::S3::Object", "ARN": arn},
                    {"accountId": account.to_string(), "type": "AWS::S3::Bucket", "ARN": format!("arn:aws:s3:::{bucket}")}
                ])),
            )
        }
        Req::S3Bucket => (
            json!({"bucketName": bucket, "Host": format!("{bucket}.s3.{region}.amazonaws.com"), "prefix": "warehouse/", "list-type": "2", "max-keys": "1000"}),
            Value::Null,
            Some(
                json!([{"accountId": account.to_string(), "type": "AWS::S3::Bucket", "ARN": format!("arn:aws:s3:::{bucket}")}]),
            ),
        ),
        Req::Kms => {
            let key = format!("arn:aws:kms:{region}:{account}:key/{}", uuid(rng));
            (
                json!({"encryptionAlgorithm": "SYMMETRIC_DEFAULT", "keyId": key, "encryptionContext": {"aws:s3:arn": format!("arn:aws:s3:::{bucket}")}}),
                Value::Null,
                Some(
                    json!([{"accountId": account.to_string(), "type": "AWS::KMS::Key", "ARN": key}]),
                ),
            )
        }
        Req::AssumeRole => (
            json!({"roleArn": format!("arn:aws:iam::{account}:role/service-role-{}", rng.random_range(0..40)), "roleSessionName": format!("session-{}", rng.random_range(0..1000)), "durationSeconds": 3600}),
            json!({"credentials": {"accessKeyId": key_id(rng, "ASIA", account), "sessionToken": "IQoJb3JpZ2luX2VjEHsaCXVzLWVhc3QtMSJHMEUCIQD3mJ8bX1lqZgq8pE3lN4h0u9VdGlTf7uMZ5rzqlJ5p6wIgV8sM1oVn0g3qzqG0gU2pL8dC1bqB9xM0fkVXz2Yh8KYqmAIIdBAAGgw2MDk2MjkwNjUzMDgiDF5bc3T2W8yPmY7oXyr1AaYlgS3xj7kHq1q0A0VW3Yb9pZt4Nm1u5V8pN6zQ0eJp", "expiration": "Nov 30, 2024, 10:00:00 PM"}, "assumedRoleUser": {"assumedRoleId": format!("AROAEXAMPLE:session-{}", rng.random_range(0..1000)), "arn": format!("arn:aws:sts::{account}:assumed-role/service-role/session")}}),
            None,
        ),
        Req::Filters => {
            let n = rng.random_range(1..6);
            let items: Vec<Value> = (0..n)
                .map(|_| json!({"name": "tag:Environment", "valueSet": {"items": [{"value": "production"}, {"value": "staging"}]}}))
                .collect();
            (
                json!({"filterSet": {"items": items}, "maxResults": 1000}),
                Value::Null,
                None,
            )
        }
        Req::RunInstances => {
            let n = rng.random_range(1..4);
            let instances: Vec<Value> = (0..n)
                .map(|_| json!({
                    "instanceId": format!("i-0{:016x}", rng.random::<u64>()),
                    "imageId": "ami-0c101f26f147fa7fd",
                    "instanceState": {"code": 0, "name": "pending"},
                    "privateDnsName": format!("ip-10-0-{}-{}.ec2.internal", rng.random_range(0..256), rng.random_range(0..256)),
                    "amiLaunchIndex": 0, "productCodes": {}, "instanceType": "m5.xlarge",
                    "launchTime": 1_732_960_000_000u64,
                    "placement": {"availabilityZone": format!("{region}a"), "tenancy": "default"},
                    "monitoring": {"state": "disabled"},
                    "subnetId": "subnet-0a1b2c3d4e5f67890", "vpcId": "vpc-0a1b2c3d4e5f67890",
                    "privateIpAddress": "10.0.1.23",
                    "stateReason": {"code": "pending", "message": "pending"},
                    "architecture": "x86_64", "rootDeviceType": "ebs", "rootDeviceName": "/dev/xvda",
                    "blockDeviceMapping": {}, "virtualizationType": "hvm", "hypervisor": "xen",
                    "groupSet": {"items": [{"groupId": "sg-0123456789abcdef0", "groupName": "default"}]},
                    "networkInterfaceSet": {"items": [{"networkInterfaceId": "eni-0123456789abcdef0", "subnetId": "subnet-0a1b2c3d4e5f67890", "vpcId": "vpc-0a1b2c3d4e5f67890", "ownerId": account.to_string(), "status": "in-use", "macAddress": "0e:12:34:56:78:9a", "privateIpAddress": "10.0.1.23", "sourceDestCheck": true, "groupSet": {"items": [{"groupId": "sg-0123456789abcdef0", "groupName": "default"}]}, "attachment": {"attachmentId": "eni-attach-0123456789abcdef0", "deviceIndex": 0, "networkCardIndex": 0, "status": "attaching", "attachTime": 1_732_960_000_000u64, "deleteOnTermination": true}, "privateIpAddressesSet": {"item": [{"privateIpAddress": "10.0.1.23", "primary": true}]}, "ipv6AddressesSet": {}, "tagSet": {}, "interfaceType": "interface"}]},
                    "ebsOptimized": false, "enaSupport": true,
                    "cpuOptions": {"coreCount": 2, "threadsPerCore": 2},
                    "capacityReservationSpecification": {"capacityReservationPreference": "open"},
                    "enclaveOptions": {"enabled": false},
                    "metadataOptions": {"state": "pending", "httpTokens": "required", "httpPutResponseHopLimit": 2, "httpEndpoint": "enabled"},
                }))
                .collect();
            (
                json!({"instancesSet": {"items": [{"imageId": "ami-0c101f26f147fa7fd", "minCount": n, "maxCount": n}]}, "instanceType": "m5.xlarge", "blockDeviceMapping": {}, "monitoring": {"enabled": false}, "disableApiTermination": false, "disableApiStop": false, "clientToken": uuid(rng)}),
                json!({"requestId": uuid(rng), "reservationId": format!("r-0{:016x}", rng.random::<u64>()), "ownerId": account.to_string(), "groupSet": {}, "instancesSet": {"items": instances}, "requesterId": "940372691376"}),
                None,
            )
        }
        Req::Tags => (
            json!({"resourcesSet": {"items": [{"resourceId": format!("i-0{:016x}", rng.random::<u64>())}]}, "tagSet": {"items": [{"key": "Owner", "value": "platform"}, {"key": "CostCenter", "value": "1234"}]}}),
            json!({"requestId": uuid(rng), "_return": true}),
            None,
        ),
        Req::Logs => (
            json!({"logGroupName": format!("/aws/lambda/function-{}", rng.random_range(0..50)), "logStreamName": format!("2024/11/30/[$LATEST]{:032x}", rng.random::<u128>())}),
            Value::Null,
            None,
        ),
        Req::Metrics => (
            json!({"metricDataQueries": [{"id": "m1", "metricStat": {"metric": {"namespace": "AWS/EC2", "metricName": "CPUUtilization", "dimensions": [{"name": "InstanceId", "value": format!("i-0{:016x}", rng.random::<u64>())}]}, "period": 300, "stat": "Average"}}], "startTime": "Nov 30, 2024, 9:00:00 AM", "endTime": "Nov 30, 2024, 10:00:00 AM"}),
            Value::Null,
            None,
        ),
        Req::Lambda => (
            json!({"functionName": format!("arn:aws:lambda:{region}:{account}:function:function-{}", rng.random_range(0..50)), "invocationType": "RequestResponse", "logType": "None"}),
            Value::Null,
            Some(
                json!([{"accountId": account.to_string(), "type": "AWS::Lambda::Function", "ARN": format!("arn:aws:lambda:{region}:{account}:function:function-1")}]),
            ),
        ),
        Req::Dynamo => (
            json!({"tableName": format!("orders-{}", rng.random_range(0..8)), "key": {"pk": {"S": uuid(rng)}}, "updateExpression": "SET #s = :s", "expressionAttributeNames": {"#s": "status"}}),
            Value::Null,
            Some(
                json!([{"accountId": account.to_string(), "type": "AWS::DynamoDB::Table", "ARN": format!("arn:aws:dynamodb:{region}:{account}:table/orders")}]),
            ),
        ),
        Req::Role => (
            json!({"roleName": format!("service-role-{}", rng.random_range(0..40))}),
            Value::Null,
            None,
        ),
        Req::Policy => (
            json!({"roleName": format!("service-role-{}", rng.random_range(0..40)), "policyName": "inline-access", "policyDocument": "{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": [\n    {\n      \"Effect\": \"Allow\",\n      \"Action\": [\"s3:GetObject\", \"s3:PutObject\", \"s3:ListBucket\"],\n      \"Resource\": [\"arn:aws:s3:::data-bucket\", \"arn:aws:s3:::data-bucket/*\"]\n    },\n    {\n      \"Effect\": \"Allow\",\n      \"Action\": [\"kms:Decrypt\", \"kms:GenerateDataKey\"],\n      \"Resource\": \"*\"\n    }\n  ]\n}"}),
            Value::Null,
            None,
        ),
        Req::User => (
            json!({"userName": format!("user{:04}", rng.random_range(0..200))}),
            Value::Null,
            None,
        ),
        Req::Secret => (
            json!({"secretId": format!("arn:aws:secretsmanager:{region}:{account}:secret:prod/db-{}", rng.random_range(0..10))}),
            Value::Null,
            None,
        ),
        Req::Param => (
            json!({"name": format!("/app/prod/config-{}", rng.random_range(0..30)), "withDecryption": true}),
            Value::Null,
            None,
        ),
    }
}

fn event(rng: &mut StdRng, w: &World, t: DateTime<Utc>, account: u64, region: &str) -> Value {
    let (source, name, read_only, _, req) = {
        let weighted: Vec<(usize, u32)> = CALLS.iter().enumerate().map(|(i, c)| (i, c.3)).collect();
        CALLS[pick_weighted(rng, &weighted, w.call_weights)]
    };
    let roll = rng.random_range(0..1000);
    let (identity, agent, src_ip) = if roll < 100 {
        // An AWS service acting on its own behalf: no key.
        let svc = SERVICES[rng.random_range(0..SERVICES.len())];
        (
            json!({"type": "AWSService", "invokedBy": svc}),
            svc.to_owned(),
            svc.to_owned(),
        )
    } else if roll < 101 {
        (
            json!({"type": "Root", "principalId": account.to_string(), "arn": format!("arn:aws:iam::{account}:root"), "accountId": account.to_string(), "accessKeyId": key_id(rng, "ASIA", account), "sessionContext": {"attributes": {"creationDate": t.format("%Y-%m-%dT%H:%M:%SZ").to_string(), "mfaAuthenticated": "true"}}}),
            AGENTS[5].to_owned(),
            ip(rng),
        )
    } else if roll < 480 {
        let candidates: Vec<&User> = w.users.iter().filter(|u| u.account == account).collect();
        let u = candidates[rng.random_range(0..candidates.len())];
        let key = &u.keys[rng.random_range(0..u.keys.len())];
        (
            json!({"type": "IAMUser", "principalId": u.id, "arn": format!("arn:aws:iam::{}:user/{}", u.account, u.name), "accountId": u.account.to_string(), "accessKeyId": key, "userName": u.name}),
            AGENTS[u.agent].to_owned(),
            if rng.random_bool(0.97) {
                u.ip.clone()
            } else {
                ip(rng)
            },
        )
    } else {
        let candidates: Vec<&Role> = w.roles.iter().filter(|r| r.account == account).collect();
        let r = candidates[rng.random_range(0..candidates.len())];
        let mut ctx = json!({
            "sessionIssuer": {"type": "Role", "principalId": r.id, "arn": format!("arn:aws:iam::{}:role/{}", r.account, r.name), "accountId": r.account.to_string(), "userName": r.name},
            "webIdFederationData": {},
            "attributes": {"creationDate": (t - Duration::minutes(rng.random_range(1..55))).format("%Y-%m-%dT%H:%M:%SZ").to_string(), "mfaAuthenticated": "false"}
        });
        if r.ec2 {
            ctx["ec2RoleDelivery"] = json!("2.0");
        }
        (
            json!({"type": "AssumedRole", "principalId": format!("{}:{}", r.id, r.session_name), "arn": format!("arn:aws:sts::{}:assumed-role/{}/{}", r.account, r.name, r.session_name), "accountId": r.account.to_string(), "accessKeyId": r.session_key, "sessionContext": ctx}),
            AGENTS[r.agent].to_owned(),
            r.ip.clone(),
        )
    };
    let (req_params, resp, resources) = request(rng, req, account, region);
    let mut e = json!({
        "eventVersion": "1.10",
        "userIdentity": identity,
        "eventTime": t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "eventSource": source,
        "eventName": name,
        "awsRegion": region,
        "sourceIPAddress": src_ip,
        "userAgent": agent,
        "requestParameters": req_params,
        "responseElements": resp,
        "requestID": uuid(rng),
        "eventID": uuid(rng),
        "readOnly": read_only,
        "eventType": "AwsApiCall",
        "managementEvent": !source.starts_with("s3") || name == "ListBuckets",
        "recipientAccountId": account.to_string(),
        "eventCategory": if source.starts_with("s3") && name != "ListBuckets" { "Data" } else { "Management" },
        "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256", "clientProvidedHostHeader": format!("{}.{region}.amazonaws.com", source.split('.').next().unwrap_or("s3"))},
    });
    if let Some(r) = resources {
        e["resources"] = r;
    }
    if rng.random_range(0..100) < 5 {
        let (code, msg) = ERRORS[rng.random_range(0..ERRORS.len())];
        e["errorCode"] = json!(code);
        e["errorMessage"] = json!(msg);
        e["responseElements"] = Value::Null;
    }
    if source.starts_with("s3") {
        e["additionalEventData"] = json!({"SignatureVersion": "SigV4", "CipherSuite": "TLS_AES_128_GCM_SHA256", "bytesTransferredIn": 0, "AuthenticationMethod": "AuthHeader", "x-amz-id-2": "Nz3bLwIuCZ6j4qNNXcCbzK3cCxv4QqhR3T9mMz8E2wbZ8xSaLFzHVq+Zcg2QO8mBmFdmRTx2vw8=", "bytesTransferredOut": rng.random_range(0..10_000_000)});
    }
    e
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 6),
        flate2::Compression::default(),
    );
    enc.write_all(data)?;
    enc.finish()
}

/// Write CloudTrail delivery files under `out` (S3 layout, gzipped `{"Records": [...]}`).
pub fn generate(out: &Path, o: &GenOptions) -> anyhow::Result<Generated> {
    let mut rng = StdRng::seed_from_u64(o.seed);
    let world = World::new(&mut rng, o);
    let files = o.events.div_ceil(o.events_per_file.max(1)).max(1);
    let span = Duration::days(o.days.max(1));
    let mut g = Generated::default();
    let mut left = o.events;
    let regions: Vec<(&str, u32)> = REGIONS.to_vec();
    for f in 0..files {
        let account = world.accounts[(f as usize) % world.accounts.len()];
        let region = pick_weighted(&mut rng, &regions, world.region_weights);
        // Files are spread evenly over the span; each covers five minutes.
        let start =
            o.start + Duration::milliseconds(span.num_milliseconds() * f as i64 / files as i64);
        let n = if f + 1 == files {
            left
        } else {
            let jitter = o.events_per_file / 4;
            (o.events_per_file - jitter + rng.random_range(0..=2 * jitter)).min(left)
        };
        left -= n;
        let mut records = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let t = start + Duration::seconds(rng.random_range(0..300));
            records.push(event(&mut rng, &world, t, account, region));
        }
        let doc = serde_json::to_vec(&json!({"Records": records}))?;
        let dir: PathBuf = out.join(format!(
            "AWSLogs/{account:012}/CloudTrail/{region}/{}",
            start.format("%Y/%m/%d")
        ));
        fs::create_dir_all(&dir)?;
        let name = format!(
            "{account:012}_CloudTrail_{region}_{}_{}.json.gz",
            start.format("%Y%m%dT%H%MZ"),
            &data_encoding::BASE32_NOPAD.encode(&rng.random::<[u8; 10]>())[..16]
        );
        let gz = gzip(&doc)?;
        fs::write(dir.join(name), &gz)?;
        g.files += 1;
        g.events += n;
        g.json_bytes += doc.len() as u64;
        g.gz_bytes += gz.len() as u64;
        if left == 0 {
            break;
        }
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_decode_to_their_account() {
        let mut rng = StdRng::seed_from_u64(1);
        for account in [1u64, 111_122_223_333, 999_999_999_999] {
            let k = key_id(&mut rng, "AKIA", account);
            assert_eq!(k.len(), 20);
            assert_eq!(
                keytrail_model::key::decode_account(&k),
                keytrail_model::AccountDecode::Account(format!("{account:012}"))
            );
        }
    }

    #[test]
    fn generation_is_deterministic_and_readable() {
        let a = tempfile_dir("a");
        let b = tempfile_dir("b");
        let o = GenOptions {
            events: 500,
            events_per_file: 100,
            ..GenOptions::default()
        };
        let ga = generate(&a, &o).expect("gen a");
        let gb = generate(&b, &o).expect("gen b");
        assert_eq!((ga.files, ga.events), (5, 500));
        assert_eq!(ga.json_bytes, gb.json_bytes);
        let _ = fs::remove_dir_all(&a);
        let _ = fs::remove_dir_all(&b);
    }

    fn tempfile_dir(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("keytrail-gen-test-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }
}
