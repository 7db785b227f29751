//! Sigma rules (<https://sigmahq.io>) for CloudTrail, compiled into the same condition model as
//! keytrail's own rules, so they run in the same single scan of the lake.
//!
//! What is read: `logsource` (must be `product: aws`, `service: cloudtrail`), `detection`
//! (named selections: a mapping is AND, a list of mappings is OR, a list of values is OR),
//! field paths into the event (`userIdentity.type`, `requestParameters.x`, `errorCode`, ...;
//! columns without regard to case, JSON keys as written), values with `*`/`?` wildcards,
//! compared without regard to case as Sigma defines, `null`, the modifiers `contains`,
//! `startswith`, `endswith`, `all`, `re` (with `i`, `m`, `s`), `cidr`, `exists`, `base64`,
//! `base64offset`, `cased`, `gt`/`gte`/`lt`/`lte` and `fieldref`, and conditions with
//! `and`/`or`/`not`, parentheses and `1 of`/`any of`/`all of` over names, wildcards and
//! `them`. `level` becomes the severity, `tags` (ATT&CK) go into findings, and a `tests`
//! member (keytrail's extension; Sigma allows custom members) holds positive and negative
//! events like keytrail's own rules.
//!
//! What cannot run is refused with the construct named ([`Unsupported`]): aggregations
//! (`| count() ...`), `near`, correlation rules, keyword searches (values without a field),
//! other log sources, unknown modifiers and fields the lake does not have.

use serde_yaml_ng::{Mapping, Value as Yaml};

use crate::net::Cidr;
use crate::rule::{Cond, FieldRef, JsonTest, Op, Rule, RuleFormat, RuleTests, Severity};

/// A Sigma construct keytrail cannot run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported(pub String);

type R<T> = Result<T, Unsupported>;

fn no<T>(what: impl Into<String>) -> R<T> {
    Err(Unsupported(what.into()))
}

/// Whether a parsed YAML document is a Sigma rule (it has a `detection`, a `correlation` or
/// a `logsource`).
pub fn is_sigma(doc: &Yaml) -> bool {
    doc.as_mapping().is_some_and(|m| {
        ["detection", "correlation", "logsource"]
            .iter()
            .any(|k| m.contains_key(Yaml::from(*k)))
    })
}

/// The ATT&CK tactics, as Sigma tags name them (`attack.defense-evasion`).
pub const TACTICS: [&str; 14] = [
    "reconnaissance",
    "resource-development",
    "initial-access",
    "execution",
    "persistence",
    "privilege-escalation",
    "defense-evasion",
    "credential-access",
    "discovery",
    "lateral-movement",
    "collection",
    "command-and-control",
    "exfiltration",
    "impact",
];

