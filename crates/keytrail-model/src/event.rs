//! One CloudTrail record, decoded from its JSON text without copying what need not be copied.
//!
//! Decoding is tolerant the way CloudTrail's own history demands (eventVersion 1.0 to 1.1x,
//! fields appear over the years, some are absent, scalars sometimes come as numbers), and
//! strict where a wrong type means the record is not a CloudTrail event: a string field that
//! holds an object, a `userIdentity` that is not an object, no usable event time. Unknown
//! fields are kept, verbatim, in `extrafields`.

use std::borrow::Cow;

use sonic_rs::{JsonType, JsonValueTrait, LazyValue};

use crate::redact::{scrub_json, scrub_text};
use crate::time::{Millis, parse_event_time};

type Str<'a> = Option<Cow<'a, str>>;

/// Why one record was not taken. The caller adds the object and the record index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("not a JSON object but {found}")]
    NotObject { found: &'static str },
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("`{field}` is {found}, expected {expected}")]
    WrongType {
        field: &'static str,
        found: &'static str,
        expected: &'static str,
    },
    #[error("no `eventTime` (nor `@timestamp`)")]
    MissingTime,
    #[error("`eventTime` {0:?} is not a time")]
    BadTime(String),
    #[error("record of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
}

impl EventError {
    /// A short, stable reason code for summaries (`skipped_events` by reason).
    pub fn reason(&self) -> &'static str {
        match self {
            EventError::NotObject { .. } => "not-an-object",
            EventError::Json(_) => "invalid-json",
            EventError::WrongType { .. } => "wrong-type",
            EventError::MissingTime => "missing-time",
            EventError::BadTime(_) => "bad-time",
            EventError::TooLarge { .. } => "too-large",
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct OnBehalfOf<'a> {
    pub user_id: Str<'a>,
    pub identity_store_arn: Str<'a>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct SessionAttributes<'a> {
    pub mfa_authenticated: Str<'a>,
    pub creation_date: Str<'a>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct SessionIssuer<'a> {
    pub r#type: Str<'a>,
    pub principal_id: Str<'a>,
    pub arn: Str<'a>,
    pub account_id: Str<'a>,
    pub user_name: Str<'a>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct WebIdFederationData<'a> {
    pub federated_provider: Str<'a>,
    /// JSON text.
    pub attributes: Str<'a>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct SessionContext<'a> {
    pub attributes: Option<SessionAttributes<'a>>,
    pub session_issuer: Option<SessionIssuer<'a>>,
    pub ec2_role_delivery: Str<'a>,
    pub web_id_federation_data: Option<WebIdFederationData<'a>>,
    pub source_identity: Str<'a>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct UserIdentity<'a> {
    pub r#type: Str<'a>,
    pub principal_id: Str<'a>,
    pub arn: Str<'a>,
    pub account_id: Str<'a>,
    pub invoked_by: Str<'a>,
    pub access_key_id: Str<'a>,
    pub user_name: Str<'a>,
    pub on_behalf_of: Option<OnBehalfOf<'a>>,
    pub session_context: Option<SessionContext<'a>>,
    pub identity_provider: Str<'a>,
    pub credential_id: Str<'a>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Resource<'a> {
    pub arn: Str<'a>,
    pub account_id: Str<'a>,
    pub r#type: Str<'a>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Addendum<'a> {
    pub reason: Str<'a>,
    pub updated_fields: Str<'a>,
    pub original_request_id: Str<'a>,
    pub original_event_id: Str<'a>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct TlsDetails<'a> {
    pub tls_version: Str<'a>,
    pub cipher_suite: Str<'a>,
    pub client_provided_host_header: Str<'a>,
}

/// A decoded CloudTrail record. Text fields borrow from the input where they hold no escapes.
/// JSON-valued fields (`request_parameters`, ...) hold compact JSON text with secrets removed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Event<'a> {
    pub event_version: Str<'a>,
    pub user_identity: Option<UserIdentity<'a>>,
    /// `eventTime`, or `@timestamp` when `eventTime` is absent; UTC milliseconds.
    pub event_time: Millis,
    pub event_source: Str<'a>,
    pub event_name: Str<'a>,
    pub aws_region: Str<'a>,
    pub source_ip_address: Str<'a>,
    pub user_agent: Str<'a>,
    pub error_code: Str<'a>,
    pub error_message: Str<'a>,
    pub request_parameters: Str<'a>,
    pub response_elements: Str<'a>,
    pub additional_event_data: Str<'a>,
    pub request_id: Str<'a>,
    pub event_id: Str<'a>,
    pub read_only: Option<bool>,
    pub resources: Option<Vec<Resource<'a>>>,
    pub event_type: Str<'a>,
    pub api_version: Str<'a>,
    pub recipient_account_id: Str<'a>,
    pub service_event_details: Str<'a>,
    pub shared_event_id: Str<'a>,
    pub vpc_endpoint_id: Str<'a>,
    pub vpc_endpoint_account_id: Str<'a>,
    pub event_category: Str<'a>,
    pub management_event: Option<bool>,
    pub addendum: Option<Addendum<'a>>,
    pub session_credential_from_console: Str<'a>,
    pub edge_device_details: Str<'a>,
    pub tls_details: Option<TlsDetails<'a>>,
    pub insight_details: Str<'a>,
    /// Members keytrail has no column for, as `(path, compact JSON text)`; nested ones are
    /// named by their dotted path (`userIdentity.inScopeOf`).
    pub extra: Vec<(String, Cow<'a, str>)>,
}

/// The `eventType` of CloudTrail Insights events.
pub const INSIGHT_EVENT_TYPE: &str = "AwsCloudTrailInsight";

impl Event<'_> {
    /// The access key that made the call, if any (an empty string counts as none).
    pub fn access_key_id(&self) -> Option<&str> {
        self.user_identity
            .as_ref()
            .and_then(|u| u.access_key_id.as_deref())
            .filter(|k| !k.is_empty())
    }

    pub fn is_insight(&self) -> bool {
        self.event_type.as_deref() == Some(INSIGHT_EVENT_TYPE) || self.insight_details.is_some()
    }
}

fn type_name(t: JsonType) -> &'static str {
    match t {
        JsonType::Null => "null",
        JsonType::Boolean => "a boolean",
        JsonType::Number => "a number",
        JsonType::String => "a string",
        JsonType::Object => "an object",
        JsonType::Array => "an array",
    }
}

/// The text of a JSON string, borrowed when it holds no escapes.
fn string_of<'a>(v: &LazyValue<'a>) -> Cow<'a, str> {
    if let Cow::Borrowed(raw) = v.as_raw_cow() {
        let inner = &raw[1..raw.len() - 1];
        if memchr::memchr(b'\\', inner.as_bytes()).is_none() {
            return Cow::Borrowed(inner);
        }
    }
    Cow::Owned(v.as_str().unwrap_or_default().to_owned())
}

/// A text field: strings as they are, numbers and booleans as their JSON text (lossless),
/// null as absent; objects and arrays are refused.
fn text<'a>(v: &LazyValue<'a>, field: &'static str) -> Result<Str<'a>, EventError> {
    match v.get_type() {
        JsonType::Null => Ok(None),
        JsonType::String => Ok(Some(string_of(v))),
        JsonType::Number | JsonType::Boolean => Ok(Some(v.as_raw_cow())),
        t => Err(EventError::WrongType {
            field,
            found: type_name(t),
            expected: "a string",
        }),
    }
}

/// A free-text field that could carry a token (user agent, error message).
fn free_text<'a>(v: &LazyValue<'a>, field: &'static str) -> Result<Str<'a>, EventError> {
    Ok(text(v, field)?.map(|s| match s {
        Cow::Borrowed(b) => scrub_text(b),
        Cow::Owned(o) => Cow::Owned(scrub_text(&o).into_owned()),
    }))
}

/// A field kept as JSON text (`requestParameters` and the like): any JSON value; null is
/// absent; compacted and scrubbed of secrets.
fn json<'a>(v: &LazyValue<'a>) -> Str<'a> {
    if v.get_type() == JsonType::Null {
        return None;
    }
    Some(match v.as_raw_cow() {
        Cow::Borrowed(b) => scrub_json(b),
        Cow::Owned(o) => Cow::Owned(scrub_json(&o).into_owned()),
    })
}

fn boolean(v: &LazyValue<'_>, field: &'static str) -> Result<Option<bool>, EventError> {
    match v.get_type() {
        JsonType::Null => Ok(None),
        JsonType::Boolean => Ok(v.as_bool()),
        JsonType::String => match v.as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            _ => Err(EventError::WrongType {
                field,
                found: "a string other than true/false",
                expected: "a boolean",
            }),
        },
        t => Err(EventError::WrongType {
            field,
            found: type_name(t),
            expected: "a boolean",
        }),
    }
}

/// Iterate the members of an object value; `None` for null, an error for anything else.
fn members<'a>(
    v: LazyValue<'a>,
    field: &'static str,
) -> Result<Option<sonic_rs::ObjectJsonIter<'a>>, EventError> {
    match v.get_type() {
        JsonType::Null => Ok(None),
        JsonType::Object => Ok(v.into_object_iter()),
        t => Err(EventError::WrongType {
            field,
            found: type_name(t),
            expected: "an object",
        }),
    }
}

