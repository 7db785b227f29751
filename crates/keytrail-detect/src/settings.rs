//! The detectors' settings by name: what `--set NAME=VALUE` changes and `keytrail rules list`
//! shows. Each setting is one field of [`Config`], named here once.

use keytrail_model::time::{format_span, parse_span};

use super::detectors::Config;

/// A setting's name, what it decides, and the field of [`Config`] it is.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    pub name: &'static str,
    pub about: &'static str,
    slot: for<'a> fn(&'a mut Config) -> Slot<'a>,
}

/// Every setting, in the order `rules list` shows them.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "warmup",
        about: "a key's first this long of activity only teaches its baseline (new network, client, region; the recon burst's principal)",
        slot: |c| Slot::Span(&mut c.warmup_ms),
    },
    Setting {
        name: "new-network-v4-prefix",
        about: "IPv4 addresses are one network when they share this many leading bits (new network)",
        slot: |c| Slot::Prefix(&mut c.new_v4_prefix, 32),
    },
    Setting {
        name: "new-network-v6-prefix",
        about: "IPv6 addresses are one network when they share this many leading bits (new network)",
        slot: |c| Slot::Prefix(&mut c.new_v6_prefix, 128),
    },
    Setting {
        name: "pair-window",
        about: "a new network and a new client this close together are one finding",
        slot: |c| Slot::Span(&mut c.pair_ms),
    },
    Setting {
        name: "denied-count",
        about: "denied calls that make a burst",
        slot: |c| Slot::Count(&mut c.denied_count, 1),
    },
    Setting {
        name: "denied-window",
        about: "the span a denied burst's calls fall within",
        slot: |c| Slot::Span(&mut c.denied_window_ms),
    },
    Setting {
        name: "recon-window",
        about: "the span a reconnaissance burst's calls fall within",
        slot: |c| Slot::Span(&mut c.recon_window_ms),
    },
    Setting {
        name: "recon-services",
        about: "services a reconnaissance burst spans (or recon-regions regions)",
        slot: |c| Slot::Count(&mut c.recon_services, 1),
    },
    Setting {
        name: "recon-regions",
        about: "regions a reconnaissance burst spans (or recon-services services)",
        slot: |c| Slot::Count(&mut c.recon_regions, 1),
    },
    Setting {
        name: "recon-names",
        about: "distinct List/Describe/Get calls in a reconnaissance burst",
        slot: |c| Slot::Count(&mut c.recon_names, 1),
    },
    Setting {
        name: "recon-new-names",
        about: "of those, calls the principal had never made",
        slot: |c| Slot::Count(&mut c.recon_new_names, 0),
    },
    Setting {
        name: "distant-window",
        about: "the span within which a key alternating between distant networks is a finding",
        slot: |c| Slot::Span(&mut c.distant_window_ms),
    },
    Setting {
        name: "distant-v4-prefix",
        about: "IPv4 networks are distant when they differ within this many leading bits (also a workload's AWS network)",
        slot: |c| Slot::Prefix(&mut c.distant_v4_prefix, 32),
    },
    Setting {
        name: "distant-v6-prefix",
        about: "IPv6 networks are distant when they differ within this many leading bits (also a workload's AWS network)",
        slot: |c| Slot::Prefix(&mut c.distant_v6_prefix, 128),
    },
    Setting {
        name: "workload-home",
        about: "without the runtime's mark, a workload's own calls are those within this long of its first",
        slot: |c| Slot::Span(&mut c.workload_home_ms),
    },
    Setting {
        name: "routine-days",
        about: "earlier days a principal made a catalogued call (or matched a rule at medium or lower) for it to be routine",
        slot: |c| Slot::Count(&mut c.routine_days, 1),
    },
    Setting {
        name: "routine-window",
        about: "how far back those earlier days are counted (whole days)",
        slot: |c| Slot::Days(&mut c.routine_window_days),
    },
    Setting {
        name: "evidence-cap",
        about: "most event IDs listed as one finding's evidence",
        slot: |c| Slot::Count(&mut c.evidence_cap, 1),
    },
    Setting {
        name: "max-sort-events",
        about: "most events sorted at once: a larger lake is read in key ranges of about this many (memory, not results)",
        slot: |c| Slot::Events(&mut c.max_sort_events),
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

/// The setting named `name`.
fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
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
        let Some(setting) = setting(name) else {
            return Err(SettingError::Unknown {
                name: name.to_owned(),
                known: SETTINGS
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        (setting.slot)(self)
            .set(value)
            .map_err(|expected| SettingError::Value {
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
            .map(|s| (*s, (s.slot)(&mut cfg).text()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_setting_is_its_own_field_and_its_value_reads_back() {
        let defaults = Config::default().settings();
        for s in SETTINGS {
            // A value unlike the default, written as --set takes it.
            let mut probe = Config::default();
            let changed = match (s.slot)(&mut probe) {
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