fn text(m: &Mapping, key: &str) -> Option<String> {
    match m.get(Yaml::from(key))? {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn texts(m: &Mapping, key: &str) -> Vec<String> {
    match m.get(Yaml::from(key)) {
        Some(Yaml::Sequence(v)) => v
            .iter()
            .filter_map(|x| match x {
                Yaml::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        Some(Yaml::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// An id for a rule without one: the file's stem, lower-cased, other characters as dashes.
fn id_from(origin: &str) -> String {
    let file = origin.rsplit(['/', '\\']).next().unwrap_or(origin);
    let stem = file
        .strip_suffix(".yml")
        .or_else(|| file.strip_suffix(".yaml"))
        .unwrap_or(file);
    stem.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

fn severity_of(level: Option<&str>) -> R<Severity> {
    Ok(
        match level.map(|l| l.trim().to_ascii_lowercase()).as_deref() {
            None => Severity::Medium,
            Some("informational") | Some("info") => Severity::Info,
            Some("low") => Severity::Low,
            Some("medium") => Severity::Medium,
            Some("high") => Severity::High,
            Some("critical") => Severity::Critical,
            Some(other) => return no(format!("level `{other}`")),
        },
    )
}

/// The rule's category: its first ATT&CK tactic tag, else `sigma`.
fn category_of(tags: &[String]) -> String {
    tags.iter()
        .filter_map(|t| t.strip_prefix("attack."))
        .find(|t| TACTICS.contains(t))
        .map_or_else(|| "sigma".to_owned(), str::to_owned)
}

/// Parse a Sigma rule document; `Err` names what keytrail cannot run (or what is missing).
pub fn parse(doc: &Yaml, origin: &str) -> Result<Rule, Unsupported> {
    let m = doc
        .as_mapping()
        .ok_or_else(|| Unsupported("a rule that is not a mapping".into()))?;
    if m.contains_key(Yaml::from("correlation")) {
        return no("a correlation rule (`correlation:`)");
    }
    let logsource = m
        .get(Yaml::from("logsource"))
        .and_then(Yaml::as_mapping)
        .ok_or_else(|| Unsupported("no `logsource`".into()))?;
    let product = text(logsource, "product")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let service = text(logsource, "service")
        .unwrap_or_default()
        .to_ascii_lowercase();
    if product != "aws" || service != "cloudtrail" {
        let mut parts = Vec::new();
        for k in ["product", "service", "category"] {
            if let Some(v) = text(logsource, k) {
                parts.push(format!("{k}: {v}"));
            }
        }
        return no(format!(
            "log source `{}` (keytrail reads product: aws, service: cloudtrail)",
            parts.join(", ")
        ));
    }
    let detection = m
        .get(Yaml::from("detection"))
        .ok_or_else(|| Unsupported("no `detection`".into()))?
        .as_mapping()
        .ok_or_else(|| Unsupported("`detection` is not a mapping".into()))?;
    let mut selections: Vec<(String, Cond)> = Vec::new();
    let mut condition: Option<&Yaml> = None;
    for (k, v) in detection {
        let Some(name) = k.as_str() else {
            return no("a selection name that is not text");
        };
        match name {
            "condition" => condition = Some(v),
            "timeframe" => return no("`timeframe` (aggregation over time)"),
            _ => {
                let c = selection(v)
                    .map_err(|Unsupported(e)| Unsupported(format!("selection `{name}`: {e}")))?;
                selections.push((name.to_owned(), c));
            }
        }
    }
    let condition = condition.ok_or_else(|| Unsupported("no `condition`".into()))?;
    let conds: Vec<String> = match condition {
        Yaml::String(s) => vec![s.clone()],
        Yaml::Sequence(v) => v
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| Unsupported("a condition that is not text".into()))
            })
            .collect::<R<_>>()?,
        _ => return no("a condition that is not text"),
    };
    if conds.is_empty() {
        return no("an empty condition");
    }
    let mut alts = Vec::new();
    for c in &conds {
        alts.push(
            condition_of(c, &selections)
                .map_err(|Unsupported(e)| Unsupported(format!("condition `{c}`: {e}")))?,
        );
    }
    let cond = if alts.len() == 1 {
        alts.pop().unwrap_or(Cond::Any(Vec::new()))
    } else {
        Cond::Any(alts)
    };
    let tags = texts(m, "tags");
    let id = text(m, "id")
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
        .unwrap_or_else(|| id_from(origin));
    let title = text(m, "title").unwrap_or_else(|| id.clone());
    let mut show = Vec::new();
    for f in texts(m, "fields") {
        if let Ok(r) = FieldRef::parse(&f) {
            show.push((f, r));
        }
    }
    let tests = tests_of(m.get(Yaml::from("tests")))?;
    Ok(Rule {
        id,
        title,
        description: text(m, "description").unwrap_or_default().trim().to_owned(),
        severity: severity_of(text(m, "level").as_deref())?,
        category: category_of(&tags),
        references: texts(m, "references"),
        tags,
        cond,
        show,
        reason: None,
        service_events: false,
        tests,
        origin: origin.to_owned(),
        format: RuleFormat::Sigma,
    })
}

fn tests_of(v: Option<&Yaml>) -> R<RuleTests> {
    let Some(v) = v else {
        return Ok(RuleTests::default());
    };
    let m = v
        .as_mapping()
        .ok_or_else(|| Unsupported("`tests` is not a mapping of positive and negative".into()))?;
    let mut out = RuleTests::default();
    for (k, list) in m {
        let events = match list {
            Yaml::Sequence(items) => items
                .iter()
                .map(|x| {
                    serde_json::to_value(x)
                        .map_err(|e| Unsupported(format!("tests: not a JSON event: {e}")))
                })
                .collect::<R<Vec<_>>>()?,
            _ => return no("tests: `positive` and `negative` take lists of events"),
        };
        match k.as_str() {
            Some("positive") => out.positive = events,
            Some("negative") => out.negative = events,
            _ => return no("tests: only `positive` and `negative`"),
        }
    }
    Ok(out)
}

/// A named selection: a mapping (every entry holds) or a list of mappings (one of them
/// holds).
fn selection(v: &Yaml) -> R<Cond> {
    match v {
        Yaml::Mapping(m) => map_selection(m),
        Yaml::Sequence(items) if !items.is_empty() => {
            if items.iter().all(|i| matches!(i, Yaml::Mapping(_))) {
                let alts = items
                    .iter()
                    .map(|i| map_selection(i.as_mapping().unwrap_or(&Mapping::new())))
                    .collect::<R<Vec<_>>>()?;
                Ok(Cond::Any(alts))
            } else {
                no("a keyword search (values without a field)")
            }
        }
        Yaml::String(_) | Yaml::Number(_) => no("a keyword search (values without a field)"),
        _ => no("a selection that is neither a mapping nor a list of mappings"),
    }
}

fn map_selection(m: &Mapping) -> R<Cond> {
    if m.is_empty() {
        return no("an empty selection");
    }
    let mut parts = Vec::new();
    for (k, v) in m {
        let Some(k) = k.as_str() else {
            return no("a field name that is not text");
        };
        parts.push(field_entry(k, v)?);
    }
    Ok(if parts.len() == 1 {
        parts.pop().unwrap_or(Cond::All(Vec::new()))
    } else {
        Cond::All(parts)
    })
}

/// How a Sigma value is compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Plain,
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Default)]
struct Mods {
    kind: Option<Kind>,
    all: bool,
    re: bool,
    re_i: bool,
    re_m: bool,
    re_s: bool,
    cidr: bool,
    exists: bool,
    base64: bool,
    base64offset: bool,
    cased: bool,
    cmp: Option<Op>,
    fieldref: bool,
}

fn mods_of(list: &[&str]) -> R<Mods> {
    let mut m = Mods::default();
    for raw in list {
        let x = raw.trim();
        match x {
            "contains" => m.kind = Some(Kind::Contains),
            "startswith" => m.kind = Some(Kind::StartsWith),
            "endswith" => m.kind = Some(Kind::EndsWith),
            "all" => m.all = true,
            "re" => m.re = true,
            "i" if m.re => m.re_i = true,
            "m" if m.re => m.re_m = true,
            "s" if m.re => m.re_s = true,
            "cidr" => m.cidr = true,
            "exists" => m.exists = true,
            "base64" => m.base64 = true,
            "base64offset" => m.base64offset = true,
            "cased" => m.cased = true,
            "gt" => m.cmp = Some(Op::Gt),
            "gte" => m.cmp = Some(Op::Gte),
            "lt" => m.cmp = Some(Op::Lt),
            "lte" => m.cmp = Some(Op::Lte),
            "fieldref" => m.fieldref = true,
            other => return no(format!("modifier `{other}`")),
        }
    }
    if m.base64 && m.base64offset {
        return no("modifiers `base64` and `base64offset` together");
    }
    Ok(m)
}

fn scalar(v: &Yaml) -> R<Option<String>> {
    Ok(match v {
        Yaml::Null => None,
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => return no("a value that is not text, a number, a boolean or null"),
    })
}

/// A Sigma string value split into literal text and wildcards.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Star,
    One,
}

fn pieces(s: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some('*') | Some('?') | Some('\\') => {
                    cur.push(chars.next().unwrap_or('\\'));
                }
                _ => cur.push('\\'),
            },
            '*' | '?' => {
                if !cur.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut cur)));
                }
                out.push(if c == '*' { Piece::Star } else { Piece::One });
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(Piece::Text(cur));
    }
    out
}

