//! Writing to the terminal: stdout for results, stderr for errors.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::render::Format;

/// Write to stdout; a closed pipe (`keytrail ... | head`) surfaces as an error the caller maps
/// to success.
pub fn stdout(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// A status line on stderr (not a result: results go to stdout).
pub fn status(text: &str) {
    let _ = io::stderr().write_all(format!("{text}\n").as_bytes());
}

/// Print an error and its causes on stderr.
pub fn error(err: &anyhow::Error) {
    let mut text = format!("keytrail: {err}");
    for cause in err.chain().skip(1) {
        text.push_str(&format!("\n  caused by: {cause}"));
    }
    text.push('\n');
    let _ = io::stderr().write_all(text.as_bytes());
}

/// The output format: as asked, else from the output file's extension, else a table on a
/// terminal and CSV when stdout is a pipe or a file.
pub fn format_for(asked: Option<Format>, file: Option<&Path>) -> Format {
    if let Some(f) = asked {
        return f;
    }
    if let Some(f) = file
        .and_then(|f| f.extension())
        .and_then(|e| e.to_str())
        .and_then(Format::from_extension)
    {
        return f;
    }
    if file.is_none() && io::stdout().is_terminal() {
        Format::Table
    } else {
        Format::Csv
    }
}

/// Where a result goes: stdout, or `-o FILE` written atomically (a temporary file renamed into
/// place by [`Output::finish`]; a device or a pipe is written to directly, never replaced).
pub struct Output {
    sink: Box<dyn Write>,
    /// `(temporary, final)` paths of a regular file being written.
    rename: Option<(PathBuf, PathBuf)>,
}

impl Output {
    pub fn open(file: Option<&Path>) -> anyhow::Result<Output> {
        let Some(path) = file else {
            return Ok(Output {
                sink: Box::new(io::BufWriter::with_capacity(1 << 16, io::stdout())),
                rename: None,
            });
        };
        if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            return Ok(Output {
                sink: Box::new(io::BufWriter::new(f)),
                rename: None,
            });
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let f = std::fs::File::create(&tmp)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
        Ok(Output {
            sink: Box::new(io::BufWriter::with_capacity(1 << 16, f)),
            rename: Some((tmp, path.to_path_buf())),
        })
    }

    pub fn writer(&mut self) -> &mut dyn Write {
        &mut self.sink
    }

    /// Flush, and put a file in place.
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.sink.flush()?;
        drop(std::mem::replace(&mut self.sink, Box::new(io::sink())));
        if let Some((tmp, path)) = self.rename.take() {
            std::fs::rename(&tmp, &path)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        }
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        // Not finished (an error on the way): leave no half-written temporary file.
        if let Some((tmp, _)) = &self.rename {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Write a whole result to `-o FILE` (atomically) or stdout.
pub fn emit(text: &str, file: Option<&Path>) -> anyhow::Result<()> {
    let mut out = Output::open(file)?;
    out.writer().write_all(text.as_bytes())?;
    out.finish()
}

/// The session options the query flags ask for.
pub fn session_options(
    q: &crate::flags::QueryArgs,
) -> anyhow::Result<keytrail_engine::SessionOptions> {
    let mut opts = keytrail_engine::SessionOptions::default();
    if let Some(t) = q.threads {
        opts.threads = t as usize;
    }
    opts.memory_limit = q.memory_limit.0;
    Ok(opts)
}

/// The window the flags ask for, as `[since, until)` in ms.
pub fn window(w: &crate::flags::WindowArgs) -> anyhow::Result<(Option<i64>, Option<i64>)> {
    use keytrail_model::time::{Bound, now_millis, parse_time_bound};
    let now = now_millis();
    let since = w
        .since
        .as_deref()
        .map(|s| parse_time_bound(s, Bound::Start, now))
        .transpose()
        .context("--since")?;
    let until = w
        .until
        .as_deref()
        .map(|s| parse_time_bound(s, Bound::End, now))
        .transpose()
        .context("--until")?;
    if let (Some(s), Some(u)) = (since, until)
        && s >= u
    {
        anyhow::bail!("--since must be before --until");
    }
    Ok((since, until))
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in human units (SI, as `ls -h --si` and S3's console show them).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Parse a size such as `512M`, `2G`, `64k` or a plain number of bytes (binary units).
pub fn parse_size(s: &str) -> anyhow::Result<usize> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        None => (t, 1u64),
        Some((i, _)) => {
            let m = match t[i..]
                .to_ascii_lowercase()
                .trim_end_matches("ib")
                .trim_end_matches('b')
            {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                "t" => 1 << 40,
                _ => anyhow::bail!("`{s}` is not a size: use a number of bytes or 64K, 512M, 2G"),
            };
            (&t[..i], m)
        }
    };
    let n: u64 = num.trim().parse().map_err(|_| {
        anyhow::anyhow!("`{s}` is not a size: use a number of bytes or 64K, 512M, 2G")
    })?;
    usize::try_from(n.saturating_mul(mult)).map_err(|_| anyhow::anyhow!("`{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_numbers() {
        assert_eq!(parse_size("1G").expect("1G"), 1 << 30);
        assert_eq!(parse_size("512MiB").expect("m"), 512 << 20);
        assert_eq!(parse_size("64k").expect("k"), 64 << 10);
        assert_eq!(parse_size("100").expect("n"), 100);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5X").is_err());
        for (n, shown) in [
            (1 << 30, "1G"),
            (512 << 20, "512M"),
            (1536 << 20, "1536M"),
            (100, "100"),
        ] {
            let size = crate::flags::ByteSize(n);
            assert_eq!(size.to_string(), shown);
            assert_eq!(shown.parse::<crate::flags::ByteSize>(), Ok(size));
        }
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(153_000_000), "153.0 MB");
    }
}
