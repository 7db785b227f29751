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
    /// Roles' sessions get a new temporary key every hour, as real role sessions do (so a lake
    /// holds tens of thousands of keys, not one per role).
    pub rotate_sessions: bool,
    /// A CI automation user whose key assumes a deploy role on a schedule, each session's key
    /// making calls and every few sessions chaining into a second role: a long chain of
    /// derived keys for the investigation benchmark. Its events count towards `events`.
    pub automation: Option<Automation>,
    /// Benign keys also do admin work (`--admin`): each principal (the role, for role
    /// sessions) has two admin duties of [`ADMIN_CALLS`] (SSM commands, Lambda code updates,
    /// task definitions, users created, policies attached, routes, snapshots, database
    /// changes, instances launched, ...), chosen from its name, and about 3 % of its calls
    /// are those duties, as operators' and pipelines' keys do their daily work. The base
    /// mix's rare writes that are admin calls too (`RunInstances`, `PutRolePolicy`) become
    /// the principal's duties. Off by default: the other benchmarks' data stays as it was.
    pub admin: bool,
    /// IAM users' keys have a life (`--key-lifecycle`): about one key in four is rotated once
    /// (the user creates a new key with the old one, makes the old one inactive the next day
    /// and deletes it a week later, then calls with the new one), and about a third of the
    /// second keys of users holding two are abandoned (never used again, left active) at
    /// least 120 days before the end. So the reports' key changes, rotations and unused keys
    /// have something to find. Off by default: the other benchmarks' data stays as it was.
    pub key_lifecycle: bool,
}

/// What happens to one of a user's keys over the span (see [`GenOptions::key_lifecycle`]).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fate {
    /// Used throughout.
    Kept,
    /// Replaced by `new`, created within the hour from `at` (10:00 UTC of a day drawn from the
    /// key's hash).
    Rotated { at: DateTime<Utc>, new: String },
    /// Not used from `at` on.
    Abandoned { at: DateTime<Utc> },
}

/// The fate of key `slot` of user `name` (of `account`) over `days` days from `start`.
fn fate(seed: u64, name: &str, slot: usize, account: u64, start: DateTime<Utc>, days: i64) -> Fate {
    let h = fnv(seed, &format!("{name}/{slot}"));
    let day = |lead: i64, tail: i64| {
        start
            + Duration::days(lead + ((h >> 8) % (days - lead - tail) as u64) as i64)
            + Duration::hours(10)
    };
    if slot == 1 && h.is_multiple_of(3) && days > 150 {
        Fate::Abandoned { at: day(30, 120) }
    } else if h % 4 == 1 && days > 60 {
        let new = key_id(&mut StdRng::seed_from_u64(h), "AKIA", account);
        Fate::Rotated {
            at: day(30, 30),
            new,
        }
    } else {
        Fate::Kept
    }
}