fn json_err(e: sonic_rs::Error) -> EventError {
    EventError::Json(e.to_string())
}

/// Keep an unknown member: its path and its JSON text.
fn keep_extra<'a>(
    extra: &mut Vec<(String, Cow<'a, str>)>,
    prefix: &str,
    key: &str,
    v: &LazyValue<'a>,
) {
    let path = if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    };
    if let Some(j) = json(v) {
        extra.push((path, j));
    }
}

/// Walk an object's members, handing each to `f`; members `f` does not know go to `extra`.
macro_rules! for_members {
    ($value:expr, $field:expr, $extra:expr, $prefix:expr, |$k:ident, $v:ident| { $($arm:tt)* }) => {{
        if let Some(iter) = members($value, $field)? {
            for item in iter {
                let (key, $v) = item.map_err(json_err)?;
                let $k: &str = &*key;
                match $k {
                    $($arm)*
                    other => keep_extra($extra, $prefix, other, &$v),
                }
            }
            true
        } else {
            false
        }
    }};
}

fn decode_user_identity<'a>(
    v: LazyValue<'a>,
    extra: &mut Vec<(String, Cow<'a, str>)>,
) -> Result<Option<UserIdentity<'a>>, EventError> {
    let mut u = UserIdentity::default();
    let present = for_members!(v, "userIdentity", extra, "userIdentity", |k, v| {
        "type" => u.r#type = text(&v, "userIdentity.type")?,
        "principalId" => u.principal_id = text(&v, "userIdentity.principalId")?,
        "arn" => u.arn = text(&v, "userIdentity.arn")?,
        "accountId" => u.account_id = text(&v, "userIdentity.accountId")?,
        "invokedBy" => u.invoked_by = text(&v, "userIdentity.invokedBy")?,
        "accessKeyId" => u.access_key_id = text(&v, "userIdentity.accessKeyId")?,
        "userName" => u.user_name = text(&v, "userIdentity.userName")?,
        "identityProvider" => u.identity_provider = text(&v, "userIdentity.identityProvider")?,
        "credentialId" => u.credential_id = text(&v, "userIdentity.credentialId")?,
        "onBehalfOf" => {
            let mut o = OnBehalfOf::default();
            if for_members!(v, "userIdentity.onBehalfOf", extra, "userIdentity.onBehalfOf", |k, v| {
                "userId" => o.user_id = text(&v, "userIdentity.onBehalfOf.userId")?,
                "identityStoreArn" => o.identity_store_arn = text(&v, "userIdentity.onBehalfOf.identityStoreArn")?,
            }) {
                u.on_behalf_of = Some(o);
            }
        }
        "sessionContext" => u.session_context = decode_session_context(v, extra)?,
    });
    Ok(present.then_some(u))
}

