//! What a CloudTrail event means, decided once.
//!
//! Every derived CloudTrail concept keytrail answers with — was the call denied, which account
//! made it and which account it touched, which access key an IAM call acts on and the key's
//! new status, which credential a call minted (and until when), which user, role or policy it
//! names, whether an AWS service made it, what kind of address it came from — is computed by
//! exactly one function of this module. Ingest stores the results as the lake's fact columns
//! (schema version 2, `docs/schema.md`); `keytrail lake upgrade` computes them for lakes written
//! before; investigation, detections and reports read the columns and never re-derive them.
//!
//! The functions take an [`EventView`]: the handful of members they need, borrowed, so they
//! work the same on a freshly decoded record and on a row read back from the lake.

use std::net::IpAddr;

use crate::key::{AccountDecode, decode_account};
use crate::time::{Millis, parse_cloudtrail_time};

/// The members of an event the facts are derived from. JSON members are the JSON text the lake
/// stores (`requestParameters`, `responseElements`).
#[derive(Clone, Copy, Debug, Default)]
pub struct EventView<'a> {
    pub event_source: Option<&'a str>,
    pub event_name: Option<&'a str>,
    pub error_code: Option<&'a str>,
    pub request_parameters: Option<&'a str>,
    pub response_elements: Option<&'a str>,
    pub identity_type: Option<&'a str>,
    pub identity_account: Option<&'a str>,
    pub identity_arn: Option<&'a str>,
    pub invoked_by: Option<&'a str>,
    /// `userIdentity.sessionContext.sessionIssuer.arn`.
    pub issuer_arn: Option<&'a str>,
    /// `userIdentity.accessKeyId` (empty counts as none).
    pub access_key_id: Option<&'a str>,
    pub recipient_account: Option<&'a str>,
    pub source_ip: Option<&'a str>,
}

impl<'a> EventView<'a> {
    /// The members of a decoded record.
    pub fn of_event(e: &'a crate::event::Event<'_>) -> EventView<'a> {
        let ui = e.user_identity.as_ref();
        EventView {
            event_source: e.event_source.as_deref(),
            event_name: e.event_name.as_deref(),
            error_code: e.error_code.as_deref(),
            request_parameters: e.request_parameters.as_deref(),
            response_elements: e.response_elements.as_deref(),
            identity_type: ui.and_then(|u| u.r#type.as_deref()),
            identity_account: ui.and_then(|u| u.account_id.as_deref()),
            identity_arn: ui.and_then(|u| u.arn.as_deref()),
            invoked_by: ui.and_then(|u| u.invoked_by.as_deref()),
            issuer_arn: ui
                .and_then(|u| u.session_context.as_ref())
                .and_then(|c| c.session_issuer.as_ref())
                .and_then(|i| i.arn.as_deref()),
            access_key_id: e.access_key_id(),
            recipient_account: e.recipient_account_id.as_deref(),
            source_ip: e.source_ip_address.as_deref(),
        }
    }
}

/// A key's status after a successful IAM call on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyStatus {
    Active,
    Inactive,
    /// `DeleteAccessKey`: the key is gone, which deactivates it for good.
    Deleted,
}

impl KeyStatus {
    pub const ALL: [KeyStatus; 3] = [KeyStatus::Active, KeyStatus::Inactive, KeyStatus::Deleted];

    /// The text stored in the lake's `keystatus` column.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "Active",
            KeyStatus::Inactive => "Inactive",
            KeyStatus::Deleted => "Deleted",
        }
    }

    /// Read the stored text (any case).
    pub fn parse(s: &str) -> Option<KeyStatus> {
        KeyStatus::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// Whether the key can no longer sign calls after this.
    pub fn is_deactivation(self) -> bool {
        matches!(self, KeyStatus::Inactive | KeyStatus::Deleted)
    }
}

impl std::fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of place `sourceIPAddress` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceClass {
    /// A service name instead of an address (`ec2.amazonaws.com`, `AWS Internal`): an AWS
    /// service made the call.
    AwsService,
    /// A private, loopback, link-local or carrier-grade NAT address (a VPC, an endpoint).
    Private,
    /// Any other valid IP address. Whether it belongs to AWS is a question of AWS's published
    /// address ranges, answered at query time.
    Public,
    /// Neither an address nor a service name (anonymised or damaged logs).
    Other,
}

impl SourceClass {
    pub const ALL: [SourceClass; 4] = [
        SourceClass::AwsService,
        SourceClass::Private,
        SourceClass::Public,
        SourceClass::Other,
    ];

