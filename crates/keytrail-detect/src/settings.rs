//! The detectors' settings by name: what `--set NAME=VALUE` changes and `keytrail rules list`
//! shows. Each setting is one field of [`Config`], named here once.

use keytrail_model::time::{format_span, parse_span};

use super::detectors::Config;

/// A setting's name and what it decides.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    pub name: &'static str,
    pub about: &'static str,
}

/// Every setting, in the order `rules list` shows them.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "warmup",
        about: "a key's first this long of activity only teaches its baseline (new network, client, region; the recon burst's principal)",
    },
    Setting {
        name: "new-network-v4-prefix",
        about: "IPv4 addresses are one network when they share this many leading bits (new network)",
    },
    Setting {
        name: "new-network-v6-prefix",
        about: "IPv6 addresses are one network when they share this many leading bits (new network)",
    },
    Setting {
        name: "pair-window",
        about: "a new network and a new client this close together are one finding",
    },
    Setting {
        name: "denied-count",
        about: "denied calls that make a burst",
    },
    Setting {
        name: "denied-window",
        about: "the span a denied burst's calls fall within",
    },
    Setting {
        name: "recon-window",
        about: "the span a reconnaissance burst's calls fall within",
    },
    Setting {
        name: "recon-services",
        about: "services a reconnaissance burst spans (or recon-regions regions)",
    },
    Setting {
        name: "recon-regions",
        about: "regions a reconnaissance burst spans (or recon-services services)",
    },
    Setting {
        name: "recon-names",
        about: "distinct List/Describe/Get calls in a reconnaissance burst",
    },
    Setting {
        name: "recon-new-names",
        about: "of those, calls the principal had never made",
    },
    Setting {
        name: "distant-window",
        about: "the span within which a key alternating between distant networks is a finding",
    },
    Setting {
        name: "distant-v4-prefix",
        about: "IPv4 networks are distant when they differ within this many leading bits (also a workload's AWS network)",
    },
    Setting {
        name: "distant-v6-prefix",
        about: "IPv6 networks are distant when they differ within this many leading bits (also a workload's AWS network)",
    },
    Setting {
        name: "workload-home",
        about: "without the runtime's mark, a workload's own calls are those within this long of its first",
    },
    Setting {
        name: "routine-days",
        about: "earlier days a principal made a catalogued call (or matched a rule at medium or lower) for it to be routine",
    },
    Setting {
        name: "routine-window",
        about: "how far back those earlier days are counted (whole days)",
    },
    Setting {
        name: "evidence-cap",
        about: "most event IDs listed as one finding's evidence",
    },
    Setting {
        name: "max-sort-events",
        about: "most events sorted at once: a larger lake is read in key ranges of about this many (memory, not results)",
    },
];

/// A `--set` that cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    #[error("--set {0}: write NAME=VALUE (`keytrail rules list` shows the settings)")]
    Form(String),
    #[error("--set {name}: no such detector setting; the settings are {known}")]
    Unknown { name: String, known: String },
    #[error("--set {name}={value}: {expected}")]
    Value {
        name: String,
        value: String,
        expected: String,
    },
}