fn decode_session_context<'a>(
    v: LazyValue<'a>,
    extra: &mut Vec<(String, Cow<'a, str>)>,
) -> Result<Option<SessionContext<'a>>, EventError> {
    const P: &str = "userIdentity.sessionContext";
    let mut c = SessionContext::default();
    let present = for_members!(v, P, extra, P, |k, v| {
        "attributes" => {
            let mut a = SessionAttributes::default();
            if for_members!(v, "userIdentity.sessionContext.attributes", extra, "userIdentity.sessionContext.attributes", |k, v| {
                "mfaAuthenticated" => a.mfa_authenticated = text(&v, "userIdentity.sessionContext.attributes.mfaAuthenticated")?,
                "creationDate" => a.creation_date = text(&v, "userIdentity.sessionContext.attributes.creationDate")?,
            }) {
                c.attributes = Some(a);
            }
        }
        "sessionIssuer" => {
            let mut s = SessionIssuer::default();
            // CloudTrail writes `"sessionIssuer": {}` for sessions without one; keep that as
            // absent rather than as a struct of nulls.
            let mut any = false;
            if for_members!(v, "userIdentity.sessionContext.sessionIssuer", extra, "userIdentity.sessionContext.sessionIssuer", |k, v| {
                "type" => { s.r#type = text(&v, "userIdentity.sessionContext.sessionIssuer.type")?; any = true; }
                "principalId" => { s.principal_id = text(&v, "userIdentity.sessionContext.sessionIssuer.principalId")?; any = true; }
                "arn" => { s.arn = text(&v, "userIdentity.sessionContext.sessionIssuer.arn")?; any = true; }
                "accountId" => { s.account_id = text(&v, "userIdentity.sessionContext.sessionIssuer.accountId")?; any = true; }
                "userName" => { s.user_name = text(&v, "userIdentity.sessionContext.sessionIssuer.userName")?; any = true; }
            }) && any {
                c.session_issuer = Some(s);
            }
        }
        "ec2RoleDelivery" => c.ec2_role_delivery = text(&v, "userIdentity.sessionContext.ec2RoleDelivery")?,
        "sourceIdentity" => c.source_identity = text(&v, "userIdentity.sessionContext.sourceIdentity")?,
        "webIdFederationData" => {
            let mut w = WebIdFederationData::default();
            let mut any = false;
            if for_members!(v, "userIdentity.sessionContext.webIdFederationData", extra, "userIdentity.sessionContext.webIdFederationData", |k, v| {
                "federatedProvider" => { w.federated_provider = text(&v, "userIdentity.sessionContext.webIdFederationData.federatedProvider")?; any = true; }
                "attributes" => { w.attributes = json(&v); any = true; }
            }) && any {
                c.web_id_federation_data = Some(w);
            }
        }
    });
    Ok(present.then_some(c))
}

