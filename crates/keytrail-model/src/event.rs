//! One CloudTrail record, decoded from its JSON text without copying what need not be copied.
//!
//! Decoding is tolerant the way CloudTrail's own history demands (eventVersion 1.0 to 1.1x,
//! fields appear over the years, some are absent, scalars sometimes come as numbers), and
//! strict where a wrong type means the record is not a CloudTrail event: a string field that
//! holds an object, a `userIdentity` that is not an object, no usable event time. Unknown
//! fields are kept, verbatim, in `extrafields`.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use sonic_rs::{JsonValueTrait, LazyValue};

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
    #[error("record holds {size} bytes of values, more than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("objects and arrays nested more than {limit} levels deep")]
    TooDeep { limit: u32 },
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
            EventError::TooDeep { .. } => "too-deep",
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

/// A scalar member as CloudTrail writes it: text (strings as they are, numbers and booleans
/// as their text), null, or the JSON type found where a scalar belongs.
enum Scalar<'a> {
    Text(Cow<'a, str>),
    Null,
    Wrong(&'static str),
}

/// Consume whatever container is left and say what it was.
fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<&'static str, A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok("an object")
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<&'static str, A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok("an array")
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Owned(v)))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Borrowed(if v {
            "true"
        } else {
            "false"
        })))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Owned(v.to_string())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Owned(v.to_string())))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Owned(v.to_string())))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map).map(Scalar::Wrong)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq).map(Scalar::Wrong)
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// A member that must be a JSON string (`eventTime`): numbers and booleans are refused too.
struct StringOnly<'a>(Scalar<'a>);