/// The operator and operand a wildcard value needs: `x` equals, `x*` prefix, `*x` suffix,
/// `*x*` contains, anything else a glob (`Op::Glob`, with the raw Sigma pattern).
fn simple(p: &[Piece], raw: &str) -> (Op, String) {
    use Piece::*;
    match p {
        [] => (Op::Equals, String::new()),
        [Text(t)] => (Op::Equals, t.clone()),
        [Text(t), Star] => (Op::Prefix, t.clone()),
        [Star, Text(t)] => (Op::Suffix, t.clone()),
        [Star, Text(t), Star] => (Op::Contains, t.clone()),
        [Star] | [Star, Star] => (Op::Exists(true), String::new()),
        _ => (Op::Glob, raw.to_owned()),
    }
}

fn b64(bytes: &[u8]) -> String {
    data_encoding::BASE64.encode(bytes)
}

/// Sigma's `base64offset`: the three encodings of `v` at every byte offset, trimmed to the
/// characters that do not depend on the neighbours.
fn base64_offsets(v: &str) -> Vec<String> {
    const START: [usize; 3] = [0, 2, 3];
    const END: [usize; 3] = [0, 3, 2];
    (0..3)
        .map(|i| {
            let mut bytes = vec![b' '; i];
            bytes.extend_from_slice(v.as_bytes());
            let enc = b64(&bytes);
            let trim = END[(v.len() + i) % 3];
            let end = enc.len().saturating_sub(trim);
            enc.get(START[i]..end).unwrap_or_default().to_owned()
        })
        .collect()
}