/// FNV-1a of `who`, seeded: stable across runs and platforms.
fn fnv(seed: u64, who: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in who.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Admin calls benign principals make as their duties when [`GenOptions::admin`] is on:
/// (source, name).
const ADMIN_CALLS: [(&str, &str); 12] = [
    ("ec2.amazonaws.com", "RunInstances"),
    ("iam.amazonaws.com", "PutRolePolicy"),
    ("ssm.amazonaws.com", "SendCommand"),
    ("lambda.amazonaws.com", "UpdateFunctionCode20150331v2"),
    ("ecs.amazonaws.com", "RegisterTaskDefinition"),
    ("iam.amazonaws.com", "CreateUser"),
    ("iam.amazonaws.com", "AttachRolePolicy"),
    ("ec2.amazonaws.com", "CreateRoute"),
    ("ec2.amazonaws.com", "CreateSnapshot"),
    ("rds.amazonaws.com", "ModifyDBInstance"),
    ("kms.amazonaws.com", "CreateKey"),
    ("s3.amazonaws.com", "PutBucketVersioning"),
];

/// The two admin duties (indices into [`ADMIN_CALLS`]) of principal `who`.
fn duties(seed: u64, who: &str) -> [usize; 2] {
    let h = fnv(seed, who);
    let n = ADMIN_CALLS.len() as u64;
    let a = (h % n) as usize;
    let b = (a + 1 + ((h / n) % (n - 1)) as usize) % ADMIN_CALLS.len();
    [a, b]
}

/// The request of an admin call.
fn admin_request(rng: &mut StdRng, name: &str, account: u64, region: &str) -> Value {
    let n = rng.random_range(0..20);
    match name {
        "SendCommand" => {
            json!({"documentName": "AWS-RunShellScript", "instanceIds": [format!("i-0{:016x}", n)], "parameters": "HIDDEN_DUE_TO_SECURITY_REASONS"})
        }
        "UpdateFunctionCode20150331v2" => {
            json!({"functionName": format!("arn:aws:lambda:{region}:{account}:function:function-{n}"), "publish": true})
        }
        "RegisterTaskDefinition" => {
            json!({"family": format!("service-{n}"), "containerDefinitions": [{"name": "app", "image": format!("{account}.dkr.ecr.{region}.amazonaws.com/app:{n}"), "command": ["/app/server", "--port", "8080"]}]})
        }
        "CreateUser" => json!({"userName": format!("contractor{n:03}")}),
        "AttachRolePolicy" => {
            json!({"roleName": format!("service-role-{n}"), "policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"})
        }
        "CreateRoute" => {
            json!({"routeTableId": format!("rtb-0{n:016x}"), "destinationCidrBlock": "0.0.0.0/0", "natGatewayId": format!("nat-0{n:016x}")})
        }
        "CreateSnapshot" => json!({"volumeId": format!("vol-0{n:016x}"), "description": "nightly"}),
        "ModifyDBInstance" => {
            json!({"dBInstanceIdentifier": format!("db-{n}"), "backupRetentionPeriod": 7, "applyImmediately": false})
        }
        "CreateKey" => {
            json!({"description": "app data", "keyUsage": "ENCRYPT_DECRYPT", "keySpec": "SYMMETRIC_DEFAULT"})
        }
        _ => {
            json!({"bucketName": format!("data-bucket-{n}"), "VersioningConfiguration": {"Status": "Enabled"}})
        }
    }
}

/// The automation user's schedule.
#[derive(Clone, Debug)]
pub struct Automation {
    /// A session starts this often.
    pub every_minutes: i64,
    /// Calls the automation key makes itself per session (besides its AssumeRole).
    pub direct_calls: u32,
    /// Calls each session's key makes.
    pub session_calls: u32,
    /// Every this many sessions, the session chains into a second role (0: never).
    pub chain_every: u32,
}

impl Default for Automation {
    fn default() -> Self {
        Automation {
            every_minutes: 30,
            direct_calls: 6,
            session_calls: 30,
            chain_every: 4,
        }
    }
}

impl Automation {
    fn sessions(&self, days: i64) -> u64 {
        (days.max(1) * 24 * 60 / self.every_minutes.max(1)) as u64
    }

    fn events_per_session(&self, s: u64) -> u64 {
        let chained = self.chain_every > 0 && s.is_multiple_of(u64::from(self.chain_every));
        u64::from(self.direct_calls)
            + 1
            + u64::from(self.session_calls)
            + if chained {
                1 + u64::from(self.session_calls)
            } else {
                0
            }
    }

    /// Every event the schedule makes over `days`.
    pub fn events(&self, days: i64) -> u64 {
        (0..self.sessions(days))
            .map(|s| self.events_per_session(s))
            .sum()
    }
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
            rotate_sessions: true,
            automation: Some(Automation::default()),
            admin: false,
            key_lifecycle: false,
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
    /// The automation user's long-term key (the root of the long chain), when there is one.
    pub automation_key: Option<String>,
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
    /// Each key's fate, when keys have a life (else empty).
    fates: Vec<Fate>,
    agent: usize,
    ip: String,
}

impl User {
    /// The `userIdentity` of the user calling with `key`.
    fn identity(&self, key: &str) -> Value {
        json!({"type": "IAMUser", "principalId": self.id, "arn": format!("arn:aws:iam::{}:user/{}", self.account, self.name), "accountId": self.account.to_string(), "accessKeyId": key, "userName": self.name})
    }

    /// The key of `slot` the user calls with at `t`.
    fn key_at(&self, slot: usize, t: DateTime<Utc>) -> &str {
        match self.fates.get(slot) {
            // After the creation call (within the hour from `at`).
            Some(Fate::Rotated { at, new }) if t >= *at + Duration::hours(1) => new,
            Some(Fate::Abandoned { at }) if t >= *at && slot > 0 => self.key_at(0, t),
            _ => &self.keys[slot],
        }
    }
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
    seed: u64,
    rotate: bool,
    admin: bool,
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

/// An address of EC2 in us-east-1 (52.20.0.0/14 in AWS's published ranges), for instances.
/// It draws exactly what [`ip`] draws, so choosing it changes no other generated value.
fn ec2_ip(rng: &mut StdRng) -> String {
    let a: i32 = rng.random_range(1..224);
    let b: i32 = rng.random_range(0..256);
    let c: i32 = rng.random_range(0..256);
    let _: i32 = rng.random_range(1..255);
    format!("52.{}.{b}.{c}", 20 + a % 4)
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
                let name = format!("user{i:04}");
                let fates = if o.key_lifecycle {
                    (0..n)
                        .map(|s| fate(o.seed, &name, s, account, o.start, o.days))
                        .collect()
                } else {
                    Vec::new()
                };
                User {
                    account,
                    name,
                    id: unique_id(rng, "AIDA"),
                    keys: (0..n).map(|_| key_id(rng, "AKIA", account)).collect(),
                    fates,
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
                    // An instance calls from inside AWS.
                    ip: if ec2 { ec2_ip(rng) } else { ip(rng) },
                    ec2,
                }
            })
            .collect();
        World {
            seed: o.seed,
            rotate: o.rotate_sessions,
            admin: o.admin,
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

/// The temporary key of role `role`'s session in hour `hour` (deterministic for a seed).
fn session_key(seed: u64, role: usize, hour: i64, account: u64) -> String {
    let mut r = StdRng::seed_from_u64(
        seed ^ ((role as u64) << 40) ^ (hour as u64).wrapping_mul(0x9E37_79B9),
    );
    key_id(&mut r, "ASIA", account)
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
        let key = u.key_at(rng.random_range(0..u.keys.len()), t);
        (
            u.identity(key),
            AGENTS[u.agent].to_owned(),
            if rng.random_bool(0.97) {
                u.ip.clone()
            } else {
                ip(rng)
            },
        )
    } else {
        let candidates: Vec<(usize, &Role)> = w
            .roles
            .iter()
            .enumerate()
            .filter(|(_, r)| r.account == account)
            .collect();
        let (ri, r) = candidates[rng.random_range(0..candidates.len())];
        let key = if w.rotate {
            session_key(w.seed, ri, t.timestamp().div_euclid(3600), r.account)
        } else {
            r.session_key.clone()
        };
        let mut ctx = json!({
            "sessionIssuer": {"type": "Role", "principalId": r.id, "arn": format!("arn:aws:iam::{}:role/{}", r.account, r.name), "accountId": r.account.to_string(), "userName": r.name},
            "webIdFederationData": {},
            "attributes": {"creationDate": (t - Duration::minutes(rng.random_range(1..55))).format("%Y-%m-%dT%H:%M:%SZ").to_string(), "mfaAuthenticated": "false"}
        });
        if r.ec2 {
            ctx["ec2RoleDelivery"] = json!("2.0");
        }
        (
            json!({"type": "AssumedRole", "principalId": format!("{}:{}", r.id, r.session_name), "arn": format!("arn:aws:sts::{}:assumed-role/{}/{}", r.account, r.name, r.session_name), "accountId": r.account.to_string(), "accessKeyId": key, "sessionContext": ctx}),
            AGENTS[r.agent].to_owned(),
            r.ip.clone(),
        )
    };
    let (mut req_params, mut resp, mut resources) = request(rng, req, account, region);
    let (mut source, mut name, mut read_only) = (source, name, read_only);
    // Admin work, by keys (not by AWS services): the principal's duties.
    if w.admin && identity.get("accessKeyId").is_some() {
        let base_admin = ADMIN_CALLS.iter().any(|(s, n)| *s == source && *n == name);
        if base_admin || rng.random_range(0..100) < 3 {
            let who = identity
                .pointer("/sessionContext/sessionIssuer/arn")
                .or(identity.get("arn"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let duty = duties(w.seed, who)[rng.random_range(0..2)];
            let (s, n) = ADMIN_CALLS[duty];
            (source, name, read_only) = (s, n, false);
            if let Some(c) = CALLS.iter().find(|c| c.0 == s && c.1 == n) {
                (req_params, resp, resources) = request(rng, c.4, account, region);
            } else {
                req_params = admin_request(rng, n, account, region);
                (resp, resources) = (Value::Null, None);
            }
        }
    }
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
    let automated = o
        .automation
        .as_ref()
        .map_or(0, |a| a.events(o.days))
        .min(o.events);
    let random = o.events - automated;
    let files = random.div_ceil(o.events_per_file.max(1)).max(1);
    let span = Duration::days(o.days.max(1));
    let mut g = Generated::default();
    let mut left = random;
    let regions: Vec<(&str, u32)> = REGIONS.to_vec();
    for f in 0..if random == 0 { 0 } else { files } {
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
        write_delivery_file(out, account, region, start, records, &mut rng, &mut g)?;
        if left == 0 {
            break;
        }
    }
    if let Some(a) = &o.automation
        && automated > 0
    {
        automation(out, o, &world, a, automated, &mut g)?;
    }
    if o.key_lifecycle {
        key_lifecycle(out, o, &world, &mut g)?;
    }
    Ok(g)
}

/// Write the calls that rotate users' keys (see [`GenOptions::key_lifecycle`]), each in its
/// own delivery file of the user's account's us-east-1 trail (IAM's region).
fn key_lifecycle(out: &Path, o: &GenOptions, w: &World, g: &mut Generated) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(o.seed ^ 0x6b65_795f_6c69_6665);
    let end = o.start + Duration::days(o.days);
    for u in &w.users {
        for (slot, f) in u.fates.iter().enumerate() {
            let Fate::Rotated { at, new } = f else {
                continue;
            };
            let old = &u.keys[slot];
            let created = at.format("%b %-d, %Y, %-I:%M:%S %p").to_string();
            let calls = [
                (
                    *at,
                    old.as_str(),
                    "CreateAccessKey",
                    json!({"userName": u.name}),
                    json!({"accessKey": {"accessKeyId": new, "status": "Active", "userName": u.name, "createDate": created}}),
                ),
                (
                    *at + Duration::days(1),
                    new.as_str(),
                    "UpdateAccessKey",
                    json!({"accessKeyId": old, "status": "Inactive", "userName": u.name}),
                    Value::Null,
                ),
                (
                    *at + Duration::days(8),
                    new.as_str(),
                    "DeleteAccessKey",
                    json!({"accessKeyId": old, "userName": u.name}),
                    Value::Null,
                ),
            ];
            for (t, key, name, request, response) in calls {
                if t >= end {
                    continue;
                }
                let t = t + Duration::seconds(rng.random_range(0..3600));
                let call = Call {
                    t,
                    identity: u.identity(key),
                    ip: &u.ip,
                    agent: AGENTS[u.agent],
                    source: "iam.amazonaws.com",
                    name,
                    region: "us-east-1",
                    request,
                    response,
                    error: None,
                };
                let e = record_in(&mut rng, u.account, call);
                write_delivery_file(out, u.account, "us-east-1", t, vec![e], &mut rng, g)?;
            }
        }
    }
    Ok(())
}

/// Write the automation user's sessions (see [`Automation`]), `budget` events at most, in
/// account 1's us-east-1 trail, one delivery file per six hours.
fn automation(
    out: &Path,
    o: &GenOptions,
    world: &World,
    a: &Automation,
    budget: u64,
    g: &mut Generated,
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(o.seed ^ 0xA070_0A70);
    let account = world.accounts[0];
    let region = "us-east-1";
    let key = key_id(&mut rng, "AKIA", account);
    g.automation_key = Some(key.clone());
    let user = json!({"type": "IAMUser", "principalId": unique_id(&mut rng, "AIDA"), "arn": format!("arn:aws:iam::{account}:user/ci-automation"), "accountId": account.to_string(), "accessKeyId": key, "userName": "ci-automation"});
    let runner_ip = ip(&mut rng);
    let agent = "aws-cli/2.15.30 Python/3.11.8 Linux/5.15.0-1057-aws exe/x86_64.ubuntu.22 prompt/off command/sts.assume-role";
    let role_session = |role: &str, name: &str, key: &str, issued: DateTime<Utc>| {
        json!({"type": "AssumedRole", "principalId": format!("AROA{}:{name}", role.to_ascii_uppercase().replace('-', "")), "arn": format!("arn:aws:sts::{account}:assumed-role/{role}/{name}"), "accountId": account.to_string(), "accessKeyId": key,
            "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": format!("AROA{}", role.to_ascii_uppercase().replace('-', "")), "arn": format!("arn:aws:iam::{account}:role/{role}"), "accountId": account.to_string(), "userName": role},
                "webIdFederationData": {}, "attributes": {"creationDate": issued.format("%Y-%m-%dT%H:%M:%SZ").to_string(), "mfaAuthenticated": "false"}}})
    };
    let call_event = |rng: &mut StdRng,
                      t: DateTime<Utc>,
                      identity: &Value,
                      source: &str,
                      name: &str,
                      ro: bool,
                      req: Value,
                      resp: Value,
                      resources: Option<Value>| {
        let mut e = json!({
            "eventVersion": "1.10", "userIdentity": identity,
            "eventTime": t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "eventSource": source, "eventName": name, "awsRegion": region,
            "sourceIPAddress": runner_ip, "userAgent": agent,
            "requestParameters": req, "responseElements": resp,
            "requestID": uuid(rng), "eventID": uuid(rng), "readOnly": ro,
            "eventType": "AwsApiCall", "managementEvent": true,
            "recipientAccountId": account.to_string(), "eventCategory": "Management",
        });
        if let Some(r) = resources {
            e["resources"] = r;
        }
        e
    };
    let assume = |rng: &mut StdRng,
                  t: DateTime<Utc>,
                  caller: &Value,
                  role: &str,
                  name: &str,
                  new_key: &str| {
        call_event(
            rng,
            t,
            caller,
            "sts.amazonaws.com",
            "AssumeRole",
            false,
            json!({"roleArn": format!("arn:aws:iam::{account}:role/{role}"), "roleSessionName": name, "durationSeconds": 3600}),
            json!({"credentials": {"accessKeyId": new_key, "sessionToken": "IQoJb3JpZ2luX2VjEHsaCXVzLWVhc3QtMSJHMEUCIQD3mJ8bX1lqZgq8pE3lN4h0u9VdGlTf7uMZ5rzqlJ5p6wIgV8sM1oVn0g3qzqG0gU2pL8dC1bqB9xM0fkVXz2Yh8KYqmAII", "expiration": (t + Duration::hours(1)).format("%b %-d, %Y, %-I:%M:%S %p").to_string()},
                "assumedRoleUser": {"assumedRoleId": format!("AROA{}:{name}", role.to_ascii_uppercase().replace('-', "")), "arn": format!("arn:aws:sts::{account}:assumed-role/{role}/{name}")}}),
            None,
        )
    };
    let weighted: Vec<(usize, u32)> = CALLS.iter().enumerate().map(|(i, c)| (i, c.3)).collect();
    let calls = |rng: &mut StdRng,
                 t0: DateTime<Utc>,
                 step: i64,
                 n: u32,
                 identity: &Value,
                 out: &mut Vec<Value>| {
        for j in 0..n {
            let (source, name, ro, _, req) =
                CALLS[pick_weighted(rng, &weighted, world.call_weights)];
            let (rq, rs, res) = request(rng, req, account, region);
            out.push(call_event(
                rng,
                t0 + Duration::seconds(step * i64::from(j)),
                identity,
                source,
                name,
                ro,
                rq,
                rs,
                res,
            ));
        }
    };
    let mut left = budget;
    let mut records: Vec<Value> = Vec::new();
    let mut block: Option<i64> = None;
    let block_of = |t: DateTime<Utc>| t.timestamp().div_euclid(6 * 3600);
    for s in 0..a.sessions(o.days) {
        let n = a.events_per_session(s);
        if n > left {
            break;
        }
        left -= n;
        let t = o.start + Duration::minutes(a.every_minutes * s as i64);
        if block.is_some_and(|b| b != block_of(t)) {
            write_block(
                out,
                account,
                region,
                std::mem::take(&mut records),
                &mut rng,
                g,
            )?;
        }
        block = Some(block_of(t));
        let mut ev = Vec::new();
        calls(&mut rng, t, 7, a.direct_calls, &user, &mut ev);
        let name = format!("ci-{s}");
        let k1 = key_id(&mut rng, "ASIA", account);
        ev.push(assume(
            &mut rng,
            t + Duration::seconds(60),
            &user,
            "deploy",
            &name,
            &k1,
        ));
        let deploy = role_session("deploy", &name, &k1, t + Duration::seconds(60));
        calls(
            &mut rng,
            t + Duration::seconds(90),
            20,
            a.session_calls,
            &deploy,
            &mut ev,
        );
        if a.chain_every > 0 && s.is_multiple_of(u64::from(a.chain_every)) {
            let k2 = key_id(&mut rng, "ASIA", account);
            let t2 = t + Duration::minutes(12);
            ev.push(assume(&mut rng, t2, &deploy, "deploy-target", &name, &k2));
            let target = role_session("deploy-target", &name, &k2, t2);
            calls(
                &mut rng,
                t2 + Duration::seconds(30),
                10,
                a.session_calls,
                &target,
                &mut ev,
            );
        }
        records.extend(ev);
    }
    if !records.is_empty() {
        write_block(out, account, region, records, &mut rng, g)?;
    }
    Ok(())
}

