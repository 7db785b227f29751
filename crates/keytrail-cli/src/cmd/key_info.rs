use std::fmt::Write as _;
use std::process::ExitCode;

use keytrail_model::{AccountDecode, UniqueId};
use serde::Serialize;

use crate::flags::KeyInfoArgs;
use crate::output::stdout;

/// What keytrail can say about an ID without calling AWS.
#[derive(Debug, Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub prefix: String,
    pub meaning: String,
    /// `long-term`, `temporary`, `other`, or absent when the ID is not an access key.
    pub key_kind: Option<String>,
    pub account: Option<String>,
    /// Why no account was decoded.
    pub account_note: Option<String>,
}

pub fn info(id: &UniqueId) -> KeyInfo {
    let (account, account_note) = match id.account() {
        AccountDecode::Account(a) => (Some(a), None),
        AccountDecode::NotEncoded => (
            None,
            Some("this ID predates account encoding (fifth character A-P): the account cannot be decoded offline".to_owned()),
        ),
        AccountDecode::Malformed => (
            None,
            Some("not 20 characters of the base32 alphabet after the prefix: no account can be decoded".to_owned()),
        ),
    };
    KeyInfo {
        id: id.to_string(),
        prefix: id.prefix().as_str().to_owned(),
        meaning: id.prefix().description().to_owned(),
        key_kind: id.prefix().key_kind().map(|k| k.as_str().to_owned()),
        account,
        account_note,
    }
}

pub fn run(args: KeyInfoArgs) -> anyhow::Result<ExitCode> {
    let mut infos = Vec::new();
    for k in &args.keys {
        infos.push(info(&UniqueId::parse(k)?));
    }
    if args.json {
        stdout(&(serde_json::to_string_pretty(&infos)? + "\n"))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    for (i, k) in infos.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "{}", k.id);
        let _ = writeln!(out, "  prefix   {}: {}", k.prefix, k.meaning);
        if let Some(kind) = &k.key_kind {
            let _ = writeln!(out, "  kind     {kind} access key");
        }
        match (&k.account, &k.account_note) {
            (Some(a), _) => {
                let _ = writeln!(out, "  account  {a} (decoded offline from the ID)");
            }
            (None, Some(note)) => {
                let _ = writeln!(out, "  account  unknown: {note}");
            }
            (None, None) => {}
        }
    }
    stdout(&out)?;
    Ok(ExitCode::SUCCESS)
}