fn field_entry(key: &str, v: &Yaml) -> R<Cond> {
    let mut parts = key.split('|');
    let field = parts.next().unwrap_or_default().trim();
    let mods: Vec<&str> = parts.collect();
    if field.is_empty() {
        return no("a keyword search (modifiers without a field)");
    }
    let m = mods_of(&mods)?;
    let fref = FieldRef::parse(field).map_err(|_| {
        Unsupported(format!(
            "field `{field}` (not a column or JSON path of the lake)"
        ))
    })?;
    let raw_values: Vec<Option<String>> = match v {
        Yaml::Sequence(items) => {
            if items.is_empty() {
                return no(format!("`{key}`: an empty list"));
            }
            items.iter().map(scalar).collect::<R<_>>()?
        }
        other => vec![scalar(other)?],
    };
    if m.exists {
        let [Some(b)] = raw_values.as_slice() else {
            return no(format!("`{key}`: exists takes true or false"));
        };
        let want = match b.as_str() {
            "true" => true,
            "false" => false,
            _ => return no(format!("`{key}`: exists takes true or false")),
        };
        return Ok(leaf(
            &fref,
            test(Op::Exists(want), false, false, Vec::new()),
        ));
    }
    if m.fieldref {
        let mut alts = Vec::new();
        for v in &raw_values {
            let Some(other) = v else {
                return no(format!("`{key}`: fieldref to null"));
            };
            let right = FieldRef::parse(other)
                .map_err(|_| Unsupported(format!("fieldref to unknown field `{other}`")))?;
            alts.push(Cond::SameAs {
                left: fref.clone(),
                right,
                nocase: !m.cased,
            });
        }
        return Ok(combine(alts, m.all));
    }
    let mut alts = Vec::new();
    let mut nulls = false;
    for v in &raw_values {
        let Some(v) = v else {
            nulls = true;
            continue;
        };
        alts.push(value_test(&fref, key, &m, v)?);
    }
    if nulls {
        alts.push(leaf(
            &fref,
            test(Op::Exists(false), false, false, Vec::new()),
        ));
    }
    if let FieldRef::Column { boolean: true, .. } = &fref {
        for a in &alts {
            let ok = match a {
                Cond::Column { test, .. } => {
                    matches!(test.op, Op::Exists(_))
                        || (test.op == Op::Equals
                            && test.values.iter().all(|x| x == "true" || x == "false"))
                }
                _ => false,
            };
            if !ok {
                return no(format!(
                    "`{key}`: a true/false field takes true, false or null"
                ));
            }
        }
    }
    Ok(combine(alts, m.all))
}

fn combine(mut alts: Vec<Cond>, all: bool) -> Cond {
    if alts.len() == 1 {
        return alts.pop().unwrap_or(Cond::Any(Vec::new()));
    }
    if all {
        Cond::All(alts)
    } else {
        Cond::Any(alts)
    }
}

