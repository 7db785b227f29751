//! The rule format: YAML files with an id, a title, a severity, a category, a `match` (the
//! conditions an event must meet), the fields to show, and positive and negative test events.
//! `docs/rules.md` describes the format for users; this module parses and checks it.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value as Yaml;

use crate::RuleError;
use crate::net::Cidr;

/// How bad a finding is. Ordered: `Info < Low < Medium < High < Critical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Points a finding of this severity adds to its key's risk score.
    pub fn weight(self) -> u64 {
        match self {
            Severity::Info => 1,
            Severity::Low => 3,
            Severity::Medium => 10,
            Severity::High => 30,
            Severity::Critical => 100,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "info" | "informational" => Ok(Severity::Info),
            "low" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            other => Err(format!(
                "unknown severity `{other}`: use info, low, medium, high or critical"
            )),
        }
    }
}

/// The categories of AWS's checklist for a compromised access key; a rule's folder under
/// `rules/` is its category.
pub const CATEGORIES: [&str; 11] = [
    "iam-persistence",
    "execution",
    "impact",
    "ec2",
    "s3-policy",
    "network",
    "logging-tampering",
    "quarantine",
    "account",
    "recon",
    "credential-use",
];

/// The JSON columns of `events`: a field path that starts with one of these continues into
/// the JSON document.
pub const JSON_COLUMNS: [&str; 6] = [
    "requestparameters",
    "responseelements",
    "additionaleventdata",
    "serviceeventdetails",
    "edgedevicedetails",
    "extrafields",
];

/// The text columns of `events` a rule may test, as paths of lower-case names.
const TEXT_COLUMNS: &[&str] = &[
    "eventversion",
    "useridentity.type",
    "useridentity.principalid",
    "useridentity.arn",
    "useridentity.accountid",
    "useridentity.invokedby",
    "useridentity.accesskeyid",
    "useridentity.username",
    "useridentity.onbehalfof.userid",
    "useridentity.onbehalfof.identitystorearn",
    "useridentity.sessioncontext.attributes.mfaauthenticated",
    "useridentity.sessioncontext.attributes.creationdate",
    "useridentity.sessioncontext.sessionissuer.type",
    "useridentity.sessioncontext.sessionissuer.principalid",
    "useridentity.sessioncontext.sessionissuer.arn",
    "useridentity.sessioncontext.sessionissuer.accountid",
    "useridentity.sessioncontext.sessionissuer.username",
    "useridentity.sessioncontext.ec2roledelivery",
    "useridentity.sessioncontext.webidfederationdata.federatedprovider",
    "useridentity.sessioncontext.sourceidentity",
    "useridentity.identityprovider",
    "useridentity.credentialid",
    "eventsource",
    "eventname",
    "awsregion",
    "sourceipaddress",
    "useragent",
    "errorcode",
    "errormessage",
    "requestid",
    "eventid",
    "eventtype",
    "apiversion",
    "recipientaccountid",
    "sharedeventid",
    "vpcendpointid",
    "vpcendpointaccountid",
    "eventcategory",
    "sessioncredentialfromconsole",
    "tlsdetails.tlsversion",
    "tlsdetails.ciphersuite",
    "tlsdetails.clientprovidedhostheader",
    "addendum.reason",
    "accesskeyid",
    "sourceobject",
];

const BOOL_COLUMNS: &[&str] = &["readonly", "managementevent"];

/// A field a rule names: a column of `events`, or a path into one of its JSON columns.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FieldRef {
    /// A text or boolean column (nested struct fields as a path of names).
    Column { path: Vec<String>, boolean: bool },
    /// A path into a JSON column (`requestparameters.policyArn`). Arrays on the way are
    /// walked through; JSON held in a string is parsed when the path goes on into it.
    Json { column: String, path: Vec<String> },
}