    /// The text stored in the lake's `sourceclass` column.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceClass::AwsService => "aws-service",
            SourceClass::Private => "private",
            SourceClass::Public => "public",
            SourceClass::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<SourceClass> {
        SourceClass::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for SourceClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A credential a call returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Minted {
    /// The new access key ID.
    pub key: String,
    /// When the credentials expire (temporary credentials only).
    pub expiration: Option<Millis>,
    /// Who the new key acts as: the assumed-role or federated-user ARN, the caller's ARN for
    /// `GetSessionToken`, the user name for `CreateAccessKey`.
    pub principal: Option<String>,
}

/// Every fact of one event, as the lake stores them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub denied: bool,
    pub caller_account: Option<String>,
    pub resource_account: Option<String>,
    pub aws_service: bool,
    pub source_class: Option<SourceClass>,
    pub target_key: Option<String>,
    pub key_status: Option<KeyStatus>,
    pub minted: Option<Minted>,
    pub target_user: Option<String>,
    pub target_role: Option<String>,
    pub target_policy: Option<String>,
}

/// Compute every fact of an event.
pub fn facts(e: &EventView<'_>) -> Facts {
    let caller_account = caller_account(e);
    Facts {
        denied: e.error_code.is_some_and(is_denied),
        resource_account: resource_account(e, caller_account.as_deref()),
        caller_account,
        aws_service: is_aws_service(e),
        source_class: e.source_ip.map(source_class),
        target_key: target_key(e),
        key_status: key_status(e),
        minted: minted(e),
        target_user: target_user(e),
        target_role: target_role(e),
        target_policy: target_policy(e),
    }
}

/// Whether an error code says the caller was not allowed to make the call: `AccessDenied`,
/// `AccessDeniedException`, `Client.UnauthorizedOperation`, `UnauthorizedAccess`, `Forbidden`,
/// `NotAuthorized`, `AuthorizationError(Exception)`, `AuthorizationFailure` and their
/// variants, in any case. Throttling, validation and missing-resource errors are failures, not
/// denials.
pub fn is_denied(error_code: &str) -> bool {
    const MARKS: [&str; 6] = [
        "accessdenied",
        "unauthorized",
        "forbidden",
        "notauthorized",
        "authorizationerror",
        "authorizationfailure",
    ];
    let c = error_code.to_ascii_lowercase();
    MARKS.iter().any(|m| c.contains(m))
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// A 12-digit AWS account ID.
fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The account field of an ARN (`arn:partition:service:region:ACCOUNT:resource`).
pub fn arn_account(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    if parts.next() != Some("arn") {
        return None;
    }
    let account = parts.nth(3)?;
    is_account(account).then_some(account)
}

/// A role session's ARN taken apart: `arn:aws:sts::1:assumed-role/R/s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleSession<'a> {
    /// `arn:aws:sts::1:assumed-role/R`
    pub role_arn: &'a str,
    /// `R`
    pub role: &'a str,
    /// `s`, when the ARN names one.
    pub session: Option<&'a str>,
}

/// The role and session of an assumed-role ARN; `None` for any other ARN.
pub fn role_session(arn: &str) -> Option<RoleSession<'_>> {
    const MARK: &str = ":assumed-role/";
    let start = arn.find(MARK)? + MARK.len();
    let rest = &arn[start..];
    let (role, session) = match rest.split_once('/') {
        Some((role, session)) => (role, Some(session)),
        None => (rest, None),
    };
    Some(RoleSession {
        role_arn: &arn[..start + role.len()],
        role,
        session,
    })
}

/// The principal whose history a caller shares: the role of a role session
/// (`arn:aws:sts::1:assumed-role/R/s` → `arn:aws:sts::1:assumed-role/R`), else the ARN itself.
pub fn principal_of(arn: &str) -> &str {
    match role_session(arn) {
        Some(RoleSession {
            role_arn,
            session: Some(_),
            ..
        }) => role_arn,
        _ => arn,
    }
}

/// The account that made the call: `userIdentity.accountId`; else the account an access key
/// ID encodes; else the account of `userIdentity.arn`. AWS services acting on their own have
/// none.
pub fn caller_account(e: &EventView<'_>) -> Option<String> {
    if let Some(a) = non_empty(e.identity_account) {
        return Some(a.to_owned());
    }
    if let Some(k) = non_empty(e.access_key_id)
        && let AccountDecode::Account(a) = decode_account(k)
    {
        return Some(a);
    }
    non_empty(e.identity_arn)
        .and_then(arn_account)
        .map(str::to_owned)
}

