//! Which share of the objects a worker reads: `--shard I/N`, or `--shard auto`, where the
//! scheduler that started the worker says which one it is.
//!
//! - Kubernetes Indexed Jobs set `JOB_COMPLETION_INDEX` (0 … completions − 1) in each pod;
//!   Kubernetes passes no count, so it comes from `--shard-count N` or
//!   [`SHARD_COUNT_VAR`] (`KEYTRAIL_SHARD_COUNT`, set to the Job's `completions`).
//! - AWS Batch array jobs set `AWS_BATCH_JOB_ARRAY_INDEX` (0 … size − 1) and
//!   `AWS_BATCH_JOB_ARRAY_SIZE` in each child job.
//!
//! Both indexes start at 0; keytrail's shares are numbered from 1, so index `i` of `n` is
//! share `i+1/n`. An object belongs to one share by a stable hash of its URI ([`Shard::takes`]),
//! so N workers given shares 1 … N read every object exactly once between them.

use std::fmt;

/// Kubernetes Indexed Jobs: the pod's index.
pub const K8S_INDEX_VAR: &str = "JOB_COMPLETION_INDEX";
/// The number of shards when Kubernetes runs the workers (Kubernetes passes no count).
pub const SHARD_COUNT_VAR: &str = "KEYTRAIL_SHARD_COUNT";
/// AWS Batch array jobs: the child's index.
pub const BATCH_INDEX_VAR: &str = "AWS_BATCH_JOB_ARRAY_INDEX";
/// AWS Batch array jobs: the array's size.
pub const BATCH_SIZE_VAR: &str = "AWS_BATCH_JOB_ARRAY_SIZE";

/// Share `index` (from 1) of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// Where a worker's share came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardSource {
    /// `--shard I/N`.
    Flag,
    /// `JOB_COMPLETION_INDEX` of a Kubernetes Indexed Job.
    Kubernetes,
    /// `AWS_BATCH_JOB_ARRAY_INDEX` and `AWS_BATCH_JOB_ARRAY_SIZE` of an AWS Batch array job.
    AwsBatch,
}

/// Why a share could not be worked out. All of them are usage errors.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("--shard {text}: expected I/N with 1 <= I <= N (e.g. 2/4), or auto")]
    Syntax { text: String },
    #[error(
        "--shard auto: neither {K8S_INDEX_VAR} (a Kubernetes Indexed Job) nor {BATCH_INDEX_VAR} (an AWS Batch array job) is set; run under one of them, or give --shard I/N"
    )]
    NoScheduler,
    #[error(
        "--shard auto: both {K8S_INDEX_VAR} and {BATCH_INDEX_VAR} are set, so which scheduler started this worker is unclear; unset one"
    )]
    TwoSchedulers,
    #[error("--shard auto: {name}={value:?} is not a whole number")]
    NotANumber { name: String, value: String },
    #[error("--shard auto: {name} must be at least 1 (it is {value})")]
    ZeroCount { name: String, value: u32 },
    #[error(
        "--shard auto: {K8S_INDEX_VAR} is set but Kubernetes passes no shard count: set {SHARD_COUNT_VAR} to the Job's completions, or give --shard-count N"
    )]
    NoCount,
    #[error("--shard auto: {BATCH_INDEX_VAR} is set but {BATCH_SIZE_VAR} is not")]
    NoBatchSize,
    #[error(
        "--shard auto: {index_name}={index} is not below the shard count {count} ({count_name})"
    )]
    OutOfRange {
        index_name: &'static str,
        index: u32,
        count: u32,
        count_name: String,
    },
    #[error("--shard-count {flag} differs from {BATCH_SIZE_VAR}={size}, the array's size")]
    CountMismatch { flag: u32, size: u32 },
    #[error("--shard-count goes with --shard auto only (--shard I/N names its count)")]
    CountWithoutAuto,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl fmt::Display for ShardSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShardSource::Flag => "--shard",
            ShardSource::Kubernetes => "a Kubernetes Indexed Job",
            ShardSource::AwsBatch => "an AWS Batch array job",
        })
    }
}

fn number(name: &str, value: &str) -> Result<u32, ShardError> {
    // Digits only: a sign, spaces or a fraction mean the variable is not what it seems.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ShardError::NotANumber {
            name: name.to_owned(),
            value: value.to_owned(),
        });
    }
    value.parse().map_err(|_| ShardError::NotANumber {
        name: name.to_owned(),
        value: value.to_owned(),
    })
}

fn positive(name: String, value: u32) -> Result<u32, ShardError> {
    if value == 0 {
        return Err(ShardError::ZeroCount { name, value });
    }
    Ok(value)
}