impl FieldRef {
    /// Resolve a field as written in a rule (`eventName`, `userIdentity.sessionContext.ec2RoleDelivery`,
    /// `requestParameters.policyArn`). Column names are matched without regard to case;
    /// JSON keys keep their case.
    pub fn parse(text: &str) -> Result<FieldRef, String> {
        let parts: Vec<&str> = text.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!("`{text}` is not a field path"));
        }
        let head = parts[0].to_ascii_lowercase();
        if JSON_COLUMNS.contains(&head.as_str()) {
            return Ok(FieldRef::Json {
                column: head,
                path: parts[1..].iter().map(|s| (*s).to_owned()).collect(),
            });
        }
        let lower = text.to_ascii_lowercase();
        if TEXT_COLUMNS.contains(&lower.as_str()) {
            return Ok(FieldRef::Column {
                path: lower.split('.').map(str::to_owned).collect(),
                boolean: false,
            });
        }
        if BOOL_COLUMNS.contains(&lower.as_str()) {
            return Ok(FieldRef::Column {
                path: vec![lower],
                boolean: true,
            });
        }
        Err(format!(
            "unknown field `{text}`: use a column of the events table (docs/schema.md), or a path into requestParameters, responseElements, additionalEventData, serviceEventDetails"
        ))
    }

    pub fn is_json(&self) -> bool {
        matches!(self, FieldRef::Json { .. })
    }
}

impl fmt::Display for FieldRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldRef::Column { path, .. } => f.write_str(&path.join(".")),
            FieldRef::Json { column, path } => {
                f.write_str(column)?;
                for p in path {
                    write!(f, ".{p}")?;
                }
                Ok(())
            }
        }
    }
}

/// How a value is compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op", content = "arg")]
pub enum Op {
    Equals,
    Prefix,
    Suffix,
    Contains,
    Regex,
    /// The value (an address, or a network `a.b.c.d/n`) lies inside one of the networks.
    Cidr,
    /// The value (a network) contains one of the networks: `cidr_covers: 0.0.0.0/0` finds
    /// rules open to every address, whatever address is written before the `/0`.
    CidrCovers,
    Gt,
    Gte,
    Lt,
    Lte,
    /// The field is present (not null, not empty) — or absent, with `false`.
    Exists(bool),
    /// Some value names an AWS account (12 digits, alone or in an ARN) other than the
    /// event's own account (`recipientAccountId`) — or none does, with `false`.
    OtherAccount(bool),
    /// Some element (of an array, or the object itself) meets every condition of a nested
    /// selection whose fields are paths relative to the element.
    Item(Box<JsonCond>),
    /// The text matches a Sigma wildcard pattern (`*` any text, `?` one character, `\`
    /// escapes), as a whole.
    Glob,
}

impl Op {
    fn from_name(name: &str) -> Option<Op> {
        Some(match name {
            "equals" | "eq" | "one_of" | "in" => Op::Equals,
            "prefix" | "startswith" | "starts_with" => Op::Prefix,
            "suffix" | "endswith" | "ends_with" => Op::Suffix,
            "contains" => Op::Contains,
            "regex" | "re" => Op::Regex,
            "cidr" => Op::Cidr,
            "cidr_covers" => Op::CidrCovers,
            "gt" => Op::Gt,
            "gte" | "ge" => Op::Gte,
            "lt" => Op::Lt,
            "lte" | "le" => Op::Lte,
            "exists" => Op::Exists(true),
            "other_account" => Op::OtherAccount(true),
            "item" => Op::Item(Box::new(JsonCond::All(Vec::new()))),
            "glob" => Op::Glob,
            _ => return None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Op::Equals => "equals",
            Op::Prefix => "prefix",
            Op::Suffix => "suffix",
            Op::Contains => "contains",
            Op::Regex => "regex",
            Op::Cidr => "cidr",
            Op::CidrCovers => "cidr_covers",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::Exists(_) => "exists",
            Op::OtherAccount(_) => "other_account",
            Op::Item(_) => "item",
            Op::Glob => "glob",
        }
    }
}

/// One test of values at a path (relative to a JSON document, or empty for a column's text).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JsonTest {
    pub path: Vec<String>,
    #[serde(flatten)]
    pub op: Op,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nocase: bool,
    /// Every listed value must match (Sigma's `|all`); by default any one does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Conditions evaluated on a JSON document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JsonCond {
    All(Vec<JsonCond>),
    Any(Vec<JsonCond>),
    Not(Box<JsonCond>),
    Test(JsonTest),
}