/// The account whose resources the call touched and whose trail recorded it:
/// `recipientAccountId`, else the caller's account (records before `eventVersion` 1.02).
pub fn resource_account(e: &EventView<'_>, caller_account: Option<&str>) -> Option<String> {
    non_empty(e.recipient_account)
        .or(caller_account)
        .map(str::to_owned)
}

/// Whether an AWS service made the call on its own behalf: identity type `AWSService`,
/// `invokedBy` set, or a service-linked role (path `/aws-service-role/`, sessions of
/// `AWSServiceRoleFor…`).
pub fn is_aws_service(e: &EventView<'_>) -> bool {
    e.identity_type == Some("AWSService")
        || non_empty(e.invoked_by).is_some()
        || e.issuer_arn
            .is_some_and(|a| a.contains("/aws-service-role/"))
        || e.identity_arn
            .is_some_and(|a| a.contains(":assumed-role/AWSServiceRoleFor"))
}

/// The class of a `sourceIPAddress`.
pub fn source_class(source: &str) -> SourceClass {
    let s = source.trim();
    match s.parse::<IpAddr>() {
        Ok(ip) if is_private(ip) => SourceClass::Private,
        Ok(_) => SourceClass::Public,
        Err(_) if is_service_name(s) => SourceClass::AwsService,
        Err(_) => SourceClass::Other,
    }
}

fn is_service_name(s: &str) -> bool {
    s == "AWS Internal"
        || s.ends_with(".amazonaws.com")
        || s.ends_with(".amazonaws.com.cn")
        || s.ends_with(".aws.internal")
        || s.ends_with(".api.aws")
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                // 100.64.0.0/10, carrier-grade NAT (RFC 6598)
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_private(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                v6.is_loopback()
                    || v6.is_unspecified()
                    || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                    || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
            }
        },
    }
}

/// Whether the event is a call of `service` (`iam`, `sts`, ...) named `name`.
fn is_call(e: &EventView<'_>, service: &str, names: &[&str]) -> bool {
    let source_ok = e.event_source.is_some_and(|s| {
        s.strip_suffix(".amazonaws.com")
            .is_some_and(|svc| svc == service)
    });
    source_ok && e.event_name.is_some_and(|n| names.contains(&n))
}

fn succeeded(e: &EventView<'_>) -> bool {
    non_empty(e.error_code).is_none()
}