/// Where a setting's value lives in a [`Config`], and what it may be.
enum Slot<'a> {
    /// A count, at least `min`.
    Count(&'a mut usize, usize),
    Events(&'a mut u64),
    /// A length of time (`10m`, `24h`).
    Span(&'a mut i64),
    /// Whole days (`90d`, `12w`).
    Days(&'a mut i32),
    /// A prefix length, at most `max` bits.
    Prefix(&'a mut u8, u8),
}

fn slot<'a>(cfg: &'a mut Config, name: &str) -> Option<Slot<'a>> {
    Some(match name {
        "warmup" => Slot::Span(&mut cfg.warmup_ms),
        "new-network-v4-prefix" => Slot::Prefix(&mut cfg.new_v4_prefix, 32),
        "new-network-v6-prefix" => Slot::Prefix(&mut cfg.new_v6_prefix, 128),
        "pair-window" => Slot::Span(&mut cfg.pair_ms),
        "denied-count" => Slot::Count(&mut cfg.denied_count, 1),
        "denied-window" => Slot::Span(&mut cfg.denied_window_ms),
        "recon-window" => Slot::Span(&mut cfg.recon_window_ms),
        "recon-services" => Slot::Count(&mut cfg.recon_services, 1),
        "recon-regions" => Slot::Count(&mut cfg.recon_regions, 1),
        "recon-names" => Slot::Count(&mut cfg.recon_names, 1),
        "recon-new-names" => Slot::Count(&mut cfg.recon_new_names, 0),
        "distant-window" => Slot::Span(&mut cfg.distant_window_ms),
        "distant-v4-prefix" => Slot::Prefix(&mut cfg.distant_v4_prefix, 32),
        "distant-v6-prefix" => Slot::Prefix(&mut cfg.distant_v6_prefix, 128),
        "workload-home" => Slot::Span(&mut cfg.workload_home_ms),
        "routine-days" => Slot::Count(&mut cfg.routine_days, 1),
        "routine-window" => Slot::Days(&mut cfg.routine_window_days),
        "evidence-cap" => Slot::Count(&mut cfg.evidence_cap, 1),
        "max-sort-events" => Slot::Events(&mut cfg.max_sort_events),
        _ => return None,
    })
}

impl Slot<'_> {
    fn text(&self) -> String {
        match self {
            Slot::Count(v, _) => v.to_string(),
            Slot::Events(v) => v.to_string(),
            Slot::Span(v) => format_span(**v),
            Slot::Days(v) => format!("{v}d"),
            Slot::Prefix(v, _) => v.to_string(),
        }
    }

    /// Write `value`; on failure, what a value must be.
    fn set(self, value: &str) -> Result<(), String> {
        let v = value.trim();
        match self {
            Slot::Count(slot, min) => match v.parse::<usize>() {
                Ok(n) if n >= min => *slot = n,
                _ => return Err(format!("a whole number, at least {min}")),
            },
            Slot::Events(slot) => match v.parse::<u64>() {
                Ok(n) if n >= 1 => *slot = n,
                _ => return Err("a whole number, at least 1".into()),
            },
            Slot::Span(slot) => match parse_span(v) {
                Some(ms) if ms > 0 => *slot = ms,
                _ => return Err("a length of time above zero: 500ms, 30s, 10m, 24h, 7d, 2w".into()),
            },
            Slot::Days(slot) => match parse_span(v) {
                Some(ms) if ms > 0 && ms % 86_400_000 == 0 => {
                    *slot = i32::try_from(ms / 86_400_000)
                        .map_err(|_| format!("at most {}d", i32::MAX))?;
                }
                _ => return Err("whole days above zero: 90d, 12w".into()),
            },
            Slot::Prefix(slot, max) => match v.parse::<u8>() {
                Ok(n) if n <= max => *slot = n,
                _ => return Err(format!("a prefix length from 0 to {max}")),
            },
        }
        Ok(())
    }
}

impl Config {
    /// Apply one `NAME=VALUE` (`denied-count=30`, `recon-window=15m`).
    pub fn set(&mut self, assignment: &str) -> Result<(), SettingError> {
        let Some((name, value)) = assignment.split_once('=') else {
            return Err(SettingError::Form(assignment.to_owned()));
        };
        let name = name.trim();
        let Some(slot) = slot(self, name) else {
            return Err(SettingError::Unknown {
                name: name.to_owned(),
                known: SETTINGS
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        slot.set(value).map_err(|expected| SettingError::Value {
            name: name.to_owned(),
            value: value.to_owned(),
            expected,
        })
    }

    /// Every setting with its value, as `--set` writes it.
    pub fn settings(&self) -> Vec<(Setting, String)> {
        let mut cfg = self.clone();
        SETTINGS
            .iter()
            .filter_map(|s| Some((*s, slot(&mut cfg, s.name)?.text())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_setting_is_its_own_field_and_its_value_reads_back() {
        let defaults = Config::default().settings();
        assert_eq!(defaults.len(), SETTINGS.len());
        for s in SETTINGS {
            // A value unlike the default, written as --set takes it.
            let mut probe = Config::default();
            let changed = match slot(&mut probe, s.name).expect(s.name) {
                Slot::Count(v, _) => (*v + 1).to_string(),
                Slot::Events(v) => (*v + 1).to_string(),
                Slot::Span(v) => format_span(*v + 1_000),
                Slot::Days(v) => format!("{}d", *v + 1),
                Slot::Prefix(v, _) => (if *v > 0 { *v - 1 } else { 1 }).to_string(),
            };
            let mut cfg = Config::default();
            cfg.set(&format!("{}={changed}", s.name)).expect(s.name);
            let now = cfg.settings();
            for ((d, before), (n, after)) in defaults.iter().zip(&now) {
                assert_eq!(d.name, n.name);
                if n.name == s.name {
                    assert_eq!(after, &changed, "{}", s.name);
                    assert_ne!(after, before, "{}", s.name);
                } else {
                    assert_eq!(
                        after, before,
                        "--set {}={changed} changed {}",
                        s.name, n.name
                    );
                }
            }
        }
        let text = |name: &str| {
            defaults
                .iter()
                .find(|(s, _)| s.name == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(text("warmup"), Some("1d"));
        assert_eq!(text("denied-window"), Some("10m"));
        assert_eq!(text("routine-window"), Some("90d"));
        assert_eq!(text("new-network-v4-prefix"), Some("24"));
    }

    #[test]
    fn values_land_in_their_fields() {
        let mut cfg = Config::default();
        for a in [
            "denied-count=30",
            "recon-window=15m",
            " warmup = 36h",
            "routine-window=2w",
            "new-network-v6-prefix=48",
            "max-sort-events=250000",
            "recon-new-names=0",
        ] {
            cfg.set(a).expect(a);
        }
        assert_eq!(cfg.denied_count, 30);
        assert_eq!(cfg.recon_window_ms, 15 * 60_000);
        assert_eq!(cfg.warmup_ms, 36 * 3_600_000);
        assert_eq!(cfg.routine_window_days, 14);
        assert_eq!(cfg.new_v6_prefix, 48);
        assert_eq!(cfg.max_sort_events, 250_000);
        assert_eq!(cfg.recon_new_names, 0);
    }

    #[test]
    fn a_bad_setting_is_named_and_changes_nothing() {
        let mut cfg = Config::default();
        let cases = [
            ("denied-count", "--set denied-count: write NAME=VALUE"),
            (
                "denied-count=0",
                "--set denied-count=0: a whole number, at least 1",
            ),
            (
                "denied-count=-3",
                "--set denied-count=-3: a whole number, at least 1",
            ),
            (
                "recon-window=15",
                "--set recon-window=15: a length of time above zero",
            ),
            (
                "recon-window=0m",
                "--set recon-window=0m: a length of time above zero",
            ),
            (
                "routine-window=36h",
                "--set routine-window=36h: whole days above zero",
            ),
            (
                "distant-v4-prefix=33",
                "--set distant-v4-prefix=33: a prefix length from 0 to 32",
            ),
            (
                "threshold=3",
                "--set threshold: no such detector setting; the settings are warmup, ",
            ),
        ];
        for (a, start) in cases {
            let e = cfg.set(a).expect_err(a).to_string();
            assert!(e.starts_with(start), "{a}: {e}");
        }
        assert_eq!(
            cfg.settings()
                .into_iter()
                .map(|(_, v)| v)
                .collect::<Vec<_>>(),
            Config::default()
                .settings()
                .into_iter()
                .map(|(_, v)| v)
                .collect::<Vec<_>>()
        );
    }
}
