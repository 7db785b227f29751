//! Findings written once, across restarts.
//!
//! Findings are appended to a file (or stdout), one JSON object per line, each with its
//! identity (`id`, see [`crate::fresh::identity`]). What has been written is recorded in a
//! *findings cursor*, `LAKE/_keytrail/follow/findings-<hash of the destination>.json` (in the
//! lake's directory, or in its bucket for a lake in S3): the last commit whose findings are
//! written (`seq`) and the length of the findings file at that moment (`offset`). After each
//! commit:
//!
//! 1. the findings of the commits after `seq` are computed from the lake;
//! 2. those whose identity is already in the file *after `offset`* are left out, the rest are
//!    appended and the file is synced;
//! 3. the cursor is replaced atomically (temporary file, sync, rename, sync of the directory;
//!    in S3 one PUT, which replaces an object whole).
//!
//! A process killed between the commit and 2 computes the same findings again at its next
//! start (the commit is after `seq`). Killed during 2, the file ends with an incomplete line:
//! at start, whatever follows the last newline after `offset` is cut off, and the complete
//! lines after `offset` are read back, so step 2 leaves them out. Killed between 2 and 3: the
//! same, with no line to cut. So each finding is written exactly once. With stdout (`-`) no
//! line can be read back: a process killed between 2 and 3 writes that batch's findings again
//! when it starts (at least once; consumers can drop repeats by `id`).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use keytrail_ingest::s3lake::S3Lake;
use keytrail_lake::crash_point;
use serde::{Deserialize, Serialize};

use crate::error::FollowError;
use crate::fresh::{Fresh, Raised};

/// Where findings go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sink {
    File(PathBuf),
    Stdout,
}

impl Sink {
    /// How the cursor names it: `-` or the absolute path.
    fn name(&self) -> Result<String, FollowError> {
        match self {
            Sink::Stdout => Ok("-".to_owned()),
            Sink::File(p) => std::path::absolute(p)
                .map(|a| a.display().to_string())
                .map_err(|e| FollowError::Findings {
                    path: p.clone(),
                    source: e,
                }),
        }
    }
}

const CURSOR_FORMAT: u32 = 1;

/// Where the findings cursor is kept: with the lake's own records, so that it lives as long
/// as the commits it counts.
#[derive(Clone, Debug)]
pub enum CursorHome {
    /// A lake directory: `LAKE/_keytrail/follow/`.
    Dir(PathBuf),
    /// A lake in S3: `PREFIX/_keytrail/follow/` in its bucket, through `rt` (the caller's
    /// runtime; the log is used from outside it).
    S3 {
        lake: S3Lake,
        rt: tokio::runtime::Handle,
    },
}

impl From<&Path> for CursorHome {
    fn from(lake: &Path) -> Self {
        CursorHome::Dir(lake.to_path_buf())
    }
}

impl From<&PathBuf> for CursorHome {
    fn from(lake: &PathBuf) -> Self {
        CursorHome::Dir(lake.clone())
    }
}

const CURSOR_DIR: &str = "_keytrail/follow";

impl CursorHome {
    /// The cursor `file` as messages name it: a path, or `s3://bucket/prefix/...`.
    fn name(&self, file: &str) -> PathBuf {
        match self {
            CursorHome::Dir(lake) => lake.join(CURSOR_DIR).join(file),
            CursorHome::S3 { lake, .. } => {
                PathBuf::from(lake.name_of(&format!("{CURSOR_DIR}/{file}")))
            }
        }
    }