fn decode_resources<'a>(
    v: LazyValue<'a>,
    extra: &mut Vec<(String, Cow<'a, str>)>,
) -> Result<Option<Vec<Resource<'a>>>, EventError> {
    let iter = match v.get_type() {
        JsonType::Null => return Ok(None),
        JsonType::Array => v.into_array_iter(),
        t => {
            return Err(EventError::WrongType {
                field: "resources",
                found: type_name(t),
                expected: "an array",
            });
        }
    };
    let mut out = Vec::new();
    for item in iter.into_iter().flatten() {
        let item = item.map_err(json_err)?;
        let mut r = Resource::default();
        for_members!(item, "resources[]", extra, "resources[]", |k, v| {
            "ARN" | "arn" => r.arn = text(&v, "resources[].ARN")?,
            "accountId" => r.account_id = text(&v, "resources[].accountId")?,
            "type" => r.r#type = text(&v, "resources[].type")?,
        });
        out.push(r);
    }
    Ok(Some(out))
}

/// Decode one record from its JSON text.
pub fn decode_event(raw: &str) -> Result<Event<'_>, EventError> {
    let first = raw.trim_start().as_bytes().first().copied();
    if first != Some(b'{') {
        let found = match first {
            None => "nothing",
            Some(b'[') => "an array",
            Some(b'"') => "a string",
            Some(b'n') => "null",
            Some(b't' | b'f') => "a boolean",
            Some(b'-' | b'0'..=b'9') => "a number",
            Some(_) => "invalid JSON",
        };
        return Err(EventError::NotObject { found });
    }
    let mut e = Event::default();
    let mut extra = Vec::new();
    let mut event_time: Option<LazyValue<'_>> = None;
    let mut at_timestamp: Option<LazyValue<'_>> = None;
    let x = &mut extra;
    for item in sonic_rs::to_object_iter(raw) {
        let (key, v) = item.map_err(json_err)?;
        match &*key {
            "eventVersion" => e.event_version = text(&v, "eventVersion")?,
            "userIdentity" => e.user_identity = decode_user_identity(v, x)?,
            "eventTime" => event_time = Some(v),
            "eventSource" => e.event_source = text(&v, "eventSource")?,
            "eventName" => e.event_name = text(&v, "eventName")?,
            "awsRegion" => e.aws_region = text(&v, "awsRegion")?,
            "sourceIPAddress" => e.source_ip_address = text(&v, "sourceIPAddress")?,
            "userAgent" => e.user_agent = free_text(&v, "userAgent")?,
            "errorCode" => e.error_code = text(&v, "errorCode")?,
            "errorMessage" => e.error_message = free_text(&v, "errorMessage")?,
            "requestParameters" => e.request_parameters = json(&v),
            "responseElements" => e.response_elements = json(&v),
            "additionalEventData" => e.additional_event_data = json(&v),
            "requestID" => e.request_id = text(&v, "requestID")?,
            "eventID" => e.event_id = text(&v, "eventID")?,
            "readOnly" => e.read_only = boolean(&v, "readOnly")?,
            "resources" => e.resources = decode_resources(v, x)?,
            "eventType" => e.event_type = text(&v, "eventType")?,
            "apiVersion" => e.api_version = text(&v, "apiVersion")?,
            "recipientAccountId" => e.recipient_account_id = text(&v, "recipientAccountId")?,
            "serviceEventDetails" => e.service_event_details = json(&v),
            "sharedEventID" => e.shared_event_id = text(&v, "sharedEventID")?,
            "vpcEndpointId" => e.vpc_endpoint_id = text(&v, "vpcEndpointId")?,
            "vpcEndpointAccountId" => e.vpc_endpoint_account_id = text(&v, "vpcEndpointAccountId")?,
            "eventCategory" => e.event_category = text(&v, "eventCategory")?,
            "managementEvent" => e.management_event = boolean(&v, "managementEvent")?,
            "addendum" => {
                let mut a = Addendum::default();
                if for_members!(v, "addendum", x, "addendum", |k, v| {
                    "reason" => a.reason = text(&v, "addendum.reason")?,
                    "updatedFields" => a.updated_fields = text(&v, "addendum.updatedFields")?,
                    "originalRequestID" => a.original_request_id = text(&v, "addendum.originalRequestID")?,
                    "originalEventID" => a.original_event_id = text(&v, "addendum.originalEventID")?,
                }) {
                    e.addendum = Some(a);
                }
            }
            "sessionCredentialFromConsole" => {
                e.session_credential_from_console = text(&v, "sessionCredentialFromConsole")?
            }
            "edgeDeviceDetails" => e.edge_device_details = json(&v),
            "tlsDetails" => {
                let mut t = TlsDetails::default();
                if for_members!(v, "tlsDetails", x, "tlsDetails", |k, v| {
                    "tlsVersion" => t.tls_version = text(&v, "tlsDetails.tlsVersion")?,
                    "cipherSuite" => t.cipher_suite = text(&v, "tlsDetails.cipherSuite")?,
                    "clientProvidedHostHeader" => t.client_provided_host_header = text(&v, "tlsDetails.clientProvidedHostHeader")?,
                }) {
                    e.tls_details = Some(t);
                }
            }
            "insightDetails" => e.insight_details = json(&v),
            "@timestamp" => {
                at_timestamp = Some(v.clone());
                keep_extra(x, "", "@timestamp", &v);
            }
            other => keep_extra(x, "", other, &v),
        }
    }
    let time_value = match event_time {
        Some(v) if v.get_type() != JsonType::Null => v,
        _ => at_timestamp.ok_or(EventError::MissingTime)?,
    };
    let time_text = match time_value.get_type() {
        JsonType::String => string_of(&time_value),
        t => {
            return Err(EventError::WrongType {
                field: "eventTime",
                found: type_name(t),
                expected: "a string",
            });
        }
    };
    e.event_time =
        parse_event_time(&time_text).ok_or_else(|| EventError::BadTime(time_text.into_owned()))?;
    e.extra = extra;
    Ok(e)
}