/// One delivery file of the automation's events (their first event's time names it).
fn write_block(
    out: &Path,
    account: u64,
    region: &str,
    records: Vec<Value>,
    rng: &mut StdRng,
    g: &mut Generated,
) -> anyhow::Result<()> {
    let Some(first) = records
        .first()
        .and_then(|e| e["eventTime"].as_str())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
    else {
        return Ok(());
    };
    write_delivery_file(
        out,
        account,
        region,
        first.with_timezone(&Utc),
        records,
        rng,
        g,
    )
}

/// One delivery file (`{"Records": [...]}`, gzipped) in the S3 layout, named for `start`.
fn write_delivery_file(
    out: &Path,
    account: u64,
    region: &str,
    start: DateTime<Utc>,
    records: Vec<Value>,
    rng: &mut StdRng,
    g: &mut Generated,
) -> anyhow::Result<()> {
    let n = records.len() as u64;
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
    Ok(())
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
            automation: None,
            ..GenOptions::default()
        };
        let ga = generate(&a, &o).expect("gen a");
        let gb = generate(&b, &o).expect("gen b");
        assert_eq!((ga.files, ga.events), (5, 500));
        assert_eq!(ga.json_bytes, gb.json_bytes);
        let _ = fs::remove_dir_all(&a);
        let _ = fs::remove_dir_all(&b);
    }

    #[test]
    fn the_automation_chain_counts_towards_the_events() {
        let dir = tempfile_dir("auto");
        let a = Automation::default();
        let o = GenOptions {
            events: 40_000,
            events_per_file: 1000,
            days: 2,
            ..GenOptions::default()
        };
        // 96 sessions: 6 direct calls, the AssumeRole and 30 calls each; every fourth session
        // chains (24 times): another AssumeRole and 30 calls.
        assert_eq!(a.events(2), 96 * 37 + 24 * 31);
        let g = generate(&dir, &o).expect("gen");
        assert_eq!(g.events, 40_000);
        let key = g.automation_key.expect("automation key");
        assert!(key.starts_with("AKIA"));
        let _ = fs::remove_dir_all(&dir);
    }

    /// Every record of the delivery files under `dir`.
    fn records(dir: &Path) -> Vec<Value> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).expect("dir") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let mut text = String::new();
                use std::io::Read as _;
                flate2::read::GzDecoder::new(fs::File::open(&p).expect("open"))
                    .read_to_string(&mut text)
                    .expect("gunzip");
                let mut v: Value = serde_json::from_str(&text).expect("json");
                if let Value::Array(rs) = v["Records"].take() {
                    out.extend(rs);
                }
            }
        }
        out
    }

    #[test]
    fn with_key_lifecycle_keys_are_rotated_and_abandoned() {
        let dir = tempfile_dir("lifecycle");
        let o = GenOptions {
            events: 60_000,
            events_per_file: 1000,
            days: 200,
            automation: None,
            key_lifecycle: true,
            ..GenOptions::default()
        };
        let g = generate(&dir, &o).expect("gen");
        let rs = records(&dir);
        assert_eq!(rs.len() as u64, g.events);
        let text = |r: &Value, p: &str| {
            r.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let time = |r: &Value| {
            DateTime::parse_from_rfc3339(&text(r, "/eventTime"))
                .expect("time")
                .with_timezone(&Utc)
        };
        // The last use of each key, and each key's changes.
        let mut last: std::collections::HashMap<String, DateTime<Utc>> = Default::default();
        let mut changes: Vec<(String, String, String)> = Vec::new();
        for r in &rs {
            let key = text(r, "/userIdentity/accessKeyId");
            let t = time(r);
            let e = last.entry(key.clone()).or_insert(t);
            *e = (*e).max(t);
            let name = text(r, "/eventName");
            if name.ends_with("AccessKey") {
                let target = match name.as_str() {
                    "CreateAccessKey" => text(r, "/responseElements/accessKey/accessKeyId"),
                    _ => text(r, "/requestParameters/accessKeyId"),
                };
                changes.push((name, key, target));
            }
        }
        let world = World::new(&mut StdRng::seed_from_u64(o.seed), &o);
        let (mut rotated, mut abandoned) = (0, 0);
        for u in &world.users {
            for (slot, f) in u.fates.iter().enumerate() {
                let old = &u.keys[slot];
                match f {
                    Fate::Kept => {}
                    Fate::Rotated { at, new } => {
                        rotated += 1;
                        // Created with the old key; the old key made inactive and deleted
                        // with the new one; the old key unused after the rotation hour.
                        for call in ["CreateAccessKey", "UpdateAccessKey", "DeleteAccessKey"] {
                            let want = if call == "CreateAccessKey" {
                                (call.to_owned(), old.clone(), new.clone())
                            } else {
                                (call.to_owned(), new.clone(), old.clone())
                            };
                            assert!(changes.contains(&want), "{want:?}");
                        }
                        assert!(last[old.as_str()] < *at + Duration::hours(1), "{old}");
                        assert!(last[new.as_str()] > *at + Duration::days(1), "{new}");
                    }
                    Fate::Abandoned { at } => {
                        abandoned += 1;
                        assert_eq!(slot, 1);
                        assert!(last.get(old).is_none_or(|l| l < at), "{old}");
                        assert!(*at < o.start + Duration::days(o.days - 120));
                    }
                }
            }
        }
        assert_eq!(changes.len(), rotated * 3);
        // About a quarter of the keys rotated, a few abandoned.
        let keys: usize = world.users.iter().map(|u| u.keys.len()).sum();
        assert!(
            rotated * 6 > keys && rotated * 3 < keys,
            "{rotated} of {keys}"
        );
        assert!(
            abandoned > 0 && abandoned * 10 < keys,
            "{abandoned} of {keys}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn with_admin_each_principal_does_its_own_two_duties() {
        let dir = tempfile_dir("admin");
        let o = GenOptions {
            events: 20_000,
            events_per_file: 1000,
            days: 3,
            automation: None,
            admin: true,
            ..GenOptions::default()
        };
        generate(&dir, &o).expect("gen");
        let mut duties_seen: std::collections::BTreeMap<String, std::collections::BTreeSet<&str>> =
            std::collections::BTreeMap::new();
        let (mut keyed, mut admin) = (0usize, 0usize);
        for r in &records(&dir) {
            let id = &r["userIdentity"];
            if id.get("accessKeyId").is_none() {
                continue;
            }
            keyed += 1;
            let name = r["eventName"].as_str().unwrap_or_default();
            let Some((_, n)) = ADMIN_CALLS.iter().find(|(_, n)| *n == name) else {
                continue;
            };
            admin += 1;
            let who = id
                .pointer("/sessionContext/sessionIssuer/arn")
                .or(id.get("arn"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            duties_seen.entry(who).or_default().insert(n);
        }
        // About 3 % of keyed calls, plus the base mix's rare writes turned into duties.
        assert!(
            admin * 100 > keyed * 3 && admin * 100 < keyed * 5,
            "{admin} of {keyed}"
        );
        assert!(duties_seen.len() > 20, "{}", duties_seen.len());
        for (who, seen) in &duties_seen {
            let mine: Vec<&str> = duties(o.seed, who)
                .iter()
                .map(|i| ADMIN_CALLS[*i].1)
                .collect();
            assert_ne!(mine[0], mine[1], "{who}");
            assert!(
                seen.iter().all(|n| mine.contains(n)),
                "{who}: {seen:?} not in {mine:?}"
            );
        }
        let _ = fs::remove_dir_all(&dir);
    }

    fn tempfile_dir(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("keytrail-gen-test-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }
}

/// The keys of the bundled sample's incident, decoded to account 111111111111.
#[derive(Clone, Debug)]
pub struct SampleKeys {
    /// `ci-deploy`'s long-term key: used by Terraform all week, then leaked.
    pub leaked: String,
    /// A second long-term key the attacker creates for a new user `backup-admin`.
    pub backdoor: String,
    /// Temporary keys the attacker mints: GetSessionToken, then AssumeRole from the backdoor.
    pub session: String,
    pub assumed: String,
    /// A federation token minted from the leaked key.
    pub federation: String,
    /// A well-behaved key for contrast.
    pub steady: String,
}

const SAMPLE_ACCOUNT: u64 = 111_111_111_111;

fn sample_keys() -> SampleKeys {
    let mut rng = StdRng::seed_from_u64(20_241_130);
    SampleKeys {
        leaked: key_id(&mut rng, "AKIA", SAMPLE_ACCOUNT),
        backdoor: key_id(&mut rng, "AKIA", SAMPLE_ACCOUNT),
        session: key_id(&mut rng, "ASIA", SAMPLE_ACCOUNT),
        assumed: key_id(&mut rng, "ASIA", SAMPLE_ACCOUNT),
        federation: key_id(&mut rng, "ASIA", SAMPLE_ACCOUNT),
        steady: key_id(&mut rng, "AKIA", SAMPLE_ACCOUNT),
    }
}

struct Call<'a> {
    t: DateTime<Utc>,
    identity: Value,
    ip: &'a str,
    agent: &'a str,
    source: &'a str,
    name: &'a str,
    region: &'a str,
    request: Value,
    response: Value,
    error: Option<(&'a str, &'a str)>,
}

/// A call of the bundled sample (account [`SAMPLE_ACCOUNT`]) as CloudTrail records it.
fn record(rng: &mut StdRng, c: Call<'_>) -> Value {
    record_in(rng, SAMPLE_ACCOUNT, c)
}

/// A call in `account` as CloudTrail records it.
fn record_in(rng: &mut StdRng, account: u64, c: Call<'_>) -> Value {
    let mut e = json!({
        "eventVersion": "1.10",
        "userIdentity": c.identity,
        "eventTime": c.t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "eventSource": c.source,
        "eventName": c.name,
        "awsRegion": c.region,
        "sourceIPAddress": c.ip,
        "userAgent": c.agent,
        "requestParameters": c.request,
        "responseElements": c.response,
        "requestID": uuid(rng),
        "eventID": uuid(rng),
        "readOnly": c.name.starts_with("Get") || c.name.starts_with("List") || c.name.starts_with("Describe"),
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": account.to_string(),
        "eventCategory": "Management",
        "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256", "clientProvidedHostHeader": format!("{}.amazonaws.com", c.source.split('.').next().unwrap_or("sts"))},
    });
    if let Some((code, msg)) = c.error {
        e["errorCode"] = json!(code);
        e["errorMessage"] = json!(msg);
        e["responseElements"] = Value::Null;
    }
    e
}

fn user_identity(name: &str, key: &str) -> Value {
    json!({"type": "IAMUser", "principalId": format!("AIDA{}", name.to_ascii_uppercase().replace('-', "")), "arn": format!("arn:aws:iam::{SAMPLE_ACCOUNT}:user/{name}"), "accountId": SAMPLE_ACCOUNT.to_string(), "accessKeyId": key, "userName": name})
}

fn write_delivery(
    out: &Path,
    region: &str,
    t: DateTime<Utc>,
    tag: &str,
    records: Vec<Value>,
    g: &mut Generated,
) -> anyhow::Result<()> {
    let dir = out.join(format!(
        "AWSLogs/{SAMPLE_ACCOUNT}/CloudTrail/{region}/{}",
        t.format("%Y/%m/%d")
    ));
    fs::create_dir_all(&dir)?;
    let n = records.len() as u64;
    let doc = serde_json::to_vec(&json!({"Records": records}))?;
    let gz = gzip(&doc)?;
    fs::write(
        dir.join(format!(
            "{SAMPLE_ACCOUNT}_CloudTrail_{region}_{}_{tag}.json.gz",
            t.format("%Y%m%dT%H%MZ")
        )),
        &gz,
    )?;
    g.files += 1;
    g.events += n;
    g.json_bytes += doc.len() as u64;
    g.gz_bytes += gz.len() as u64;
    Ok(())
}

/// The sample bundled in `testdata/sample/`: a week of ordinary activity in account
/// 111111111111, and one night (2024-11-30, 03:12 UTC) when `ci-deploy`'s key leaks and is
/// used to look around, create a backdoor user and key, mint temporary credentials, start
/// large instances, stop the trail and open a bucket. Also a digest file and an Insights file,
/// as a real trail bucket holds them. Deterministic.
pub fn generate_sample(out: &Path) -> anyhow::Result<(Generated, SampleKeys)> {
    let o = GenOptions {
        events: 1200,
        events_per_file: 60,
        accounts: 1,
        users: 8,
        roles: 3,
        seed: 7,
        start: Utc
            .with_ymd_and_hms(2024, 11, 24, 0, 0, 0)
            .single()
            .unwrap_or_default(),
        days: 7,
        // The bundled sample predates key rotation and the automation chain: keep it as it is.
        rotate_sessions: false,
        automation: None,
        admin: false,
        key_lifecycle: false,
    };
    let mut g = generate(out, &o)?;
    let keys = sample_keys();
    let mut rng = StdRng::seed_from_u64(99);
    let at = |d: u32, h: u32, m: u32, s: u32| {
        Utc.with_ymd_and_hms(2024, 11, d, h, m, s)
            .single()
            .expect("a valid sample time")
    };
    let terraform = AGENTS[4];
    let home = "203.0.113.10";

    // A week of Terraform runs with the key that will leak, and a steady reporting job.
    for day in 24..30 {
        let mut recs = Vec::new();
        for (i, name) in [
            "GetCallerIdentity",
            "DescribeInstances",
            "DescribeSecurityGroups",
            "ListBuckets",
        ]
        .iter()
        .enumerate()
        {
            let source = match *name {
                "GetCallerIdentity" => "sts.amazonaws.com",
                "ListBuckets" => "s3.amazonaws.com",
                _ => "ec2.amazonaws.com",
            };
            recs.push(record(
                &mut rng,
                Call {
                    t: at(day, 14, 2, i as u32 * 7),
                    identity: user_identity("ci-deploy", &keys.leaked),
                    ip: home,
                    agent: terraform,
                    source,
                    name,
                    region: "us-east-1",
                    request: Value::Null,
                    response: Value::Null,
                    error: None,
                },
            ));
        }
        for i in 0..3 {
            recs.push(record(
                &mut rng,
                Call {
                    t: at(day, 6, 0, i * 20),
                    identity: user_identity("reporting", &keys.steady),
                    ip: "198.18.0.25",
                    agent: AGENTS[2],
                    source: "monitoring.amazonaws.com",
                    name: "GetMetricData",
                    region: "eu-west-1",
                    request: json!({"startTime": "x"}),
                    response: Value::Null,
                    error: None,
                },
            ));
        }
        write_delivery(
            out,
            "us-east-1",
            at(day, 14, 5, 0),
            "TFRUNSAMPLE00000",
            recs,
            &mut g,
        )?;
    }

    // The night of 2024-11-30, from an address the key never used.
    let evil = "198.51.100.77";
    let kali = "aws-cli/2.15.30 Python/3.11.8 Linux/6.6.9-amd64 exe/x86_64.kali.2024 prompt/off command/sts.get-caller-identity";
    let py = "python-requests/2.31.0";
    let leaked = |name: &str| user_identity("ci-deploy", name);
    let mut first = Vec::new();
    let call = |rng: &mut StdRng, t, identity, agent, source, name, request, response, error| {
        record(
            rng,
            Call {
                t,
                identity,
                ip: evil,
                agent,
                source,
                name,
                region: "us-east-1",
                request,
                response,
                error,
            },
        )
    };
    first.push(call(
        &mut rng,
        at(30, 3, 12, 5),
        leaked(&keys.leaked),
        kali,
        "sts.amazonaws.com",
        "GetCallerIdentity",
        Value::Null,
        Value::Null,
        None,
    ));
    for (i, (source, name)) in [
        ("iam.amazonaws.com", "ListUsers"),
        ("iam.amazonaws.com", "ListRoles"),
        ("s3.amazonaws.com", "ListBuckets"),
        ("ec2.amazonaws.com", "DescribeInstances"),
        ("ec2.amazonaws.com", "DescribeRegions"),
        ("iam.amazonaws.com", "ListAttachedUserPolicies"),
        ("guardduty.amazonaws.com", "ListDetectors"),
        ("cloudtrail.amazonaws.com", "DescribeTrails"),
    ]
    .into_iter()
    .enumerate()
    {
        first.push(call(
            &mut rng,
            at(30, 3, 12, 20 + i as u32 * 3),
            leaked(&keys.leaked),
            py,
            source,
            name,
            Value::Null,
            Value::Null,
            None,
        ));
    }
    for i in 0..16 {
        first.push(call(&mut rng, at(30, 3, 14, 0) + Duration::seconds(i64::from(i) * 4), leaked(&keys.leaked), py, "iam.amazonaws.com", "GetAccountAuthorizationDetails", Value::Null, Value::Null, Some(("AccessDenied", "User: arn:aws:iam::111111111111:user/ci-deploy is not authorized to perform: iam:GetAccountAuthorizationDetails"))));
    }
    first.push(call(&mut rng, at(30, 3, 16, 2), leaked(&keys.leaked), py, "iam.amazonaws.com", "CreateUser", json!({"userName": "backup-admin"}), json!({"user": {"path": "/", "userName": "backup-admin", "userId": "AIDABACKUPADMIN00001", "arn": format!("arn:aws:iam::{SAMPLE_ACCOUNT}:user/backup-admin"), "createDate": "Nov 30, 2024, 3:16:02 AM"}}), None));
    first.push(call(&mut rng, at(30, 3, 16, 9), leaked(&keys.leaked), py, "iam.amazonaws.com", "AttachUserPolicy", json!({"userName": "backup-admin", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}), Value::Null, None));
    first.push(call(&mut rng, at(30, 3, 16, 15), leaked(&keys.leaked), py, "iam.amazonaws.com", "CreateAccessKey", json!({"userName": "backup-admin"}), json!({"accessKey": {"accessKeyId": keys.backdoor, "status": "Active", "userName": "backup-admin", "createDate": "Nov 30, 2024, 3:16:15 AM"}}), None));
    first.push(call(&mut rng, at(30, 3, 17, 0), leaked(&keys.leaked), py, "sts.amazonaws.com", "GetSessionToken", json!({"durationSeconds": 129600}), json!({"credentials": {"accessKeyId": keys.session, "sessionToken": "IQoJb3JpZ2luX2VjEHsaCXVzLWVhc3QtMSJHMEUCIQD3mJ8bX1lqZgq8pE3lN4h0u9VdGlTf7uMZ5rzqlJ5p6wIgV8sM1oVn0g3qzqG0gU2pL8dC1bqB9xM0fkVXz2Yh8KYqmAII", "expiration": "Dec 1, 2024, 3:17:00 PM"}}), None));
    first.push(call(&mut rng, at(30, 3, 17, 30), leaked(&keys.leaked), py, "sts.amazonaws.com", "GetFederationToken", json!({"name": "svc", "policy": "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\"}]}"}), json!({"credentials": {"accessKeyId": keys.federation, "sessionToken": "IQoJb3JpZ2luX2VjEHsaCXVzLWVhc3QtMSJHMEUCIQD3mJ8bX1lqZgq8pE3lN4h0u9VdGlTf7uMZ5rzqlJ5p6wIgV8sM1oVn0g3qzqG0gU2pL8dC1bqB9xM0fkVXz2Yh8KYqmAII", "expiration": "Nov 30, 2024, 3:17:30 PM"}, "federatedUser": {"arn": format!("arn:aws:sts::{SAMPLE_ACCOUNT}:federated-user/svc"), "federatedUserId": format!("{SAMPLE_ACCOUNT}:svc")}}), None));
    // The security team reacts at 03:40: the leaked key is made inactive.
    first.push(record(&mut rng, Call { t: at(30, 3, 40, 0), identity: json!({"type": "AssumedRole", "principalId": "AROASECOPS0000000001:responder", "arn": format!("arn:aws:sts::{SAMPLE_ACCOUNT}:assumed-role/SecOps/responder"), "accountId": SAMPLE_ACCOUNT.to_string(), "accessKeyId": "ASIASECOPSRESPONDER1", "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": "AROASECOPS0000000001", "arn": format!("arn:aws:iam::{SAMPLE_ACCOUNT}:role/SecOps"), "accountId": SAMPLE_ACCOUNT.to_string(), "userName": "SecOps"}, "attributes": {"creationDate": "2024-11-30T03:35:00Z", "mfaAuthenticated": "true"}}}), ip: "192.0.2.44", agent: AGENTS[5], source: "iam.amazonaws.com", name: "UpdateAccessKey", region: "us-east-1", request: json!({"accessKeyId": keys.leaked, "status": "Inactive", "userName": "ci-deploy"}), response: Value::Null, error: None }));
    write_delivery(
        out,
        "us-east-1",
        at(30, 3, 20, 0),
        "INCIDENTPART0001",
        first,
        &mut g,
    )?;

    // Calls made with the minted keys. This file is delivered before the one above in name
    // order, as CloudTrail's time-sliced delivery can do: a reader must not rely on order.
    let mut second = Vec::new();
    let temp = |key: &str| json!({"type": "IAMUser", "principalId": "AIDACIDEPLOY", "arn": format!("arn:aws:iam::{SAMPLE_ACCOUNT}:user/ci-deploy"), "accountId": SAMPLE_ACCOUNT.to_string(), "accessKeyId": key, "userName": "ci-deploy", "sessionContext": {"attributes": {"creationDate": "2024-11-30T03:17:00Z", "mfaAuthenticated": "false"}}});
    second.push(record(&mut rng, Call { t: at(30, 3, 18, 10), identity: temp(&keys.session), ip: evil, agent: py, source: "ec2.amazonaws.com", name: "RunInstances", region: "us-east-1", request: json!({"instancesSet": {"items": [{"imageId": "ami-0c101f26f147fa7fd", "minCount": 10, "maxCount": 10}]}, "instanceType": "p4d.24xlarge", "userData": "<sensitiveDataRemoved>"}), response: json!({"instancesSet": {"items": [{"instanceId": "i-0a1b2c3d4e5f60001", "instanceType": "p4d.24xlarge"}]}}), error: None }));
    second.push(record(&mut rng, Call { t: at(30, 3, 18, 40), identity: temp(&keys.session), ip: evil, agent: py, source: "ec2.amazonaws.com", name: "AuthorizeSecurityGroupIngress", region: "us-east-1", request: json!({"groupId": "sg-0123456789abcdef0", "ipPermissions": {"items": [{"ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]}}]}}), response: json!({"_return": true}), error: None }));
    second.push(record(&mut rng, Call { t: at(30, 3, 19, 5), identity: temp(&keys.session), ip: evil, agent: py, source: "cloudtrail.amazonaws.com", name: "StopLogging", region: "us-east-1", request: json!({"name": format!("arn:aws:cloudtrail:us-east-1:{SAMPLE_ACCOUNT}:trail/org-trail")}), response: Value::Null, error: None }));
    second.push(record(&mut rng, Call { t: at(30, 3, 21, 0), identity: user_identity("backup-admin", &keys.backdoor), ip: evil, agent: py, source: "sts.amazonaws.com", name: "AssumeRole", region: "us-east-1", request: json!({"roleArn": format!("arn:aws:iam::{SAMPLE_ACCOUNT}:role/DataPipeline"), "roleSessionName": "maint"}), response: json!({"credentials": {"accessKeyId": keys.assumed, "sessionToken": "IQoJb3JpZ2luX2VjEHsaCXVzLWVhc3QtMSJHMEUCIQD3mJ8bX1lqZgq8pE3lN4h0u9VdGlTf7uMZ5rzqlJ5p6wIgV8sM1oVn0g3qzqG0gU2pL8dC1bqB9xM0fkVXz2Yh8KYqmAII", "expiration": "Nov 30, 2024, 4:21:00 AM"}, "assumedRoleUser": {"assumedRoleId": "AROADATAPIPELINE0001:maint", "arn": format!("arn:aws:sts::{SAMPLE_ACCOUNT}:assumed-role/DataPipeline/maint")}}), error: None }));
    let role = json!({"type": "AssumedRole", "principalId": "AROADATAPIPELINE0001:maint", "arn": format!("arn:aws:sts::{SAMPLE_ACCOUNT}:assumed-role/DataPipeline/maint"), "accountId": SAMPLE_ACCOUNT.to_string(), "accessKeyId": keys.assumed, "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": "AROADATAPIPELINE0001", "arn": format!("arn:aws:iam::{SAMPLE_ACCOUNT}:role/DataPipeline"), "accountId": SAMPLE_ACCOUNT.to_string(), "userName": "DataPipeline"}, "attributes": {"creationDate": "2024-11-30T03:21:00Z", "mfaAuthenticated": "false"}}});
    second.push(record(&mut rng, Call { t: at(30, 3, 22, 30), identity: role.clone(), ip: evil, agent: py, source: "s3.amazonaws.com", name: "PutBucketPolicy", region: "us-east-1", request: json!({"bucketName": "customer-exports", "bucketPolicy": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::customer-exports/*"}]}}), response: Value::Null, error: None }));
    // The federation token keeps working after the parent key was deactivated at 03:40.
    second.push(record(&mut rng, Call { t: at(30, 4, 2, 0), identity: json!({"type": "FederatedUser", "principalId": format!("{SAMPLE_ACCOUNT}:svc"), "arn": format!("arn:aws:sts::{SAMPLE_ACCOUNT}:federated-user/svc"), "accountId": SAMPLE_ACCOUNT.to_string(), "accessKeyId": keys.federation, "sessionContext": {"sessionIssuer": {"type": "IAMUser", "principalId": "AIDACIDEPLOY", "arn": format!("arn:aws:iam::{SAMPLE_ACCOUNT}:user/ci-deploy"), "accountId": SAMPLE_ACCOUNT.to_string(), "userName": "ci-deploy"}, "attributes": {"creationDate": "2024-11-30T03:17:30Z", "mfaAuthenticated": "false"}}}), ip: evil, agent: py, source: "s3.amazonaws.com", name: "ListBuckets", region: "us-east-1", request: Value::Null, response: Value::Null, error: None }));
    write_delivery(
        out,
        "us-east-1",
        at(30, 3, 15, 0),
        "INCIDENTPART0002",
        second,
        &mut g,
    )?;

    // What else a trail bucket holds: a digest file and an Insights event.
    let digest_dir = out.join(format!(
        "AWSLogs/{SAMPLE_ACCOUNT}/CloudTrail-Digest/us-east-1/2024/11/30"
    ));
    fs::create_dir_all(&digest_dir)?;
    let digest = json!({"awsAccountId": SAMPLE_ACCOUNT.to_string(), "digestStartTime": "2024-11-30T02:00:00Z", "digestEndTime": "2024-11-30T03:00:00Z", "digestS3Bucket": "trail-bucket", "digestS3Object": "x", "digestPublicKeyFingerprint": "0123456789abcdef", "digestSignatureAlgorithm": "SHA256withRSA", "newestEventTime": "2024-11-30T02:59:59Z", "oldestEventTime": "2024-11-30T02:00:01Z", "previousDigestS3Bucket": "trail-bucket", "previousDigestHashValue": "00", "previousDigestHashAlgorithm": "SHA-256", "previousDigestSignature": "00", "logFiles": []});
    fs::write(digest_dir.join(format!("{SAMPLE_ACCOUNT}_CloudTrail-Digest_us-east-1_org-trail_us-east-1_20241130T030000Z.json.gz")), gzip(&serde_json::to_vec(&digest)?)?)?;
    let insight_dir = out.join(format!(
        "AWSLogs/{SAMPLE_ACCOUNT}/CloudTrail-Insight/us-east-1/2024/11/30"
    ));
    fs::create_dir_all(&insight_dir)?;
    let insight = json!({"Records": [{"eventVersion": "1.08", "eventTime": "2024-11-30T03:15:00Z", "awsRegion": "us-east-1", "eventID": uuid(&mut rng), "eventType": "AwsCloudTrailInsight", "recipientAccountId": SAMPLE_ACCOUNT.to_string(), "sharedEventID": uuid(&mut rng), "insightDetails": {"state": "Start", "eventSource": "iam.amazonaws.com", "eventName": "GetAccountAuthorizationDetails", "insightType": "ApiErrorRateInsight", "insightContext": {"statistics": {"baseline": {"average": 0.0}, "insight": {"average": 16.0}}}}, "eventCategory": "Insight"}]});
    fs::write(
        insight_dir.join(format!(
            "{SAMPLE_ACCOUNT}_CloudTrail-Insight_us-east-1_20241130T0315Z_INSIGHT00000001.json.gz"
        )),
        gzip(&serde_json::to_vec(&insight)?)?,
    )?;
    Ok((g, keys))
}

/// Every event of the delivery files under `dir` (gzipped `{"Records": [...]}`)
/// as one JSON-lines file `out`, gzipped with `gzip`: the same events as one large object.
/// Returns the events and the bytes of JSON written.
pub fn to_json_lines(dir: &Path, out: &Path, gzip: bool) -> anyhow::Result<(u64, u64)> {
    use std::io::{BufWriter, Read};
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".json.gz") {
                files.push(p);
            }
        }
    }
    // In delivery-time order (the fourth `_` field of CloudTrail's names), as an export of a
    // SIEM or of `lookup-events` holds events in time order rather than account by account.
    files.sort_by_cached_key(|p| {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (name.split('_').nth(3).unwrap_or("").to_owned(), name)
    });
    let file = BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    let mut w: Box<dyn Write> = if gzip {
        Box::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::fast(),
        ))
    } else {
        Box::new(file)
    };
    let (mut events, mut bytes) = (0u64, 0u64);
    let mut text = Vec::new();
    for f in files {
        text.clear();
        flate2::read::MultiGzDecoder::new(std::fs::File::open(&f)?).read_to_end(&mut text)?;
        let doc: Value = serde_json::from_slice(&text)?;
        for r in doc["Records"].as_array().into_iter().flatten() {
            let line = serde_json::to_vec(r)?;
            w.write_all(&line)?;
            w.write_all(b"\n")?;
            events += 1;
            bytes += line.len() as u64 + 1;
        }
    }
    w.flush()?;
    drop(w);
    Ok((events, bytes))
}