/// A rule's condition over an event.
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    /// A test of a column's text (the test's path is empty).
    Column {
        path: Vec<String>,
        boolean: bool,
        test: JsonTest,
    },
    /// A test inside a JSON column.
    Json {
        column: String,
        test: JsonTest,
    },
    /// Two fields hold the same text.
    SameAs {
        left: FieldRef,
        right: FieldRef,
        nocase: bool,
    },
}

impl Cond {
    /// Whether every test is on a plain column (cheap to evaluate, no JSON parsing).
    pub fn columns_only(&self) -> bool {
        match self {
            Cond::All(v) | Cond::Any(v) => v.iter().all(Cond::columns_only),
            Cond::Not(c) => c.columns_only(),
            Cond::Column { .. } => true,
            Cond::Json { .. } | Cond::SameAs { .. } => false,
        }
    }

    /// Every field the condition names.
    pub fn fields(&self, out: &mut Vec<FieldRef>) {
        match self {
            Cond::All(v) | Cond::Any(v) => v.iter().for_each(|c| c.fields(out)),
            Cond::Not(c) => c.fields(out),
            Cond::Column { path, boolean, .. } => out.push(FieldRef::Column {
                path: path.clone(),
                boolean: *boolean,
            }),
            Cond::Json { column, test } => out.push(FieldRef::Json {
                column: column.clone(),
                path: test.path.clone(),
            }),
            Cond::SameAs { left, right, .. } => {
                out.push(left.clone());
                out.push(right.clone());
            }
        }
    }
}

/// A detection rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub id: String,
    pub title: String,
    pub description: String,
    pub severity: Severity,
    pub category: String,
    pub references: Vec<String>,
    pub tags: Vec<String>,
    pub cond: Cond,
    /// Fields shown with each finding.
    pub show: Vec<(String, FieldRef)>,
    /// The one-line reason, with `{field}` placeholders (`{a|b}`: the first of a, b present).
    pub reason: Option<String>,
    /// Whether events AWS services make on their own behalf may match.
    pub service_events: bool,
    pub tests: RuleTests,
    /// Where the rule came from: `bundled:<path>` or a file path.
    pub origin: String,
    pub format: RuleFormat,
}

/// The language a rule is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleFormat {
    /// keytrail's own format (`docs/rules.md`).
    Keytrail,
    /// A Sigma rule (`logsource: product: aws, service: cloudtrail`).
    Sigma,
}

/// Largest rule file read.
pub const MAX_RULE_SIZE: usize = 1 << 20;
/// Deepest nesting of YAML collections a rule file may have (checked before parsing).
pub const MAX_YAML_DEPTH: usize = 48;

/// How deeply a YAML text nests collections, found without parsing it: the indentation
/// levels of block collections plus the brackets of flow ones. An over-estimate for odd
/// layouts, never an under-estimate, so a file this admits cannot make the parser recurse
/// deeper than this.
pub fn yaml_depth(text: &str) -> usize {
    let mut max = 0;
    let mut indents: Vec<usize> = Vec::new();
    for line in text.lines() {
        let body = line.trim_start_matches([' ', '-']);
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        // Each `- ` of a compact sequence (`- - x`) is a level of its own.
        let indent = line.len() - body.len();
        while indents.last().is_some_and(|&i| i >= indent && indent > 0) {
            indents.pop();
        }
        if indent == 0 {
            indents.clear();
        }
        indents.push(indent);
        let dashes = line[..indent].matches('-').count();
        let mut flow = 0usize;
        let mut deepest = 0usize;
        let mut quote: Option<char> = None;
        for c in body.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '[' | '{') => {
                    flow += 1;
                    deepest = deepest.max(flow);
                }
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                (None, '#') => break,
                _ => {}
            }
        }
        max = max.max(indents.len() + dashes + deepest);
    }
    max
}