fn test(op: Op, nocase: bool, all: bool, values: Vec<String>) -> JsonTest {
    JsonTest {
        path: Vec::new(),
        op,
        nocase,
        all,
        values,
    }
}

fn leaf(f: &FieldRef, mut t: JsonTest) -> Cond {
    match f {
        FieldRef::Column { path, boolean } => Cond::Column {
            path: path.clone(),
            boolean: *boolean,
            test: t,
        },
        FieldRef::Json { column, path } => {
            t.path = path.clone();
            Cond::Json {
                column: column.clone(),
                test: t,
            }
        }
    }
}

/// One non-null value of a field entry.
fn value_test(f: &FieldRef, key: &str, m: &Mods, v: &str) -> R<Cond> {
    if let Some(op) = &m.cmp {
        v.trim()
            .parse::<f64>()
            .map_err(|_| Unsupported(format!("`{key}`: `{v}` is not a number")))?;
        return Ok(leaf(
            f,
            test(op.clone(), false, false, vec![v.trim().to_owned()]),
        ));
    }
    if m.cidr {
        Cidr::parse(v).ok_or_else(|| Unsupported(format!("`{key}`: `{v}` is not a network")))?;
        return Ok(leaf(f, test(Op::Cidr, false, false, vec![v.to_owned()])));
    }
    if m.re {
        let mut flags = String::new();
        if m.re_m {
            flags.push('m');
        }
        if m.re_s {
            flags.push('s');
        }
        let pattern = if flags.is_empty() {
            v.to_owned()
        } else {
            format!("(?{flags}){v}")
        };
        let check = if m.re_i {
            format!("(?i){pattern}")
        } else {
            pattern.clone()
        };
        regex::Regex::new(&check).map_err(|e| {
            Unsupported(format!(
                "`{key}`: a regular expression Rust's regex cannot run: {}",
                e.to_string().lines().last().unwrap_or_default()
            ))
        })?;
        return Ok(leaf(f, test(Op::Regex, m.re_i, false, vec![pattern])));
    }
    if m.base64 || m.base64offset {
        // The encoded text is compared as it is (base64 is case-sensitive).
        let encoded = if m.base64 {
            vec![b64(v.as_bytes())]
        } else {
            base64_offsets(v)
        };
        let op = match m.kind.unwrap_or(Kind::Plain) {
            Kind::Plain if m.base64offset => Op::Contains,
            Kind::Plain => Op::Equals,
            Kind::Contains => Op::Contains,
            Kind::StartsWith => Op::Prefix,
            Kind::EndsWith => Op::Suffix,
        };
        return Ok(leaf(f, test(op, false, false, encoded)));
    }
    // Sigma's wildcards, around the modifier's own.
    let pattern = match m.kind.unwrap_or(Kind::Plain) {
        Kind::Plain => v.to_owned(),
        Kind::Contains => format!("*{v}*"),
        Kind::StartsWith => format!("{v}*"),
        Kind::EndsWith => format!("*{v}"),
    };
    let ps = pieces(&pattern);
    let nocase = !m.cased;
    let (op, operand) = simple(&ps, &pattern);
    let operand = if nocase && op != Op::Glob {
        operand.to_lowercase()
    } else {
        operand
    };
    let values = if matches!(op, Op::Exists(_)) {
        Vec::new()
    } else {
        vec![operand]
    };
    Ok(leaf(f, test(op, nocase, false, values)))
}

/// The regular expression of a Sigma glob (`*` any text, `?` one character, `\` escapes).
pub fn glob_regex(glob: &str) -> String {
    let mut re = String::from("^");
    for p in pieces(glob) {
        match p {
            Piece::Text(t) => re.push_str(&regex::escape(&t)),
            Piece::Star => re.push_str("(?s:.*)"),
            Piece::One => re.push_str("(?s:.)"),
        }
    }
    re.push('$');
    re
}

// ---- conditions -------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    And,
    Or,
    Not,
    Open,
    Close,
    /// `1 of`, `any of` (false) or `all of` (true).
    Of(bool),
    Them,
    Name(String),
}