/// A string member of a JSON text at `path` (object members only).
fn json_str(json: Option<&str>, path: &[&str]) -> Option<String> {
    let json = json?;
    let v = sonic_rs::get_from_str(json, path).ok()?;
    let s = sonic_rs::JsonValueTrait::as_str(&v)?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// IAM calls whose request names the access key they act on.
const KEY_CALLS_BY_REQUEST: [&str; 3] =
    ["UpdateAccessKey", "DeleteAccessKey", "GetAccessKeyLastUsed"];

/// The access key an IAM call acts on: the key `UpdateAccessKey`, `DeleteAccessKey` and
/// `GetAccessKeyLastUsed` name, the key `CreateAccessKey` created, the key STS
/// `GetAccessKeyInfo` asks about. Set for failed calls too (what was attempted).
pub fn target_key(e: &EventView<'_>) -> Option<String> {
    if is_call(e, "iam", &KEY_CALLS_BY_REQUEST) || is_call(e, "sts", &["GetAccessKeyInfo"]) {
        return json_str(e.request_parameters, &["accessKeyId"]);
    }
    if is_call(e, "iam", &["CreateAccessKey"]) {
        return json_str(e.response_elements, &["accessKey", "accessKeyId"]);
    }
    None
}

/// The status a successful IAM call left its key in: `CreateAccessKey` → `Active` (or the
/// status the response gives), `UpdateAccessKey` → the requested status, `DeleteAccessKey` →
/// `Deleted`.
pub fn key_status(e: &EventView<'_>) -> Option<KeyStatus> {
    if !succeeded(e) {
        return None;
    }
    if is_call(e, "iam", &["DeleteAccessKey"]) {
        return Some(KeyStatus::Deleted);
    }
    if is_call(e, "iam", &["UpdateAccessKey"]) {
        return json_str(e.request_parameters, &["status"]).and_then(|s| KeyStatus::parse(&s));
    }
    if is_call(e, "iam", &["CreateAccessKey"]) {
        return Some(
            json_str(e.response_elements, &["accessKey", "status"])
                .and_then(|s| KeyStatus::parse(&s))
                .unwrap_or(KeyStatus::Active),
        );
    }
    None
}

/// STS calls that return temporary credentials in `responseElements.credentials`.
pub const STS_MINTING_CALLS: [&str; 6] = [
    "AssumeRole",
    "AssumeRoleWithSAML",
    "AssumeRoleWithWebIdentity",
    "AssumeRoot",
    "GetSessionToken",
    "GetFederationToken",
];

/// Every call whose successful response carries a new access key ID, by service: the STS calls
/// above, IAM `CreateAccessKey`, and the IAM Identity Center portal's `GetRoleCredentials`
/// (whose CloudTrail record usually omits the credentials).
pub const MINTING_CALLS: [(&str, &str); 8] = [
    ("sts", "AssumeRole"),
    ("sts", "AssumeRoleWithSAML"),
    ("sts", "AssumeRoleWithWebIdentity"),
    ("sts", "AssumeRoot"),
    ("sts", "GetSessionToken"),
    ("sts", "GetFederationToken"),
    ("iam", "CreateAccessKey"),
    ("sso", "GetRoleCredentials"),
];

/// The credential a successful call minted.
pub fn minted(e: &EventView<'_>) -> Option<Minted> {
    if !succeeded(e) {
        return None;
    }
    let resp = e.response_elements;
    if is_call(e, "sts", &STS_MINTING_CALLS) {
        let key = json_str(resp, &["credentials", "accessKeyId"])?;
        let principal = json_str(resp, &["assumedRoleUser", "arn"])
            .or_else(|| json_str(resp, &["federatedUser", "arn"]))
            .or_else(|| {
                // Session-token credentials act as the caller.
                (e.event_name == Some("GetSessionToken"))
                    .then(|| non_empty(e.identity_arn).map(str::to_owned))
                    .flatten()
            });
        return Some(Minted {
            key,
            expiration: json_str(resp, &["credentials", "expiration"])
                .and_then(|t| parse_cloudtrail_time(&t)),
            principal,
        });
    }
    if is_call(e, "iam", &["CreateAccessKey"]) {
        return Some(Minted {
            key: json_str(resp, &["accessKey", "accessKeyId"])?,
            expiration: None,
            principal: json_str(resp, &["accessKey", "userName"]),
        });
    }
    if is_call(e, "sso", &["GetRoleCredentials"]) {
        let key = json_str(resp, &["roleCredentials", "accessKeyId"])?;
        return Some(Minted {
            key,
            expiration: json_str(resp, &["roleCredentials", "expiration"])
                .and_then(|t| parse_cloudtrail_time(&t)),
            principal: None,
        });
    }
    None
}

fn is_iam(e: &EventView<'_>) -> bool {
    e.event_source == Some("iam.amazonaws.com")
}

/// The IAM user an IAM call names (`requestParameters.userName`, or the user the response
/// describes).
pub fn target_user(e: &EventView<'_>) -> Option<String> {
    if !is_iam(e) {
        return None;
    }
    json_str(e.request_parameters, &["userName"])
        .or_else(|| json_str(e.response_elements, &["user", "userName"]))
        .or_else(|| json_str(e.response_elements, &["accessKey", "userName"]))
}

/// The IAM role a call names: `requestParameters.roleName` of IAM calls, the role ARN an STS
/// `AssumeRole*` call asks for.
pub fn target_role(e: &EventView<'_>) -> Option<String> {
    if is_iam(e) {
        return json_str(e.request_parameters, &["roleName"])
            .or_else(|| json_str(e.response_elements, &["role", "roleName"]));
    }
    if is_call(
        e,
        "sts",
        &[
            "AssumeRole",
            "AssumeRoleWithSAML",
            "AssumeRoleWithWebIdentity",
        ],
    ) {
        return json_str(e.request_parameters, &["roleArn"]);
    }
    None
}

/// The policy an IAM call names: `requestParameters.policyArn`, else `policyName`.
pub fn target_policy(e: &EventView<'_>) -> Option<String> {
    if !is_iam(e) {
        return None;
    }
    json_str(e.request_parameters, &["policyArn"])
        .or_else(|| json_str(e.request_parameters, &["policyName"]))
        .or_else(|| json_str(e.response_elements, &["policy", "arn"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(source: &'a str, name: &'a str) -> EventView<'a> {
        EventView {
            event_source: Some(source),
            event_name: Some(name),
            ..EventView::default()
        }
    }

    #[test]
    fn role_sessions_and_their_principal() {
        let arn = "arn:aws:sts::111122223333:assumed-role/ops/alice";
        assert_eq!(
            role_session(arn),
            Some(RoleSession {
                role_arn: "arn:aws:sts::111122223333:assumed-role/ops",
                role: "ops",
                session: Some("alice"),
            })
        );
        assert_eq!(
            principal_of(arn),
            "arn:aws:sts::111122223333:assumed-role/ops"
        );
        let bare = "arn:aws:sts::111122223333:assumed-role/ops";
        assert_eq!(
            role_session(bare).map(|r| (r.role, r.session)),
            Some(("ops", None))
        );
        assert_eq!(principal_of(bare), bare);
        let user = "arn:aws:iam::111122223333:user/alice";
        assert_eq!(role_session(user), None);
        assert_eq!(principal_of(user), user);
    }

    #[test]
    fn denied_is_one_definition() {
        for code in [
            "AccessDenied",
            "AccessDeniedException",
            "Client.UnauthorizedOperation",
            "UnauthorizedAccess",
            "Forbidden",
            "forbidden",
            "NotAuthorizedException",
            "AuthorizationErrorException",
            "AuthorizationFailure",
        ] {
            assert!(is_denied(code), "{code}");
        }
        for code in [
            "ThrottlingException",
            "NoSuchKey",
            "ResourceNotFoundException",
            "ValidationException",
            "EntityTemporarilyUnmodifiableException",
        ] {
            assert!(!is_denied(code), "{code}");
        }
    }

    #[test]
    fn accounts_of_caller_and_resource() {
        let mut e = view("s3.amazonaws.com", "GetObject");
        e.identity_account = Some("111122223333");
        e.recipient_account = Some("444455556666");
        assert_eq!(caller_account(&e).as_deref(), Some("111122223333"));
        assert_eq!(facts(&e).resource_account.as_deref(), Some("444455556666"));
        // No accountId: the ARN's account; no recipient: the caller's.
        let mut e = view("s3.amazonaws.com", "GetObject");
        e.identity_arn = Some("arn:aws:iam::210987654321:user/alice");
        assert_eq!(caller_account(&e).as_deref(), Some("210987654321"));
        assert_eq!(facts(&e).resource_account.as_deref(), Some("210987654321"));
        assert_eq!(arn_account("arn:aws:s3:::bucket"), None);
    }

    #[test]
    fn source_classes() {
        assert_eq!(source_class("10.1.2.3"), SourceClass::Private);
        assert_eq!(source_class("100.64.0.9"), SourceClass::Private);
        assert_eq!(source_class("fd00::1"), SourceClass::Private);
        assert_eq!(source_class("::ffff:192.168.1.1"), SourceClass::Private);
        assert_eq!(source_class("203.0.113.7"), SourceClass::Public);
        assert_eq!(source_class("2001:db8::1"), SourceClass::Public);
        assert_eq!(source_class("ec2.amazonaws.com"), SourceClass::AwsService);
        assert_eq!(source_class("AWS Internal"), SourceClass::AwsService);
        assert_eq!(source_class("06.237.252.245"), SourceClass::Other);
        for c in SourceClass::ALL {
            assert_eq!(SourceClass::parse(c.as_str()), Some(c));
        }
    }

    #[test]
    fn key_lifecycle() {
        let mut e = view("iam.amazonaws.com", "UpdateAccessKey");
        e.request_parameters =
            Some(r#"{"accessKeyId":"AKIARTXV5AHDZMKNCBCQ","status":"Inactive","userName":"ci"}"#);
        assert_eq!(target_key(&e).as_deref(), Some("AKIARTXV5AHDZMKNCBCQ"));
        assert_eq!(key_status(&e), Some(KeyStatus::Inactive));
        assert_eq!(target_user(&e).as_deref(), Some("ci"));
        e.error_code = Some("AccessDenied");
        assert_eq!(target_key(&e).as_deref(), Some("AKIARTXV5AHDZMKNCBCQ"));
        assert_eq!(key_status(&e), None, "a denied call changes nothing");

        let mut e = view("iam.amazonaws.com", "DeleteAccessKey");
        e.request_parameters = Some(r#"{"accessKeyId":"AKIARTXV5AHDZMKNCBCQ"}"#);
        assert_eq!(key_status(&e), Some(KeyStatus::Deleted));
        assert!(KeyStatus::Deleted.is_deactivation());

        let mut e = view("iam.amazonaws.com", "CreateAccessKey");
        e.request_parameters = Some(r#"{"userName": "backup-admin"}"#);
        e.response_elements = Some(
            r#"{"accessKey": {"accessKeyId": "AKIARTXV5AHDRQSG4VCH", "status": "Active", "userName": "backup-admin", "createDate": "Nov 30, 2024, 3:16:15 AM"}}"#,
        );
        let f = facts(&e);
        assert_eq!(f.target_key.as_deref(), Some("AKIARTXV5AHDRQSG4VCH"));
        assert_eq!(f.key_status, Some(KeyStatus::Active));
        assert_eq!(
            f.minted,
            Some(Minted {
                key: "AKIARTXV5AHDRQSG4VCH".into(),
                expiration: None,
                principal: Some("backup-admin".into())
            })
        );
    }

    #[test]
    fn minted_credentials() {
        let mut e = view("sts.amazonaws.com", "AssumeRole");
        e.request_parameters = Some(
            r#"{"roleArn":"arn:aws:iam::111111111111:role/DataPipeline","roleSessionName":"maint"}"#,
        );
        e.response_elements = Some(
            r#"{"credentials":{"accessKeyId":"ASIARTXV5AHDSRWPFM6V","sessionToken":"REDACTED_BY_KEYTRAIL","expiration":"Nov 30, 2024, 4:21:00 AM"},"assumedRoleUser":{"assumedRoleId":"AROA:maint","arn":"arn:aws:sts::111111111111:assumed-role/DataPipeline/maint"}}"#,
        );
        let f = facts(&e);
        let m = f.minted.expect("minted");
        assert_eq!(m.key, "ASIARTXV5AHDSRWPFM6V");
        assert_eq!(m.expiration, Some(1_732_940_460_000));
        assert_eq!(
            m.principal.as_deref(),
            Some("arn:aws:sts::111111111111:assumed-role/DataPipeline/maint")
        );
        assert_eq!(
            f.target_role.as_deref(),
            Some("arn:aws:iam::111111111111:role/DataPipeline")
        );
        assert_eq!(f.target_key, None);

        let mut e = view("sts.amazonaws.com", "GetSessionToken");
        e.identity_arn = Some("arn:aws:iam::111111111111:user/alice");
        e.response_elements = Some(
            r#"{"credentials":{"accessKeyId":"ASIARTXV5AHDYHPGSGN6","expiration":"2024-12-01T15:17:00Z"}}"#,
        );
        let m = minted(&e).expect("minted");
        assert_eq!(m.expiration, Some(1_733_066_220_000));
        assert_eq!(
            m.principal.as_deref(),
            Some("arn:aws:iam::111111111111:user/alice")
        );
        e.error_code = Some("AccessDenied");
        assert_eq!(minted(&e), None);
        assert!(facts(&e).denied);
    }

    #[test]
    fn aws_service_callers() {
        let mut e = view("kms.amazonaws.com", "Decrypt");
        e.identity_type = Some("AWSService");
        assert!(is_aws_service(&e));
        let mut e = view("s3.amazonaws.com", "GetObject");
        e.invoked_by = Some("cloudtrail.amazonaws.com");
        assert!(is_aws_service(&e));
        let mut e = view("ec2.amazonaws.com", "DescribeInstances");
        e.identity_arn = Some("arn:aws:sts::1:assumed-role/AWSServiceRoleForConfig/x");
        assert!(is_aws_service(&e));
        e.identity_arn = Some("arn:aws:sts::1:assumed-role/Admin/x");
        assert!(!is_aws_service(&e));
    }

    #[test]
    fn targets_of_iam_calls() {
        let mut e = view("iam.amazonaws.com", "AttachRolePolicy");
        e.request_parameters = Some(
            r#"{"roleName":"backdoor","policyArn":"arn:aws:iam::aws:policy/AdministratorAccess"}"#,
        );
        let f = facts(&e);
        assert_eq!(f.target_role.as_deref(), Some("backdoor"));
        assert_eq!(
            f.target_policy.as_deref(),
            Some("arn:aws:iam::aws:policy/AdministratorAccess")
        );
        assert_eq!(f.target_user, None);
        // Other services' userName members are not IAM users.
        let mut e = view("identitystore.amazonaws.com", "CreateUser");
        e.request_parameters = Some(r#"{"userName":"x"}"#);
        assert_eq!(target_user(&e), None);
    }
}