/// Parse the text of a rule file into YAML, refusing what could exhaust the parser: files
/// over [`MAX_RULE_SIZE`], nesting deeper than [`MAX_YAML_DEPTH`], several documents.
pub fn yaml_of(text: &str) -> Result<Yaml, String> {
    if text.len() > MAX_RULE_SIZE {
        return Err(format!("larger than {} KiB", MAX_RULE_SIZE >> 10));
    }
    let depth = yaml_depth(text);
    if depth > MAX_YAML_DEPTH {
        return Err(format!(
            "nested {depth} levels deep (at most {MAX_YAML_DEPTH})"
        ));
    }
    // The YAML parser's time grows with the square of how deeply `[` and `{` nest, and a
    // flow collection may span lines (which the depth check reads one at a time): a rule
    // needs a few dozen, refuse thousands before parsing.
    if text.bytes().filter(|b| matches!(b, b'[' | b'{')).count() > MAX_FLOW_BRACKETS {
        return Err(format!(
            "more than {MAX_FLOW_BRACKETS} `[` and `{{`: refused before parsing"
        ));
    }
    let mut docs = Vec::new();
    for d in serde_yaml_ng::Deserializer::from_str(text) {
        let v = <Yaml as serde::Deserialize>::deserialize(d).map_err(|e| e.to_string())?;
        if !v.is_null() {
            docs.push(v);
        }
        if docs.len() > 1 {
            return Err("several YAML documents in one file (a Sigma rule collection or correlation): keytrail reads one rule per file".into());
        }
    }
    docs.pop().ok_or_else(|| "an empty file".to_owned())
}

/// A rule's fixture events (CloudTrail records, as JSON values).
#[derive(Clone, Debug, Default)]
pub struct RuleTests {
    pub positive: Vec<serde_json::Value>,
    pub negative: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    title: String,
    #[serde(default)]
    description: String,
    severity: String,
    category: String,
    #[serde(default)]
    references: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(rename = "match")]
    matcher: Yaml,
    #[serde(default)]
    show: Vec<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    service_events: bool,
    #[serde(default)]
    tests: RawTests,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTests {
    #[serde(default)]
    positive: Vec<Yaml>,
    #[serde(default)]
    negative: Vec<Yaml>,
}

/// The most `[` and `{` a rule file may hold (issue 13).
const MAX_FLOW_BRACKETS: usize = 4096;