impl<'de> Deserialize<'de> for StringOnly<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringOnly<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(StringOnly(Scalar::Text(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StringOnly(Scalar::Text(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(StringOnly(Scalar::Text(Cow::Owned(v))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(StringOnly(Scalar::Wrong("a boolean")))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(StringOnly(Scalar::Wrong("a number")))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(StringOnly(Scalar::Wrong("a number")))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(StringOnly(Scalar::Wrong("a number")))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(StringOnly(Scalar::Null))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                drain_map(map).map(|f| StringOnly(Scalar::Wrong(f)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                drain_seq(seq).map(|f| StringOnly(Scalar::Wrong(f)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A member name, borrowed unless it holds escapes (for readers that walk objects themselves).
pub struct Key<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// What decoding one record collects besides its fields.
struct Cx<'a> {
    /// Whether the text the record came from holds anything that might be a secret; when it
    /// does not, the per-field secret checks are skipped.
    scrub: bool,
    /// Unknown members: `(path, JSON text)`.
    extra: Vec<(String, Cow<'a, str>)>,
    /// The first type problem found; the record is refused with it.
    error: Option<EventError>,
    /// Bytes of text and JSON taken so far: the record's size, near enough.
    bytes: usize,
}

impl<'a> Cx<'a> {
    fn new(scrub: bool) -> Cx<'a> {
        Cx {
            scrub,
            extra: Vec::new(),
            error: None,
            bytes: 0,
        }
    }

    fn wrong(&mut self, field: &'static str, found: &'static str, expected: &'static str) {
        if self.error.is_none() {
            self.error = Some(EventError::WrongType {
                field,
                found,
                expected,
            });
        }
    }

    /// A text member: strings, numbers and booleans as text, null as absent, containers refused.
    fn text(&mut self, v: Scalar<'a>, field: &'static str) -> Str<'a> {
        match v {
            Scalar::Text(t) => {
                self.bytes += t.len();
                Some(t)
            }
            Scalar::Null => None,
            Scalar::Wrong(found) => {
                self.wrong(field, found, "a string");
                None
            }
        }
    }

    /// A free-text member that could carry a token (user agent, error message).
    fn free_text(&mut self, v: Scalar<'a>, field: &'static str) -> Str<'a> {
        let t = self.text(v, field)?;
        if !self.scrub {
            return Some(t);
        }
        Some(match t {
            Cow::Borrowed(b) => scrub_text(b),
            Cow::Owned(o) => Cow::Owned(scrub_text(&o).into_owned()),
        })
    }

    /// A member kept as JSON text (`requestParameters` and the like): any JSON value; null is
    /// absent; compacted when it spans lines and scrubbed of secrets.
    fn json(&mut self, v: LazyValue<'a>) -> Str<'a> {
        let raw = v.as_raw_cow();
        if raw == "null" {
            return None;
        }
        self.bytes += raw.len();
        let pretty = memchr::memchr(b'\n', raw.as_bytes()).is_some();
        if !self.scrub && !pretty {
            return Some(raw);
        }
        Some(match raw {
            Cow::Borrowed(b) => scrub_json(b),
            Cow::Owned(o) => Cow::Owned(scrub_json(&o).into_owned()),
        })
    }

    fn flag(&mut self, v: Scalar<'a>, field: &'static str) -> Option<bool> {
        match v {
            Scalar::Text(t) if t.eq_ignore_ascii_case("true") => Some(true),
            Scalar::Text(t) if t.eq_ignore_ascii_case("false") => Some(false),
            Scalar::Null => None,
            Scalar::Text(_) => {
                self.wrong(field, "a value other than true/false", "a boolean");
                None
            }
            Scalar::Wrong(found) => {
                self.wrong(field, found, "a boolean");
                None
            }
        }
    }

    /// Keep an unknown member: its path and its JSON text.
    fn keep(&mut self, prefix: &str, key: &str, v: LazyValue<'a>) {
        let path = if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        };
        if let Some(j) = self.json(v) {
            self.extra.push((path, j));
        }
    }
}

/// Seeds for the nested objects of a record: each fills its struct from the members it
/// knows and keeps the others in `extrafields`. An empty object counts as absent (CloudTrail
/// writes `"sessionIssuer": {}` for sessions without one). Anything but an object or null is
/// a type problem of the record.
macro_rules! object_seed {
    (
        $seed:ident -> $ty:ident, $path:literal,
        |$cx:ident, $map:ident, $x:ident, $key:ident| { $($arm:tt)* }
    ) => {
        struct $seed<'c, 'a> {
            cx: &'c mut Cx<'a>,
        }

        impl<'de, 'c> DeserializeSeed<'de> for $seed<'c, 'de> {
            type Value = Option<$ty<'de>>;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
        }

        impl<'de, 'c> Visitor<'de> for $seed<'c, 'de> {
            type Value = Option<$ty<'de>>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut $map: A) -> Result<Self::Value, A::Error> {
                let $cx = self.cx;
                let mut $x = $ty::default();
                let mut any = false;
                while let Some(Key($key)) = $map.next_key::<Key<'de>>()? {
                    any = true;
                    match &*$key {
                        $($arm)*
                        other => {
                            let v = $map.next_value::<LazyValue<'de>>()?;
                            $cx.keep($path, other, v);
                        }
                    }
                }
                Ok(any.then_some($x))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                let found = drain_seq(seq)?;
                self.cx.wrong($path, found, "an object");
                Ok(None)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                self.cx.wrong($path, "a string", "an object");
                Ok(None)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                self.cx.wrong($path, "a boolean", "an object");
                Ok(None)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                self.cx.wrong($path, "a number", "an object");
                Ok(None)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                self.cx.wrong($path, "a number", "an object");
                Ok(None)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                self.cx.wrong($path, "a number", "an object");
                Ok(None)
            }
        }
    };
}

/// `map.next_value` as a text member of `$x.$field`, named `$name` in errors.
macro_rules! text {
    ($cx:ident, $map:ident, $name:literal) => {
        $cx.text($map.next_value::<Scalar<'_>>()?, $name)
    };
}

object_seed!(OnBehalfOfSeed -> OnBehalfOf, "userIdentity.onBehalfOf", |cx, map, x, key| {
    "userId" => x.user_id = text!(cx, map, "userIdentity.onBehalfOf.userId"),
    "identityStoreArn" => x.identity_store_arn = text!(cx, map, "userIdentity.onBehalfOf.identityStoreArn"),
});

object_seed!(AttributesSeed -> SessionAttributes, "userIdentity.sessionContext.attributes", |cx, map, x, key| {
    "mfaAuthenticated" => x.mfa_authenticated = text!(cx, map, "userIdentity.sessionContext.attributes.mfaAuthenticated"),
    "creationDate" => x.creation_date = text!(cx, map, "userIdentity.sessionContext.attributes.creationDate"),
});

object_seed!(IssuerSeed -> SessionIssuer, "userIdentity.sessionContext.sessionIssuer", |cx, map, x, key| {
    "type" => x.r#type = text!(cx, map, "userIdentity.sessionContext.sessionIssuer.type"),
    "principalId" => x.principal_id = text!(cx, map, "userIdentity.sessionContext.sessionIssuer.principalId"),
    "arn" => x.arn = text!(cx, map, "userIdentity.sessionContext.sessionIssuer.arn"),
    "accountId" => x.account_id = text!(cx, map, "userIdentity.sessionContext.sessionIssuer.accountId"),
    "userName" => x.user_name = text!(cx, map, "userIdentity.sessionContext.sessionIssuer.userName"),
});

object_seed!(WebIdSeed -> WebIdFederationData, "userIdentity.sessionContext.webIdFederationData", |cx, map, x, key| {
    "federatedProvider" => x.federated_provider = text!(cx, map, "userIdentity.sessionContext.webIdFederationData.federatedProvider"),
    "attributes" => x.attributes = cx.json(map.next_value::<LazyValue<'de>>()?),
});

object_seed!(SessionContextSeed -> SessionContext, "userIdentity.sessionContext", |cx, map, x, key| {
    "attributes" => x.attributes = map.next_value_seed(AttributesSeed { cx: &mut *cx })?,
    "sessionIssuer" => x.session_issuer = map.next_value_seed(IssuerSeed { cx: &mut *cx })?,
    "webIdFederationData" => x.web_id_federation_data = map.next_value_seed(WebIdSeed { cx: &mut *cx })?,
    "ec2RoleDelivery" => x.ec2_role_delivery = text!(cx, map, "userIdentity.sessionContext.ec2RoleDelivery"),
    "sourceIdentity" => x.source_identity = text!(cx, map, "userIdentity.sessionContext.sourceIdentity"),
});

object_seed!(UserIdentitySeed -> UserIdentity, "userIdentity", |cx, map, x, key| {
    "type" => x.r#type = text!(cx, map, "userIdentity.type"),
    "principalId" => x.principal_id = text!(cx, map, "userIdentity.principalId"),
    "arn" => x.arn = text!(cx, map, "userIdentity.arn"),
    "accountId" => x.account_id = text!(cx, map, "userIdentity.accountId"),
    "invokedBy" => x.invoked_by = text!(cx, map, "userIdentity.invokedBy"),
    "accessKeyId" => x.access_key_id = text!(cx, map, "userIdentity.accessKeyId"),
    "userName" => x.user_name = text!(cx, map, "userIdentity.userName"),
    "identityProvider" => x.identity_provider = text!(cx, map, "userIdentity.identityProvider"),
    "credentialId" => x.credential_id = text!(cx, map, "userIdentity.credentialId"),
    "onBehalfOf" => x.on_behalf_of = map.next_value_seed(OnBehalfOfSeed { cx: &mut *cx })?,
    "sessionContext" => x.session_context = map.next_value_seed(SessionContextSeed { cx: &mut *cx })?,
});

object_seed!(ResourceSeed -> Resource, "resources[]", |cx, map, x, key| {
    "ARN" | "arn" => x.arn = text!(cx, map, "resources[].ARN"),
    "accountId" => x.account_id = text!(cx, map, "resources[].accountId"),
    "type" => x.r#type = text!(cx, map, "resources[].type"),
});

object_seed!(AddendumSeed -> Addendum, "addendum", |cx, map, x, key| {
    "reason" => x.reason = text!(cx, map, "addendum.reason"),
    "updatedFields" => x.updated_fields = text!(cx, map, "addendum.updatedFields"),
    "originalRequestID" => x.original_request_id = text!(cx, map, "addendum.originalRequestID"),
    "originalEventID" => x.original_event_id = text!(cx, map, "addendum.originalEventID"),
});

object_seed!(TlsSeed -> TlsDetails, "tlsDetails", |cx, map, x, key| {
    "tlsVersion" => x.tls_version = text!(cx, map, "tlsDetails.tlsVersion"),
    "cipherSuite" => x.cipher_suite = text!(cx, map, "tlsDetails.cipherSuite"),
    "clientProvidedHostHeader" => x.client_provided_host_header = text!(cx, map, "tlsDetails.clientProvidedHostHeader"),
});

/// `resources`: an array of resource objects.
struct ResourcesSeed<'c, 'a> {
    cx: &'c mut Cx<'a>,
}

impl<'de, 'c> DeserializeSeed<'de> for ResourcesSeed<'c, 'de> {
    type Value = Option<Vec<Resource<'de>>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 'c> Visitor<'de> for ResourcesSeed<'c, 'de> {
    type Value = Option<Vec<Resource<'de>>>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(r) = seq.next_element_seed(ResourceSeed { cx: &mut *self.cx })? {
            out.push(r.unwrap_or_default());
        }
        Ok(Some(out))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let found = drain_map(map)?;
        self.cx.wrong("resources", found, "an array");
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        self.cx.wrong("resources", "a string", "an array");
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        self.cx.wrong("resources", "a boolean", "an array");
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        self.cx.wrong("resources", "a number", "an array");
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        self.cx.wrong("resources", "a number", "an array");
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        self.cx.wrong("resources", "a number", "an array");
        Ok(None)
    }
}

/// The members of one record being decoded. Both the record seed below and document readers
/// (which also look for `Records`, `Events` and digest members in a top-level object) feed it
/// one member at a time.
pub struct EventFields<'de> {
    cx: Cx<'de>,
    e: Event<'de>,
    event_time: Option<Scalar<'de>>,
    at_timestamp: Option<Cow<'de, str>>,
}

impl<'de> EventFields<'de> {
    /// `scrub`: whether the text holding the record might hold a secret
    /// ([`crate::redact::is_suspicious`] of it); when not, per-field secret checks are skipped.
    pub fn new(scrub: bool) -> EventFields<'de> {
        EventFields {
            cx: Cx::new(scrub),
            e: Event::default(),
            event_time: None,
            at_timestamp: None,
        }
    }

    /// Take the value of member `key` from `map`.
    pub fn take<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        let cx = &mut self.cx;
        let e = &mut self.e;
        match key {
            "eventVersion" => e.event_version = text!(cx, map, "eventVersion"),
            "userIdentity" => {
                e.user_identity = map.next_value_seed(UserIdentitySeed { cx: &mut *cx })?;
            }
            "eventTime" => self.event_time = Some(map.next_value::<StringOnly<'de>>()?.0),
            "eventSource" => e.event_source = text!(cx, map, "eventSource"),
            "eventName" => e.event_name = text!(cx, map, "eventName"),
            "awsRegion" => e.aws_region = text!(cx, map, "awsRegion"),
            "sourceIPAddress" => e.source_ip_address = text!(cx, map, "sourceIPAddress"),
            "userAgent" => e.user_agent = cx.free_text(map.next_value()?, "userAgent"),
            "errorCode" => e.error_code = text!(cx, map, "errorCode"),
            "errorMessage" => e.error_message = cx.free_text(map.next_value()?, "errorMessage"),
            "requestParameters" => e.request_parameters = cx.json(map.next_value()?),
            "responseElements" => e.response_elements = cx.json(map.next_value()?),
            "additionalEventData" => e.additional_event_data = cx.json(map.next_value()?),
            "requestID" => e.request_id = text!(cx, map, "requestID"),
            "eventID" => e.event_id = text!(cx, map, "eventID"),
            "readOnly" => e.read_only = cx.flag(map.next_value()?, "readOnly"),
            "resources" => e.resources = map.next_value_seed(ResourcesSeed { cx: &mut *cx })?,
            "eventType" => e.event_type = text!(cx, map, "eventType"),
            "apiVersion" => e.api_version = text!(cx, map, "apiVersion"),
            "recipientAccountId" => e.recipient_account_id = text!(cx, map, "recipientAccountId"),
            "serviceEventDetails" => e.service_event_details = cx.json(map.next_value()?),
            "sharedEventID" => e.shared_event_id = text!(cx, map, "sharedEventID"),
            "vpcEndpointId" => e.vpc_endpoint_id = text!(cx, map, "vpcEndpointId"),
            "vpcEndpointAccountId" => {
                e.vpc_endpoint_account_id = text!(cx, map, "vpcEndpointAccountId");
            }
            "eventCategory" => e.event_category = text!(cx, map, "eventCategory"),
            "managementEvent" => e.management_event = cx.flag(map.next_value()?, "managementEvent"),
            "addendum" => e.addendum = map.next_value_seed(AddendumSeed { cx: &mut *cx })?,
            "sessionCredentialFromConsole" => {
                e.session_credential_from_console = text!(cx, map, "sessionCredentialFromConsole");
            }
            "edgeDeviceDetails" => e.edge_device_details = cx.json(map.next_value()?),
            "tlsDetails" => e.tls_details = map.next_value_seed(TlsSeed { cx: &mut *cx })?,
            "insightDetails" => e.insight_details = cx.json(map.next_value()?),
            "@timestamp" => {
                let v: LazyValue<'de> = map.next_value()?;
                if let Some(t) = v.as_str() {
                    self.at_timestamp = Some(match v.as_raw_cow() {
                        Cow::Borrowed(raw) if !raw.contains('\\') => {
                            Cow::Borrowed(&raw[1..raw.len() - 1])
                        }
                        _ => Cow::Owned(t.to_owned()),
                    });
                }
                cx.keep("", "@timestamp", v);
            }
            other => {
                let v = map.next_value::<LazyValue<'de>>()?;
                cx.keep("", other, v);
            }
        }
        Ok(())
    }

    /// The decoded record, or why it is refused.
    pub fn finish(self, max_bytes: usize) -> Result<Event<'de>, EventError> {
        let EventFields {
            cx,
            mut e,
            event_time,
            at_timestamp,
        } = self;
        if let Some(err) = cx.error {
            return Err(err);
        }
        if cx.bytes > max_bytes {
            return Err(EventError::TooLarge {
                size: cx.bytes,
                limit: max_bytes,
            });
        }
        let time_text = match event_time {
            Some(Scalar::Text(t)) => t,
            Some(Scalar::Wrong(found)) => {
                return Err(EventError::WrongType {
                    field: "eventTime",
                    found,
                    expected: "a string",
                });
            }
            None | Some(Scalar::Null) => at_timestamp.ok_or(EventError::MissingTime)?,
        };
        e.event_time = parse_event_time(&time_text)
            .ok_or_else(|| EventError::BadTime(time_text.into_owned()))?;
        e.extra = cx.extra;
        Ok(e)
    }
}