fn tokens(s: &str) -> R<Vec<Tok>> {
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' | ')' => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                words.push(c.to_string());
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            '|' => return no("an aggregation (`| count() ...`)"),
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut i = 0;
    while i < words.len() {
        let w = words[i].as_str();
        let lower = w.to_ascii_lowercase();
        let next_of = words
            .get(i + 1)
            .is_some_and(|n| n.eq_ignore_ascii_case("of"));
        match lower.as_str() {
            "and" => out.push(Tok::And),
            "or" => out.push(Tok::Or),
            "not" => out.push(Tok::Not),
            "(" => out.push(Tok::Open),
            ")" => out.push(Tok::Close),
            "near" => return no("`near` (temporal proximity)"),
            "them" => out.push(Tok::Them),
            "1" | "any" if next_of => {
                out.push(Tok::Of(false));
                i += 1;
            }
            "all" if next_of => {
                out.push(Tok::Of(true));
                i += 1;
            }
            _ if next_of => return no(format!("`{w} of` (only 1, any and all)")),
            _ => out.push(Tok::Name(w.to_owned())),
        }
        i += 1;
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    sels: &'a [(String, Cond)],
    depth: usize,
}

/// Deepest nesting of parentheses and `not` a condition may have.
const MAX_DEPTH: usize = 64;

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn or(&mut self) -> R<Cond> {
        let mut alts = vec![self.and()?];
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            alts.push(self.and()?);
        }
        Ok(combine(alts, false))
    }

    fn and(&mut self) -> R<Cond> {
        let mut parts = vec![self.unary()?];
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            parts.push(self.unary()?);
        }
        Ok(combine(parts, true))
    }

    fn unary(&mut self) -> R<Cond> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return no("a condition nested too deeply");
        }
        let tok = self.toks.get(self.pos).cloned();
        self.pos += 1;
        let out = match tok {
            Some(Tok::Not) => Cond::Not(Box::new(self.unary()?)),
            Some(Tok::Open) => {
                let inner = self.or()?;
                if self.peek() != Some(&Tok::Close) {
                    return no("an unclosed `(`");
                }
                self.pos += 1;
                inner
            }
            Some(Tok::Of(all)) => {
                let target = self.toks.get(self.pos).cloned();
                self.pos += 1;
                let chosen: Vec<Cond> = match target {
                    Some(Tok::Them) => self
                        .sels
                        .iter()
                        .filter(|(n, _)| !n.starts_with('_'))
                        .map(|(_, c)| c.clone())
                        .collect(),
                    Some(Tok::Name(pat)) => {
                        let re = regex::Regex::new(&glob_regex(&pat))
                            .map_err(|_| Unsupported(format!("the pattern `{pat}`")))?;
                        let v: Vec<Cond> = self
                            .sels
                            .iter()
                            .filter(|(n, _)| re.is_match(n))
                            .map(|(_, c)| c.clone())
                            .collect();
                        if v.is_empty() {
                            return no(format!("no selection matches `{pat}`"));
                        }
                        v
                    }
                    _ => return no("`of` without a selection name or `them`"),
                };
                if chosen.is_empty() {
                    return no("`of them` with no selections");
                }
                combine(chosen, all)
            }
            Some(Tok::Name(n)) => match self.sels.iter().find(|(s, _)| *s == n) {
                Some((_, c)) => c.clone(),
                None => return no(format!("unknown selection `{n}`")),
            },
            Some(t) => return no(format!("unexpected `{t:?}`")),
            None => return no("a condition that ends too early"),
        };
        self.depth -= 1;
        Ok(out)
    }
}