impl Rule {
    /// Parse one rule file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Rule, RuleError> {
        let err = |reason: String| RuleError::Invalid {
            origin: origin.to_owned(),
            reason,
        };
        let doc = yaml_of(text).map_err(|reason| {
            // Refused for safety or shape, not broken: left out, the rest loads.
            if reason.starts_with("several YAML documents")
                || reason.starts_with("nested ")
                || reason.starts_with("larger than")
                || reason.starts_with("more than ")
            {
                RuleError::Unsupported {
                    origin: origin.to_owned(),
                    rule: None,
                    construct: reason,
                }
            } else {
                err(reason)
            }
        })?;
        if crate::sigma::is_sigma(&doc) {
            return crate::sigma::parse(&doc, origin).map_err(|crate::sigma::Unsupported(c)| {
                let rule = doc
                    .get("id")
                    .and_then(Yaml::as_str)
                    .or(doc.get("title").and_then(Yaml::as_str))
                    .map(str::to_owned);
                RuleError::Unsupported {
                    origin: origin.to_owned(),
                    rule,
                    construct: c,
                }
            });
        }
        let native = ["match", "severity", "category"]
            .iter()
            .any(|k| doc.get(*k).is_some());
        if !native {
            // A YAML file of a rule repository that is no rule (a configuration, a list):
            // left out and named, the rest loads. A keytrail rule with a broken or missing
            // `match` has its `severity`/`category` and stays an error below.
            return Err(RuleError::Unsupported {
                origin: origin.to_owned(),
                rule: None,
                construct: "not a rule: neither keytrail's `match` nor Sigma's `detection`".into(),
            });
        }
        let raw: RawRule = serde_yaml_ng::from_value(doc).map_err(|e| err(e.to_string()))?;
        let id_ok = !raw.id.is_empty()
            && raw
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !id_ok {
            return Err(err(format!(
                "id `{}` must be lower-case letters, digits and dashes",
                raw.id
            )));
        }
        let ctx = |reason: String| err(format!("rule {}: {reason}", raw.id));
        let severity: Severity = raw.severity.parse().map_err(ctx)?;
        if !CATEGORIES.contains(&raw.category.as_str()) {
            return Err(ctx(format!(
                "unknown category `{}`: use one of {}",
                raw.category,
                CATEGORIES.join(", ")
            )));
        }
        let cond = selection(&raw.matcher).map_err(|e| ctx(format!("match: {e}")))?;
        let mut show = Vec::new();
        for s in &raw.show {
            let f = FieldRef::parse(s).map_err(|e| ctx(format!("show: {e}")))?;
            show.push((s.clone(), f));
        }
        if let Some(r) = &raw.reason {
            let names = placeholders(r).map_err(|e| ctx(format!("reason: {e}")))?;
            for name in names
                .iter()
                .flat_map(|n| n.split('|'))
                .map(|n| n.trim().to_owned())
            {
                let f = FieldRef::parse(&name).map_err(|e| ctx(format!("reason: {e}")))?;
                if !show.iter().any(|(n, _)| *n == name) {
                    show.push((name, f));
                }
            }
        }
        let to_json = |v: &Yaml| {
            serde_json::to_value(v).map_err(|e| ctx(format!("tests: not a JSON event: {e}")))
        };
        let tests = RuleTests {
            positive: raw
                .tests
                .positive
                .iter()
                .map(to_json)
                .collect::<Result<_, _>>()?,
            negative: raw
                .tests
                .negative
                .iter()
                .map(to_json)
                .collect::<Result<_, _>>()?,
        };
        Ok(Rule {
            id: raw.id,
            title: raw.title,
            description: raw.description.trim().to_owned(),
            severity,
            category: raw.category,
            references: raw.references,
            tags: raw.tags,
            cond,
            show,
            reason: raw.reason,
            service_events: raw.service_events,
            tests,
            origin: origin.to_owned(),
            format: RuleFormat::Keytrail,
        })
    }

    /// Read a rule file.
    pub fn load(path: &Path) -> Result<Rule, RuleError> {
        let text = std::fs::read_to_string(path).map_err(|e| RuleError::Invalid {
            origin: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Rule::parse(&text, &path.display().to_string())
    }
}

/// The `{field}` names in a reason template.
pub fn placeholders(template: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in `{template}`"))?;
        out.push(after[..close].trim().to_owned());
        rest = &after[close + 1..];
    }
    Ok(out)
}

fn scalar_text(v: &Yaml) -> Result<String, String> {
    match v {
        Yaml::String(s) => Ok(s.clone()),
        Yaml::Bool(b) => Ok(b.to_string()),
        Yaml::Number(n) => Ok(n.to_string()),
        Yaml::Null => Err("a value is null (quote it: \"null\")".into()),
        _ => Err("expected a text, number or boolean value".into()),
    }
}

fn values(v: &Yaml) -> Result<Vec<String>, String> {
    match v {
        Yaml::Sequence(items) => {
            if items.is_empty() {
                return Err("an empty list of values".into());
            }
            items.iter().map(scalar_text).collect()
        }
        other => Ok(vec![scalar_text(other)?]),
    }
}