    fn load(&self, file: &str) -> Result<Option<Vec<u8>>, FollowError> {
        let failed = |reason: String| FollowError::Cursor {
            path: self.name(file),
            reason,
        };
        match self {
            CursorHome::Dir(_) => match std::fs::read(self.name(file)) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(failed(e.to_string())),
            },
            CursorHome::S3 { lake, rt } => rt
                .block_on(lake.read(&format!("{CURSOR_DIR}/{file}")))
                .map_err(|e| failed(e.to_string())),
        }
    }

    fn save(&self, file: &str, c: &Cursor) -> Result<(), FollowError> {
        let text = serde_json::to_vec_pretty(c).map_err(|e| FollowError::Cursor {
            path: self.name(file),
            reason: e.to_string(),
        })?;
        match self {
            CursorHome::Dir(_) => keytrail_lake::write_atomic(&self.name(file), &text)?,
            CursorHome::S3 { lake, rt } => rt
                .block_on(lake.write(&format!("{CURSOR_DIR}/{file}"), text))
                .map_err(|e| FollowError::Cursor {
                    path: self.name(file),
                    reason: e.to_string(),
                })?,
        }
        Ok(())
    }
}

/// The findings cursor as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub format: u32,
    /// Findings of every commit up to this one are written.
    pub seq: u64,
    /// The destination: `-` or an absolute path.
    pub findings: String,
    /// The findings file's length when the cursor was written.
    pub offset: u64,
    /// Findings written through this cursor so far.
    pub written: u64,
}

/// One line of the findings output.
#[derive(Serialize)]
struct Line<'a> {
    id: &'a str,
    commit: u64,
    detected_at: String,
    #[serde(flatten)]
    finding: &'a keytrail_detect::Finding,
}

/// The findings output and its cursor.
pub struct FindingsLog {
    sink: Sink,
    home: CursorHome,
    /// The cursor's file name in `home`.
    cursor_file: String,
    cursor: Cursor,
    /// Identities written after the cursor's offset (by a process killed before it moved the
    /// cursor, or by this one).
    after_cursor: HashSet<String>,
    file: Option<File>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> FollowError + '_ {
    move |e| FollowError::Findings {
        path: path.to_path_buf(),
        source: e,
    }
}