/// Decodes one record in place, inside whatever is being parsed (an element of `Records`, of
/// an array, or a whole text). Type problems make the record an `Err` without stopping the
/// parse, so one bad record does not cost its neighbours; only invalid JSON stops it.
#[derive(Clone, Copy, Debug)]
pub struct EventSeed {
    /// See [`EventFields::new`].
    pub scrub: bool,
    /// Records larger than this (bytes of text and JSON) are refused.
    pub max_bytes: usize,
}

impl<'de> DeserializeSeed<'de> for EventSeed {
    type Value = Result<Event<'de>, EventError>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EventSeed {
    type Value = Result<Event<'de>, EventError>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a CloudTrail event object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = EventFields::new(self.scrub);
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            fields.take(&k, &mut map)?;
        }
        Ok(fields.finish(self.max_bytes))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let found = drain_seq(seq)?;
        Ok(Err(EventError::NotObject { found }))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(EventError::NotObject { found: "a string" }))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(EventError::NotObject { found: "a boolean" }))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(EventError::NotObject { found: "a number" }))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(EventError::NotObject { found: "a number" }))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(EventError::NotObject { found: "a number" }))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err(EventError::NotObject { found: "null" }))
    }
}

fn json_err(e: sonic_rs::Error) -> EventError {
    EventError::Json(
        e.to_string()
            .lines()
            .next()
            .unwrap_or("invalid JSON")
            .to_owned(),
    )
}

/// Decode one record from its JSON text. Text nesting deeper than
/// [`crate::jsonscan::MAX_DEPTH`] is refused before it is parsed.
pub fn decode_event(raw: &str) -> Result<Event<'_>, EventError> {
    use crate::jsonscan::{MAX_DEPTH, too_deep};
    if too_deep(raw.as_bytes(), MAX_DEPTH).is_some() {
        return Err(EventError::TooDeep { limit: MAX_DEPTH });
    }
    let seed = EventSeed {
        scrub: crate::redact::is_suspicious(raw),
        max_bytes: usize::MAX,
    };
    let mut de = sonic_rs::Deserializer::from_str(raw);
    let event = seed.deserialize(&mut de).map_err(json_err)?;
    de.end().map_err(json_err)?;
    event
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
                "`readOnly` is a value other than true/false",
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