fn key_text(k: &Yaml) -> Result<String, String> {
    match k {
        Yaml::String(s) => Ok(s.clone()),
        other => Err(format!("a key must be text, found {other:?}")),
    }
}

/// A parsed `field|op|flag` key.
struct Key {
    field: String,
    op: Op,
    nocase: bool,
    all: bool,
    same_as: bool,
}

fn parse_key(key: &str) -> Result<Key, String> {
    let mut parts = key.split('|');
    let field = parts.next().unwrap_or_default().trim().to_owned();
    let mut op: Option<Op> = None;
    let mut same_as = false;
    let mut nocase = false;
    let mut all = false;
    for p in parts {
        let p = p.trim();
        match p {
            "nocase" | "i" => nocase = true,
            "all" => all = true,
            "same_as" => {
                if op.is_some() || same_as {
                    return Err(format!("`{key}`: more than one operator"));
                }
                same_as = true;
            }
            other => match Op::from_name(other) {
                Some(o) => {
                    if op.is_some() || same_as {
                        return Err(format!("`{key}`: more than one operator"));
                    }
                    op = Some(o);
                }
                None => {
                    return Err(format!(
                        "`{key}`: unknown operator or flag `{other}` (operators: equals, prefix, suffix, contains, regex, cidr, cidr_covers, gt, gte, lt, lte, exists, other_account, item, same_as; flags: nocase, all)"
                    ));
                }
            },
        }
    }
    Ok(Key {
        field,
        op: op.unwrap_or(Op::Equals),
        nocase,
        all,
        same_as,
    })
}

fn bool_value(v: &Yaml, key: &str) -> Result<bool, String> {
    match v {
        Yaml::Bool(b) => Ok(*b),
        _ => Err(format!("`{key}` takes true or false")),
    }
}

/// Check and normalise the values of a test.
fn test_of(
    path: Vec<String>,
    key: &Key,
    raw_key: &str,
    v: &Yaml,
    nested: bool,
) -> Result<JsonTest, String> {
    let mut op = key.op.clone();
    let mut vals = Vec::new();
    match &mut op {
        Op::Exists(b) => *b = bool_value(v, raw_key)?,
        Op::OtherAccount(b) => *b = bool_value(v, raw_key)?,
        Op::Item(c) => {
            if !nested && path.is_empty() {
                return Err(format!("`{raw_key}`: `item` needs a JSON field"));
            }
            **c = json_selection(v)?;
        }
        _ => {
            vals = values(v)?;
            match &op {
                Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
                    for x in &vals {
                        x.parse::<f64>()
                            .map_err(|_| format!("`{raw_key}`: `{x}` is not a number"))?;
                    }
                }
                Op::Cidr | Op::CidrCovers => {
                    for x in &vals {
                        Cidr::parse(x).ok_or_else(|| {
                            format!("`{raw_key}`: `{x}` is not an address or a network")
                        })?;
                    }
                }
                Op::Regex => {
                    for x in &vals {
                        let pattern = if key.nocase {
                            format!("(?i){x}")
                        } else {
                            x.clone()
                        };
                        regex::Regex::new(&pattern)
                            .map_err(|e| format!("`{raw_key}`: bad regex `{x}`: {e}"))?;
                    }
                }
                _ => {}
            }
            if key.nocase && !matches!(op, Op::Regex) {
                vals = vals.into_iter().map(|x| x.to_lowercase()).collect();
            }
        }
    }
    Ok(JsonTest {
        path,
        op,
        nocase: key.nocase,
        all: key.all,
        values: vals,
    })
}