impl FindingsLog {
    /// Open the output and its cursor in `home` (the lake). A new cursor starts at commit
    /// `last_seq`: findings of what the lake already holds are `keytrail detect`'s.
    pub fn open(
        home: impl Into<CursorHome>,
        sink: Sink,
        last_seq: u64,
    ) -> Result<FindingsLog, FollowError> {
        let home = home.into();
        let name = sink.name()?;
        let cursor_file = format!(
            "findings-{:016x}.json",
            xxhash_rust::xxh3::xxh3_64(name.as_bytes())
        );
        let cursor_path = home.name(&cursor_file);
        let file = match &sink {
            Sink::File(p) => {
                if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(io(p))?;
                }
                Some(
                    OpenOptions::new()
                        .read(true)
                        .append(true)
                        .create(true)
                        .open(p)
                        .map_err(io(p))?,
                )
            }
            Sink::Stdout => None,
        };
        let cursor = match home.load(&cursor_file)? {
            Some(bytes) => {
                let c: Cursor =
                    serde_json::from_slice(&bytes).map_err(|e| FollowError::Cursor {
                        path: cursor_path.clone(),
                        reason: format!("unreadable findings cursor: {e}"),
                    })?;
                if c.format != CURSOR_FORMAT {
                    return Err(FollowError::Cursor {
                        path: cursor_path,
                        reason: format!(
                            "findings cursor format {}, this keytrail reads {CURSOR_FORMAT}",
                            c.format
                        ),
                    });
                }
                c
            }
            None => {
                let offset = match (&file, &sink) {
                    (Some(f), Sink::File(p)) => f.metadata().map_err(io(p))?.len(),
                    _ => 0,
                };
                let c = Cursor {
                    format: CURSOR_FORMAT,
                    seq: last_seq,
                    findings: name,
                    offset,
                    written: 0,
                };
                home.save(&cursor_file, &c)?;
                tracing::info!(cursor = %cursor_path.display(), seq = last_seq, "new findings cursor: findings of commits after {last_seq}");
                c
            }
        };
        let mut log = FindingsLog {
            sink,
            home,
            cursor_file,
            cursor,
            after_cursor: HashSet::new(),
            file,
        };
        log.read_back()?;
        Ok(log)
    }

    /// Cut an incomplete last line written after the cursor, and read back the identities of
    /// the complete ones.
    fn read_back(&mut self) -> Result<(), FollowError> {
        let (Some(f), Sink::File(path)) = (self.file.as_mut(), &self.sink) else {
            return Ok(());
        };
        let len = f.metadata().map_err(io(path))?.len();
        let start = if len >= self.cursor.offset {
            self.cursor.offset
        } else {
            tracing::warn!(
                file = %path.display(),
                "the findings file is shorter than when its cursor was written (rotated or truncated?); reading it whole"
            );
            0
        };
        let mut tail = Vec::new();
        f.seek(SeekFrom::Start(start)).map_err(io(path))?;
        f.read_to_end(&mut tail).map_err(io(path))?;
        let complete = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete < tail.len() {
            tracing::warn!(
                file = %path.display(),
                bytes = tail.len() - complete,
                "cutting off an incomplete last line (the follower was stopped while writing it); its finding is written again"
            );
            f.set_len(start + complete as u64).map_err(io(path))?;
            f.sync_all().map_err(io(path))?;
        }
        for line in tail[..complete].split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            if let Some(id) = serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned))
            {
                self.after_cursor.insert(id);
            }
        }
        if !self.after_cursor.is_empty() {
            tracing::info!(
                file = %path.display(),
                findings = self.after_cursor.len(),
                "findings written after the cursor by a stopped follower are kept and not written again"
            );
        }
        Ok(())
    }

    /// The last commit whose findings are written.
    pub fn seq(&self) -> u64 {
        self.cursor.seq
    }

    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// Where the cursor is: a path, or `s3://bucket/prefix/...`.
    pub fn cursor_path(&self) -> PathBuf {
        self.home.name(&self.cursor_file)
    }

    /// Append the findings of `fresh` that are not written yet, then move the cursor to
    /// `fresh.upto`. Returns how many lines were written.
    pub fn append(&mut self, fresh: &Fresh) -> Result<usize, FollowError> {
        let now = keytrail_model::time::format_millis(keytrail_model::time::now_millis());
        let mut text = Vec::new();
        let mut ids = Vec::new();
        for Raised {
            id,
            commit,
            finding,
        } in &fresh.findings
        {
            if self.after_cursor.contains(id) {
                continue;
            }
            let line = Line {
                id,
                commit: *commit,
                detected_at: now.clone(),
                finding,
            };
            serde_json::to_writer(&mut text, &line).map_err(|e| FollowError::Findings {
                path: PathBuf::from(&self.cursor.findings),
                source: std::io::Error::other(e),
            })?;
            text.push(b'\n');
            ids.push(id.clone());
        }
        if !text.is_empty() {
            match (&mut self.file, &self.sink) {
                (Some(f), Sink::File(path)) => {
                    // Two writes, so a test can stop the process between them and leave an
                    // incomplete line, as a crash in the middle of a write would.
                    let half = text.len() / 2;
                    f.write_all(&text[..half]).map_err(io(path))?;
                    crash_point("follow-mid-findings");
                    f.write_all(&text[half..]).map_err(io(path))?;
                    f.sync_data().map_err(io(path))?;
                }
                _ => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&text)
                        .and_then(|()| out.flush())
                        .map_err(io(Path::new("-")))?;
                }
            }
        }
        self.after_cursor.extend(ids.iter().cloned());
        crash_point("follow-after-findings");
        if fresh.upto != self.cursor.seq || !ids.is_empty() {
            let offset = match (&self.file, &self.sink) {
                (Some(f), Sink::File(path)) => f.metadata().map_err(io(path))?.len(),
                _ => 0,
            };
            let next = Cursor {
                seq: fresh.upto.max(self.cursor.seq),
                offset,
                written: self.cursor.written + ids.len() as u64,
                ..self.cursor.clone()
            };
            self.home.save(&self.cursor_file, &next)?;
            self.cursor = next;
            self.after_cursor.clear();
        }
        Ok(ids.len())
    }
}
