//! keytrail's detection rules as data: the rule format (`rule`), Sigma rules read into the
//! same conditions (`sigma`), and the address arithmetic both use (`net`).
//!
//! A crate of its own, without the query engine: `keytrail-detect` compiles these rules into
//! one scan of the lake, and the rule loader's fuzz target (`fuzz/`, issue 13) builds this
//! crate alone.

pub mod net;
pub mod rule;
pub mod sigma;

pub use rule::{CATEGORIES, Rule, RuleFormat, Severity};

/// A rule file that cannot be read or used.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// A rule file that cannot be read or is not a valid rule.
    #[error("{origin}: {reason}")]
    Invalid { origin: String, reason: String },
    /// A rule (a Sigma rule, mostly) using a construct keytrail cannot run: it is left out,
    /// and `rules lint` names it; the other rules still load.
    #[error("{origin}: {}cannot run: {construct}", rule.as_ref().map(|r| format!("rule {r}: ")).unwrap_or_default())]
    Unsupported {
        origin: String,
        rule: Option<String>,
        construct: String,
    },
}
