//! The 3 a.m. path: investigate straight over raw logs (local files, S3), with no lake.
//!
//! The chain is not known before the logs are read, and CloudTrail delivers files out of order
//! (a derived key's calls can sit in a file read before the file of the call that minted it).
//! So the job is a loop over the ingest pipeline, writing into a small working lake:
//!
//! 1. read everything once, keeping the events of the given keys and the events naming them,
//!    and index which keys every object holds (keys only: a few bytes per object);
//! 2. resolve the chain over what was kept (the minting calls are among the kept events, since
//!    they are made with chain keys); for every key found that was not yet kept, re-read only
//!    the objects the index says hold it, keeping those keys too;
//! 3. repeat until no new key appears (role chaining), then investigate the working lake.
//!
//! The manifest's per-object filters make each re-read write only the newly wanted events, so
//! nothing is doubled; the working lake is deleted afterwards unless the caller keeps it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use keytrail_ingest::{IngestOptions, Input, ObjectRef, Progress, RunSummary, ingest};

use keytrail_engine::{LakeSession, SessionOptions, block_on};

use super::{InvestigateError, InvestigateOptions, Investigation, chain, investigate};

/// Passes at most (each pass follows one more link of the chain).
const MAX_PASSES: usize = 16;

/// What the raw-logs mode did.
#[derive(Debug)]
pub struct RawOutcome {
    pub investigation: Investigation,
    /// One ingest summary per pass over the logs.
    pub passes: Vec<RunSummary>,
    /// The working lake, where the timeline's rows are read from (a temporary directory,
    /// removed with this value, unless the caller asked to keep it).
    pub lake: PathBuf,
    _working: Option<tempfile::TempDir>,
}

/// Investigate over raw inputs. `template` carries the ingest settings (threads, limits, S3
/// options); its inputs, lake and filter are replaced. With `keep_lake`, the working lake is
/// that directory and stays (a later `keytrail ingest` into it fills in the rest); otherwise a
/// temporary directory is used and removed.
pub fn investigate_raw(
    inputs: Vec<Input>,
    keep_lake: Option<PathBuf>,
    template: &IngestOptions,
    opts: &InvestigateOptions,
    session: &SessionOptions,
    progress: &dyn Progress,
) -> Result<RawOutcome, InvestigateError> {
    if opts.keys.is_empty() {
        return Err(InvestigateError::Invalid(
            "give at least one access key ID to investigate".into(),
        ));
    }
    let mut tmp = None;
    let lake = match &keep_lake {
        Some(p) => p.clone(),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("keytrail-investigate-")
                .tempdir()
                .map_err(|e| InvestigateError::Input {
                    path: std::env::temp_dir(),
                    reason: format!("cannot make a working directory: {e}"),
                })?;
            let lake = dir.path().join("lake");
            tmp = Some(dir);
            lake
        }
    };
    let mut wanted: BTreeSet<String> = opts.keys.iter().map(|k| k.as_str().to_owned()).collect();
    let mut ingest_opts = template.clone();
    ingest_opts.lake = lake.clone();
    ingest_opts.inputs = inputs;
    ingest_opts.filter.keys = Some(wanted.clone());
    ingest_opts.filter.since = opts.since;
    ingest_opts.filter.until = opts.until;
    ingest_opts.limits.index_keys = true;

    let mut passes = Vec::new();
    let first = ingest(&ingest_opts, progress)?;
    // Which objects hold which keys.
    let mut by_key: BTreeMap<String, Vec<ObjectRef>> = BTreeMap::new();
    for (object, keys) in &first.key_index {
        for k in keys {
            by_key.entry(k.clone()).or_default().push(object.clone());
        }
    }
    passes.push(first);
    ingest_opts.limits.index_keys = false;

    loop {
        let found = block_on(session.threads, async {
            let s = LakeSession::open(&lake, session).await?;
            let mut notes = Vec::new();
            let (keys, _) = chain(&s, &opts.keys, &mut notes).await?;
            Ok::<_, InvestigateError>(keys.into_keys().collect::<BTreeSet<String>>())
        })?;
        let new: BTreeSet<String> = found.difference(&wanted).cloned().collect();
        if new.is_empty() {
            break;
        }
        if passes.len() >= MAX_PASSES {
            tracing::warn!(keys = ?new, "stopped following the chain after {MAX_PASSES} passes");
            break;
        }
        let mut objects: BTreeMap<String, ObjectRef> = BTreeMap::new();
        for k in &new {
            for o in by_key.get(k).into_iter().flatten() {
                objects.insert(o.uri(), o.clone());
            }
        }
        wanted.extend(new);
        ingest_opts.filter.keys = Some(wanted.clone());
        if objects.is_empty() {
            // Minted, but never used in these logs: nothing more to read.
            continue;
        }
        ingest_opts.inputs = objects.into_values().map(Input::Object).collect();
        passes.push(ingest(&ingest_opts, progress)?);
    }

    let mut investigation = block_on(session.threads, async {
        let s = LakeSession::open(&lake, session).await?;
        investigate(&s, opts).await
    })?;
    // Say what was not read: the answer may be missing what those objects hold.
    for f in passes.iter().flat_map(|p| &p.failures) {
        investigation.notes.push(format!(
            "Not read, so not in this answer: {} ({})",
            f.object, f.reason
        ));
    }
    Ok(RawOutcome {
        investigation,
        passes,
        lake,
        _working: tmp,
    })
}