/// Serialise the unknown members of an event as one JSON object, in the order seen.
pub fn extra_json(extra: &[(String, Cow<'_, str>)]) -> Option<String> {
    if extra.is_empty() {
        return None;
    }
    let mut out = String::from("{");
    for (i, (k, v)) in extra.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Keys are plain strings; serde_json escapes them correctly.
        out.push_str(&serde_json::to_string(k).unwrap_or_else(|_| "\"?\"".to_owned()));
        out.push(':');
        out.push_str(v);
    }
    out.push('}');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": "AROAEXAMPLE:alice",
            "arn": "arn:aws:sts::111122223333:assumed-role/Admin/alice",
            "accountId": "111122223333",
            "accessKeyId": "ASIAY34FZKBOKMUTVV7A",
            "sessionContext": {
                "sessionIssuer": {"type": "Role", "principalId": "AROAEXAMPLE", "arn": "arn:aws:iam::111122223333:role/Admin", "accountId": "111122223333", "userName": "Admin"},
                "webIdFederationData": {},
                "attributes": {"creationDate": "2024-11-30T08:00:00Z", "mfaAuthenticated": "false"},
                "ec2RoleDelivery": "2.0"
            },
            "inScopeOf": {"issuerType": "AWS::Lambda::Function"}
        },
        "eventTime": "2024-11-30T08:43:17Z",
        "eventSource": "iam.amazonaws.com",
        "eventName": "CreateUser",
        "awsRegion": "us-east-1",
        "sourceIPAddress": "203.0.113.7",
        "userAgent": "aws-cli/2.15.0",
        "requestParameters": {"userName": "backdoor"},
        "responseElements": {"user": {"userName": "backdoor", "userId": "AIDAEXAMPLE"}},
        "requestID": "r-1",
        "eventID": "e-1",
        "readOnly": false,
        "resources": [{"accountId": "111122223333", "type": "AWS::IAM::User", "ARN": "arn:aws:iam::111122223333:user/backdoor"}],
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": "111122223333",
        "eventCategory": "Management",
        "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256", "clientProvidedHostHeader": "iam.amazonaws.com"},
        "futureField": [1, 2]
    }"#;

    #[test]
    fn decodes_every_known_field() {
        let e = decode_event(FULL).expect("decodes");
        assert_eq!(e.event_time, 1_732_956_197_000);
        assert_eq!(e.access_key_id(), Some("ASIAY34FZKBOKMUTVV7A"));
        let u = e.user_identity.as_ref().expect("identity");
        assert_eq!(u.r#type.as_deref(), Some("AssumedRole"));
        let c = u.session_context.as_ref().expect("context");
        assert_eq!(c.ec2_role_delivery.as_deref(), Some("2.0"));
        assert_eq!(
            c.session_issuer
                .as_ref()
                .and_then(|s| s.user_name.as_deref()),
            Some("Admin")
        );
        assert_eq!(c.web_id_federation_data, None, "empty object is absent");
        assert_eq!(
            c.attributes
                .as_ref()
                .and_then(|a| a.mfa_authenticated.as_deref()),
            Some("false")
        );
        // Single-line JSON is kept as written; multi-line JSON is compacted (see redact).
        assert_eq!(
            e.request_parameters.as_deref(),
            Some(r#"{"userName": "backdoor"}"#)
        );
        assert_eq!(e.read_only, Some(false));
        assert_eq!(e.management_event, Some(true));
        let r = e.resources.as_ref().expect("resources");
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0].arn.as_deref(),
            Some("arn:aws:iam::111122223333:user/backdoor")
        );
        assert_eq!(
            e.tls_details
                .as_ref()
                .and_then(|t| t.tls_version.as_deref()),
            Some("TLSv1.3")
        );
        assert_eq!(
            extra_json(&e.extra).as_deref(),
            Some(
                r#"{"userIdentity.inScopeOf":{"issuerType": "AWS::Lambda::Function"},"futureField":[1, 2]}"#
            )
        );
        assert!(!e.is_insight());
    }

    #[test]
    fn at_timestamp_stands_in_for_event_time() {
        let e = decode_event(
            r#"{"@timestamp":"2020-09-14T00:44:23.000Z","eventName":"X","@version":"1"}"#,
        )
        .expect("decodes");
        assert_eq!(e.event_time, 1_600_044_263_000);
        assert_eq!(
            extra_json(&e.extra).as_deref(),
            Some(r#"{"@timestamp":"2020-09-14T00:44:23.000Z","@version":"1"}"#)
        );
    }

    #[test]
    fn escapes_are_decoded_and_scalars_kept_as_text() {
        let e = decode_event(r#"{"eventTime":"2024-01-01T00:00:00Z","eventName":"Get\u0041","awsRegion":42,"readOnly":"TRUE"}"#)
            .expect("decodes");
        assert_eq!(e.event_name.as_deref(), Some("GetA"));
        assert_eq!(e.aws_region.as_deref(), Some("42"));
        assert_eq!(e.read_only, Some(true));
    }

    #[test]
    fn hostile_records_are_refused_with_a_reason() {
        let cases = [
            ("[1]", "not a JSON object but an array"),
            ("17", "not a JSON object but a number"),
            (r#"{"eventName":"X"}"#, "no `eventTime`"),
            (r#"{"eventTime":"soon"}"#, "\"soon\" is not a time"),
            (
                r#"{"eventTime":17}"#,
                "`eventTime` is a number, expected a string",
            ),
            (
                r#"{"eventTime":"2024-01-01T00:00:00Z","eventName":{"a":1}}"#,
                "`eventName` is an object",
            ),
            (
                r#"{"eventTime":"2024-01-01T00:00:00Z","userIdentity":"root"}"#,
                "`userIdentity` is a string, expected an object",
            ),
            (
                r#"{"eventTime":"2024-01-01T00:00:00Z","resources":{}}"#,
                "`resources` is an object, expected an array",
            ),
            (
                r#"{"eventTime":"2024-01-01T00:00:00Z","readOnly":"maybe"}"#,
                "`readOnly` is a string other than true/false",
            ),
            (
                r#"{"eventTime":"2024-01-01T00:00:00Z","eventName":"X""#,
                "invalid JSON",
            ),
        ];
        for (raw, want) in cases {
            let err = decode_event(raw).expect_err(raw).to_string();
            assert!(err.contains(want), "{raw}: {err}");
        }
    }

    #[test]
    fn session_tokens_never_survive_decoding() {
        let token = "IQoJb3JpZ2luX2VjEOH//////////wEaCXVzLWVhc3QtMSJIMEYCIQDzpomGZAmkp4RIzBo4RqVJGEmUNjyA7lHyt1aKfFh8IwIh";
        let raw = format!(
            r#"{{"eventTime":"2024-01-01T00:00:00Z","responseElements":{{"credentials":{{"accessKeyId":"ASIAX","sessionToken":"{token}"}}}},"userAgent":"x {token}","odd":{{"SessionToken":"{token}"}}}}"#
        );
        let e = decode_event(&raw).expect("decodes");
        let all = format!("{e:?}");
        assert!(!all.contains("IQoJb3JpZ2lu"), "{all}");
        assert!(
            e.response_elements
                .as_deref()
                .is_some_and(|r| r.contains("ASIAX"))
        );
    }
}