impl Shard {
    /// `I/N` with 1 ≤ I ≤ N.
    pub fn parse(text: &str) -> Result<Shard, ShardError> {
        let parsed = text.split_once('/').and_then(|(i, n)| {
            Some((i.trim().parse::<u32>().ok()?, n.trim().parse::<u32>().ok()?))
        });
        match parsed {
            Some((index, count)) if count >= 1 && (1..=count).contains(&index) => {
                Ok(Shard { index, count })
            }
            _ => Err(ShardError::Syntax {
                text: text.to_owned(),
            }),
        }
    }

    /// `--shard TEXT [--shard-count N]`: `I/N`, or `auto` resolved from the environment that
    /// `env` reads (`std::env::var` in the binary; a map in tests).
    pub fn resolve(
        text: &str,
        count: Option<u32>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(Shard, ShardSource), ShardError> {
        if text.trim() == "auto" {
            return Shard::from_scheduler(count, env);
        }
        if count.is_some() {
            return Err(ShardError::CountWithoutAuto);
        }
        Ok((Shard::parse(text)?, ShardSource::Flag))
    }

    /// The share a Kubernetes Indexed Job or an AWS Batch array job gave this worker.
    /// `count` is `--shard-count`.
    pub fn from_scheduler(
        count: Option<u32>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(Shard, ShardSource), ShardError> {
        let k8s = env(K8S_INDEX_VAR);
        let batch = env(BATCH_INDEX_VAR);
        let (index_name, index, count_name, count, source) = match (k8s, batch) {
            (Some(_), Some(_)) => return Err(ShardError::TwoSchedulers),
            (None, None) => return Err(ShardError::NoScheduler),
            (Some(i), None) => {
                let index = number(K8S_INDEX_VAR, &i)?;
                let (name, n) = match (count, env(SHARD_COUNT_VAR)) {
                    (Some(n), _) => ("--shard-count".to_owned(), n),
                    (None, Some(v)) => (SHARD_COUNT_VAR.to_owned(), number(SHARD_COUNT_VAR, &v)?),
                    (None, None) => return Err(ShardError::NoCount),
                };
                (K8S_INDEX_VAR, index, name, n, ShardSource::Kubernetes)
            }
            (None, Some(i)) => {
                let index = number(BATCH_INDEX_VAR, &i)?;
                let size = env(BATCH_SIZE_VAR).ok_or(ShardError::NoBatchSize)?;
                let size = number(BATCH_SIZE_VAR, &size)?;
                if let Some(flag) = count
                    && flag != size
                {
                    return Err(ShardError::CountMismatch { flag, size });
                }
                (
                    BATCH_INDEX_VAR,
                    index,
                    BATCH_SIZE_VAR.to_owned(),
                    size,
                    ShardSource::AwsBatch,
                )
            }
        };
        let count = positive(count_name.clone(), count)?;
        if index >= count {
            return Err(ShardError::OutOfRange {
                index_name,
                index,
                count,
                count_name,
            });
        }
        Ok((
            Shard {
                index: index + 1,
                count,
            },
            source,
        ))
    }

    /// Whether the object at `uri` is this share's to read.
    pub fn takes(&self, uri: &str) -> bool {
        in_shard(uri, self.index, self.count)
    }
}

/// Whether an object belongs to shard `index` of `count` (1-based): a stable hash of its
/// identity, so N workers split a bucket without talking to each other.
pub fn in_shard(uri: &str, index: u32, count: u32) -> bool {
    count <= 1
        || xxhash_rust::xxh3::xxh3_64(uri.as_bytes()) % u64::from(count) == u64::from(index - 1)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn shard(index: u32, count: u32) -> Shard {
        Shard { index, count }
    }

    #[test]
    fn fixed_shards_parse() {
        assert_eq!(Shard::parse("2/4"), Ok(shard(2, 4)));
        assert_eq!(Shard::parse(" 1 / 1 "), Ok(shard(1, 1)));
        for bad in ["0/3", "4/3", "1/0", "2", "a/b", "", "-1/3", "auto"] {
            assert_eq!(
                Shard::parse(bad),
                Err(ShardError::Syntax { text: bad.into() }),
                "{bad}"
            );
        }
        assert_eq!(
            Shard::resolve("2/4", None, env(&[])),
            Ok((shard(2, 4), ShardSource::Flag))
        );
        assert_eq!(
            Shard::resolve("2/4", Some(4), env(&[])),
            Err(ShardError::CountWithoutAuto)
        );
        assert_eq!(shard(2, 4).to_string(), "2/4");
    }

    #[test]
    fn kubernetes_indexed_jobs() {
        let k = |i: &str, n: &str| env(&[(K8S_INDEX_VAR, i), (SHARD_COUNT_VAR, n)]);
        assert_eq!(
            Shard::resolve("auto", None, k("0", "3")),
            Ok((shard(1, 3), ShardSource::Kubernetes))
        );
        assert_eq!(
            Shard::resolve("auto", None, k("2", "3")),
            Ok((shard(3, 3), ShardSource::Kubernetes))
        );
        // The flag wins over the variable.
        assert_eq!(
            Shard::resolve("auto", Some(5), k("4", "3")),
            Ok((shard(5, 5), ShardSource::Kubernetes))
        );
        assert_eq!(
            Shard::resolve("auto", Some(2), env(&[(K8S_INDEX_VAR, "1")])),
            Ok((shard(2, 2), ShardSource::Kubernetes))
        );
        assert_eq!(
            Shard::resolve("auto", None, k("3", "3")),
            Err(ShardError::OutOfRange {
                index_name: K8S_INDEX_VAR,
                index: 3,
                count: 3,
                count_name: SHARD_COUNT_VAR.into()
            })
        );
        assert_eq!(
            Shard::resolve("auto", None, env(&[(K8S_INDEX_VAR, "0")])),
            Err(ShardError::NoCount)
        );
        assert_eq!(
            Shard::resolve("auto", None, k("0", "0")),
            Err(ShardError::ZeroCount {
                name: SHARD_COUNT_VAR.into(),
                value: 0
            })
        );
        for bad in ["", "x", "-1", " 1", "1.0", "99999999999"] {
            assert_eq!(
                Shard::resolve("auto", None, k(bad, "3")),
                Err(ShardError::NotANumber {
                    name: K8S_INDEX_VAR.into(),
                    value: bad.into()
                }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn aws_batch_array_jobs() {
        let b = |i: &str, n: &str| env(&[(BATCH_INDEX_VAR, i), (BATCH_SIZE_VAR, n)]);
        assert_eq!(
            Shard::resolve("auto", None, b("0", "10")),
            Ok((shard(1, 10), ShardSource::AwsBatch))
        );
        assert_eq!(
            Shard::resolve("auto", Some(10), b("9", "10")),
            Ok((shard(10, 10), ShardSource::AwsBatch))
        );
        assert_eq!(
            Shard::resolve("auto", Some(4), b("1", "10")),
            Err(ShardError::CountMismatch { flag: 4, size: 10 })
        );
        assert_eq!(
            Shard::resolve("auto", None, env(&[(BATCH_INDEX_VAR, "1")])),
            Err(ShardError::NoBatchSize)
        );
        assert!(matches!(
            Shard::resolve("auto", None, b("10", "10")),
            Err(ShardError::OutOfRange { index: 10, .. })
        ));
        assert!(matches!(
            Shard::resolve("auto", None, b("1", "ten")),
            Err(ShardError::NotANumber { .. })
        ));
    }

    #[test]
    fn neither_or_both_schedulers() {
        let err = Shard::resolve("auto", None, env(&[])).expect_err("none");
        assert_eq!(err, ShardError::NoScheduler);
        assert!(err.to_string().contains(K8S_INDEX_VAR));
        assert!(err.to_string().contains(BATCH_INDEX_VAR));
        assert_eq!(
            Shard::resolve(
                "auto",
                None,
                env(&[(K8S_INDEX_VAR, "0"), (BATCH_INDEX_VAR, "0")])
            ),
            Err(ShardError::TwoSchedulers)
        );
        // A count alone says nothing about which worker this is.
        assert_eq!(
            Shard::resolve("auto", Some(3), env(&[(SHARD_COUNT_VAR, "3")])),
            Err(ShardError::NoScheduler)
        );
    }

    #[test]
    fn every_index_of_a_scheduler_takes_a_distinct_share() {
        let uris: Vec<String> = (0..300).map(|i| format!("s3://b/k{i}")).collect();
        let mut taken = vec![0; uris.len()];
        for i in 0..3 {
            let (s, _) = Shard::resolve(
                "auto",
                None,
                env(&[(BATCH_INDEX_VAR, &i.to_string()), (BATCH_SIZE_VAR, "3")]),
            )
            .expect("shard");
            for (n, u) in uris.iter().enumerate() {
                if s.takes(u) {
                    taken[n] += 1;
                }
            }
        }
        assert!(taken.iter().all(|n| *n == 1));
    }

    #[test]
    fn shards_partition_the_objects() {
        let uris: Vec<String> = (0..1000).map(|i| format!("s3://b/k{i}")).collect();
        let mut total = 0;
        for i in 1..=3 {
            let n = uris.iter().filter(|u| in_shard(u, i, 3)).count();
            assert!(n > 250, "shard {i} has {n}");
            total += n;
        }
        assert_eq!(total, 1000);
    }
}