/// A `match` mapping: every entry must hold (`all`, `any` and `not` combine selections).
pub fn selection(v: &Yaml) -> Result<Cond, String> {
    let map = match v {
        Yaml::Mapping(m) => m,
        _ => return Err("a selection must be a mapping of field: value".into()),
    };
    if map.is_empty() {
        return Err("an empty selection".into());
    }
    let mut out = Vec::new();
    for (k, val) in map {
        let k = key_text(k)?;
        match k.as_str() {
            "all" => out.push(Cond::All(list_of(val, selection)?)),
            "any" => out.push(Cond::Any(list_of(val, selection)?)),
            "not" => out.push(Cond::Not(Box::new(match val {
                Yaml::Sequence(_) => Cond::Any(list_of(val, selection)?),
                _ => selection(val)?,
            }))),
            _ => out.push(entry(&k, val)?),
        }
    }
    Ok(if out.len() == 1 {
        out.pop().unwrap_or(Cond::All(Vec::new()))
    } else {
        Cond::All(out)
    })
}

fn list_of<T>(v: &Yaml, f: fn(&Yaml) -> Result<T, String>) -> Result<Vec<T>, String> {
    match v {
        Yaml::Sequence(items) if !items.is_empty() => items.iter().map(f).collect(),
        _ => Err("`all`, `any` and `not` take a list of selections".into()),
    }
}

fn entry(raw_key: &str, v: &Yaml) -> Result<Cond, String> {
    let key = parse_key(raw_key)?;
    let field = FieldRef::parse(&key.field)?;
    if key.same_as {
        let other = match v {
            Yaml::String(s) => FieldRef::parse(s)?,
            _ => return Err(format!("`{raw_key}` takes the name of another field")),
        };
        return Ok(Cond::SameAs {
            left: field,
            right: other,
            nocase: key.nocase,
        });
    }
    match field {
        FieldRef::Column { path, boolean } => {
            if matches!(key.op, Op::Item(_)) {
                return Err(format!("`{raw_key}`: `item` works on JSON fields only"));
            }
            if boolean && !matches!(key.op, Op::Equals | Op::Exists(_)) {
                return Err(format!(
                    "`{raw_key}`: a boolean column takes equals or exists"
                ));
            }
            let test = test_of(Vec::new(), &key, raw_key, v, false)?;
            if boolean && test.values.iter().any(|x| x != "true" && x != "false") {
                return Err(format!("`{raw_key}` takes true or false"));
            }
            Ok(Cond::Column {
                path,
                boolean,
                test,
            })
        }
        FieldRef::Json { column, path } => {
            let test = test_of(path, &key, raw_key, v, false)?;
            Ok(Cond::Json { column, test })
        }
    }
}