fn condition_of(text: &str, sels: &[(String, Cond)]) -> R<Cond> {
    let toks = tokens(text)?;
    if toks.is_empty() {
        return no("an empty condition");
    }
    let mut p = Parser {
        toks,
        pos: 0,
        sels,
        depth: 0,
    };
    let c = p.or()?;
    if p.pos != p.toks.len() {
        return no(format!("unexpected text after position {}", p.pos));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(detection: &str) -> Result<Rule, Unsupported> {
        let text = format!(
            "title: t\nid: 8a4b5c6d-0000-4000-8000-000000000001\nlogsource: {{product: aws, service: cloudtrail}}\nlevel: high\ntags: [attack.defense-evasion, attack.t1562.008]\ndetection:\n{detection}"
        );
        let doc: Yaml = serde_yaml_ng::from_str(&text).expect("yaml");
        parse(&doc, "t.yml")
    }

    #[test]
    fn wildcards_become_the_cheapest_operator() {
        let p = |s: &str| simple(&pieces(s), s);
        assert_eq!(p("abc"), (Op::Equals, "abc".into()));
        assert_eq!(p("abc*"), (Op::Prefix, "abc".into()));
        assert_eq!(p("*abc"), (Op::Suffix, "abc".into()));
        assert_eq!(p("*abc*"), (Op::Contains, "abc".into()));
        assert_eq!(p("a*c").0, Op::Glob);
        assert_eq!(p("a?c").0, Op::Glob);
        assert_eq!(p(r"a\*c"), (Op::Equals, "a*c".into()));
        assert_eq!(glob_regex(r"a*b?c\*"), r"^a(?s:.*)b(?s:.)c\*$");
    }

    #[test]
    fn base64offset_gives_sigmas_three_encodings() {
        // pySigma's documented example: `/bin/bash`.
        assert_eq!(
            base64_offsets("/bin/bash"),
            vec!["L2Jpbi9iYXNo", "9iaW4vYmFza", "vYmluL2Jhc2"]
        );
    }

    #[test]
    fn metadata_and_conditions() {
        let r = rule("  sel_a: {eventName: StopLogging}\n  sel_b: {eventName: DeleteTrail}\n  filter: {userAgent|contains: terraform}\n  condition: 1 of sel_* and not filter\n").expect("rule");
        assert_eq!(r.severity, Severity::High);
        assert_eq!(r.category, "defense-evasion");
        assert_eq!(r.format, RuleFormat::Sigma);
        let Cond::All(parts) = &r.cond else {
            panic!("{:?}", r.cond)
        };
        assert!(matches!(&parts[0], Cond::Any(v) if v.len() == 2));
        assert!(matches!(&parts[1], Cond::Not(_)));
    }

    #[test]
    fn what_cannot_run_is_named() {
        for (detection, says) in [
            (
                "  sel: {eventName: x}\n  condition: sel | count() by userIdentity.arn > 5\n",
                "aggregation",
            ),
            (
                "  sel: {eventName: x}\n  condition: sel near other\n",
                "near",
            ),
            (
                "  sel: [StopLogging, DeleteTrail]\n  condition: sel\n",
                "keyword search",
            ),
            (
                "  sel: {eventName|windash: x}\n  condition: sel\n",
                "modifier `windash`",
            ),
            (
                "  sel: {noSuchField: x}\n  condition: sel\n",
                "field `noSuchField`",
            ),
            (
                "  sel: {eventName: x}\n  condition: sel and other\n",
                "unknown selection `other`",
            ),
            ("  sel: {eventName: x}\n  condition: 2 of sel\n", "`2 of`"),
            (
                "  sel: {eventName: x}\n  timeframe: 5m\n  condition: sel\n",
                "timeframe",
            ),
            (
                "  sel: {userAgent|re: '(?<=x)y'}\n  condition: sel\n",
                "regular expression",
            ),
            ("  sel: {eventName: x}\n  condition: (sel\n", "unclosed"),
        ] {
            let e = rule(detection).expect_err(detection).0;
            assert!(e.contains(says), "{detection}: {e}");
        }
        let deep = format!(
            "  sel: {{eventName: x}}\n  condition: {}sel{}\n",
            "(".repeat(200),
            ")".repeat(200)
        );
        assert!(
            rule(&deep)
                .expect_err("deep")
                .0
                .contains("nested too deeply")
        );
        let doc: Yaml = serde_yaml_ng::from_str(
            "title: t\nlogsource: {product: azure, service: activitylogs}\ndetection: {sel: {a: b}, condition: sel}\n",
        )
        .expect("yaml");
        assert!(
            parse(&doc, "x.yml")
                .expect_err("azure")
                .0
                .contains("product: azure")
        );
    }
}