/// A selection inside `item`: keys are paths relative to the element.
fn json_selection(v: &Yaml) -> Result<JsonCond, String> {
    let map = match v {
        Yaml::Mapping(m) if !m.is_empty() => m,
        _ => return Err("`item` takes a mapping of path: value".into()),
    };
    let mut out = Vec::new();
    for (k, val) in map {
        let k = key_text(k)?;
        match k.as_str() {
            "all" => out.push(JsonCond::All(list_of(val, json_selection)?)),
            "any" => out.push(JsonCond::Any(list_of(val, json_selection)?)),
            "not" => out.push(JsonCond::Not(Box::new(match val {
                Yaml::Sequence(_) => JsonCond::Any(list_of(val, json_selection)?),
                _ => json_selection(val)?,
            }))),
            _ => {
                let key = parse_key(&k)?;
                if key.same_as {
                    return Err(format!("`{k}`: same_as is not available inside `item`"));
                }
                let path: Vec<String> = key.field.split('.').map(str::to_owned).collect();
                if path.iter().any(String::is_empty) {
                    return Err(format!("`{k}` is not a path"));
                }
                out.push(JsonCond::Test(test_of(path, &key, &k, val, true)?));
            }
        }
    }
    Ok(if out.len() == 1 {
        out.pop().unwrap_or(JsonCond::All(Vec::new()))
    } else {
        JsonCond::All(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_resolve_without_regard_to_column_case() {
        assert_eq!(
            FieldRef::parse("userIdentity.sessionContext.ec2RoleDelivery").expect("field"),
            FieldRef::Column {
                path: vec![
                    "useridentity".into(),
                    "sessioncontext".into(),
                    "ec2roledelivery".into()
                ],
                boolean: false
            }
        );
        assert_eq!(
            FieldRef::parse("requestParameters.policyArn").expect("field"),
            FieldRef::Json {
                column: "requestparameters".into(),
                path: vec!["policyArn".into()]
            }
        );
        assert!(FieldRef::parse("useridentity.nothing").is_err());
        assert!(FieldRef::parse("requestparameters..x").is_err());
    }

    #[test]
    fn a_rule_parses_and_bad_ones_say_why() {
        let text = r#"
id: t-one
title: One
severity: high
category: recon
match:
  eventName: [A, B]
  useragent|contains|nocase: Kali
  not:
    errorCode|exists: true
  requestParameters.count|gte: 10
reason: "{requestParameters.userName} did it"
tests:
  positive:
    - eventName: A
"#;
        let r = Rule::parse(text, "t.yaml").expect("parses");
        assert_eq!(r.severity, Severity::High);
        assert_eq!(r.show.len(), 1);
        assert_eq!(r.tests.positive.len(), 1);
        let Cond::All(parts) = &r.cond else {
            panic!("all")
        };
        assert_eq!(parts.len(), 4);
        let Cond::Column { test, .. } = &parts[1] else {
            panic!("column")
        };
        assert_eq!(test.values, vec!["kali".to_owned()]);

        for (bad, says) in [
            ("severity: urgent", "unknown severity"),
            ("category: misc", "unknown category"),
            ("match: {eventName|like: x}", "unknown operator"),
            ("match: {requestParameters.n|gt: ten}", "not a number"),
            (
                "match: {sourceIPAddress|cidr: 10.0.0.0/33}",
                "not an address",
            ),
            ("match: {nosuchfield: x}", "unknown field"),
            ("match: {useragent|regex: '('}", "bad regex"),
        ] {
            let mut t = String::from(
                "id: t-bad\ntitle: x\nseverity: low\ncategory: recon\nmatch: {eventName: x}\n",
            );
            let key = bad.split(':').next().unwrap_or_default();
            t = t
                .lines()
                .filter(|l| !l.starts_with(key))
                .collect::<Vec<_>>()
                .join("\n");
            t.push('\n');
            t.push_str(bad);
            t.push('\n');
            let e = Rule::parse(&t, "bad.yaml").expect_err(bad).to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.contains("bad.yaml"), "{e}");
        }
    }

    #[test]
    fn a_file_that_is_no_rule_is_left_out_but_a_rule_without_match_is_broken() {
        // A configuration file of a rule repository: left out, named.
        let e = Rule::parse("ignored_rules: [a, b]\n", "config.yaml").expect_err("not a rule");
        assert!(
            matches!(&e, RuleError::Unsupported { construct, .. } if construct.starts_with("not a rule")),
            "{e}"
        );
        // A keytrail rule whose `match` is misspelt: an error that stops loading.
        let e = Rule::parse(
            "id: t-typo\ntitle: x\nseverity: low\ncategory: recon\nmatches: {eventName: x}\n",
            "typo.yaml",
        )
        .expect_err("broken rule");
        assert!(matches!(&e, RuleError::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("match"), "{e}");
    }

    #[test]
    fn flow_collections_spanning_lines_are_refused_before_parsing() {
        // One `[` a line: the depth check reads lines one at a time; the count catches it.
        let text = format!(
            "title: x\nlogsource: {{product: aws, service: cloudtrail}}\ndetection:\n  s:\n    eventName: {}x{}\n  condition: s\n",
            "[\n".repeat(5000),
            "]".repeat(5000)
        );
        let e = Rule::parse(&text, "flow.yml").expect_err("refused");
        assert!(
            matches!(&e, RuleError::Unsupported { construct, .. } if construct.contains("refused before parsing")),
            "{e}"
        );
    }
}
