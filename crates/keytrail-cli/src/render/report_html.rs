//! A report as one self-contained HTML file: inline CSS, inline SVG charts, no script, no
//! font or image to fetch, so it opens the same from a mail attachment, a ticket or an
//! air-gapped laptop.
//!
//! It shows the title, the scope (time, window, lake coverage, inventory), the notes, a chart
//! of all keys' daily calls over the window, and the table with a chart of each key's daily
//! calls in its first column (each bar says its day and count when hovered).

use std::fmt::Write as _;

use keytrail_engine::arrow::array::RecordBatch;
use keytrail_engine::arrow::datatypes::SchemaRef;
use keytrail_model::time::day_string;
use keytrail_report::{Report, ReportKind};

/// Escape text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
:root { color-scheme: light; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bar: #2f6fbf; --zebra: #f6f8fa; --warn: #9a3412; --warn-bg: #fff1e6; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--fg); margin: 1.5rem 2rem; }
h1 { font-size: 1.4rem; margin: 0 0 .75rem; }
h2 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
dl.scope { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: 0 0 1rem; }
dl.scope dt { color: var(--muted); }
dl.scope dd { margin: 0; }
.notes { background: var(--warn-bg); border-left: 4px solid var(--warn); padding: .5rem 1rem; margin: 1rem 0; }
.notes li { margin: .25rem 0; }
figure { margin: .5rem 0 1rem; }
figcaption { color: var(--muted); font-size: .9em; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: .3rem .55rem; text-align: left; vertical-align: middle; white-space: nowrap; }
th { position: sticky; top: 0; background: #fff; font-weight: 600; }
tbody tr:nth-child(even) { background: var(--zebra); }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.wrap { white-space: normal; min-width: 16rem; max-width: 36rem; }
td.mono, td.key { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.flag { display: inline-block; padding: 0 .4rem; border-radius: .6rem; background: var(--warn-bg); color: var(--warn); font-weight: 600; }
.empty { color: var(--muted); }
svg .bar { fill: var(--bar); }
svg .base { stroke: var(--line); }
svg text { font-size: 11px; fill: var(--muted); }
footer { margin-top: 1.5rem; color: var(--muted); font-size: .85em; }
"#;

/// Columns shown in a monospace font, and columns whose text wraps.
const MONO: [&str; 4] = ["access_key_id", "account_id", "last_source_ip", "owner_arn"];
const WRAP: [&str; 2] = ["reason", "inventory_match"];
const FLAGS: [&str; 2] = ["flag", "flags"];

/// Render `report` (its rows already narrowed to `schema`/`batches`) as an HTML page.
pub fn render(
    report: &Report,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> anyhow::Result<String> {
    let (header, rows) = super::cells(schema, batches)?;
    let numeric: Vec<bool> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().is_numeric())
        .collect();
    let key_col = header.iter().position(|h| h == "access_key_id");
    let title = report.title();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"keytrail {}\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        env!("CARGO_PKG_VERSION"),
        escape(&title)
    );
    let _ = writeln!(h, "<h1>{}</h1>", escape(&title));
    h.push_str("<dl class=\"scope\">\n");
    for (k, v) in report.scope() {
        let _ = writeln!(h, "<dt>{}</dt><dd>{}</dd>", escape(&k), escape(&v));
    }
    let _ = writeln!(
        h,
        "<dt>rows</dt><dd>{}</dd>\n</dl>",
        output_count(rows.len(), report)
    );
    if !report.notes.is_empty() {
        h.push_str("<section class=\"notes\" id=\"notes\">\n<strong>Notes</strong>\n<ul>\n");
        for n in &report.notes {
            let _ = writeln!(h, "<li>{}</li>", escape(n));
        }
        h.push_str("</ul>\n</section>\n");
    }

    // All listed keys' calls per day.
    let listed: Vec<&str> = match key_col {
        Some(c) => rows
            .iter()
            .map(|r| r[c].as_str())
            .filter(|k| !k.is_empty())
            .collect(),
        None => Vec::new(),
    };
    let days = &report.activity.days;
    let mut totals = vec![0i64; days.len()];
    for k in &listed {
        if let Some(v) = report.activity.per_key.get(*k) {
            for (t, n) in totals.iter_mut().zip(v) {
                *t += n;
            }
        }
    }
    let _ = writeln!(
        h,
        "<h2>Daily calls, {} to {} (UTC days)</h2>",
        day_string(days.first().copied().unwrap_or_default()),
        day_string(days.last().copied().unwrap_or_default())
    );
    h.push_str("<figure id=\"activity-total\">\n");
    h.push_str(&total_chart(days, &totals));
    let _ = writeln!(
        h,
        "<figcaption>Calls made with the {} listed key(s), per UTC day of the window{}.</figcaption>\n</figure>",
        listed.len(),
        if totals.iter().all(|t| *t == 0) {
            ": none"
        } else {
            ""
        }
    );

    h.push_str("<h2>Keys</h2>\n<div class=\"table-wrap\">\n<table id=\"report\">\n<thead><tr>");
    if key_col.is_some() {
        h.push_str("<th>daily calls</th>");
    }
    for name in &header {
        let _ = write!(h, "<th>{}</th>", escape(name));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for r in &rows {
        h.push_str("<tr>");
        if let Some(c) = key_col {
            h.push_str("<td class=\"spark\">");
            h.push_str(&sparkline(
                days,
                report
                    .activity
                    .per_key
                    .get(r[c].as_str())
                    .map(Vec::as_slice),
            ));
            h.push_str("</td>");
        }
        for (i, cell) in r.iter().enumerate() {
            let name = header[i].as_str();
            let mut class = Vec::new();
            if numeric[i] {
                class.push("num");
            }
            if MONO.contains(&name) {
                class.push("mono");
            }
            if WRAP.contains(&name) {
                class.push("wrap");
            }
            let attr = if class.is_empty() {
                String::new()
            } else {
                format!(" class=\"{}\"", class.join(" "))
            };
            let body = if cell.is_empty() {
                if name == "access_key_id" {
                    "<span class=\"empty\">unknown</span>".to_owned()
                } else {
                    String::new()
                }
            } else if FLAGS.contains(&name) {
                cell.split(',')
                    .map(|f| format!("<span class=\"flag\">{}</span>", escape(f)))
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                escape(cell)
            };
            let _ = write!(h, "<td{attr}>{body}</td>");
        }
        h.push_str("</tr>\n");
    }
    if rows.is_empty() {
        let span = header.len() + usize::from(key_col.is_some());
        let _ = writeln!(
            h,
            "<tr><td colspan=\"{span}\" class=\"empty\">No keys to report.</td></tr>"
        );
    }
    h.push_str("</tbody>\n</table>\n</div>\n");
    let _ = writeln!(
        h,
        "<footer>Made by keytrail {} from the lake's <code>key_daily</code> and <code>events</code> tables. \
         Times are UTC. Column meanings: docs/reports.md.</footer>\n</body>\n</html>",
        env!("CARGO_PKG_VERSION")
    );
    Ok(h)
}

fn output_count(rows: usize, report: &Report) -> String {
    let what = match report.kind {
        ReportKind::LastUsed { .. } => "keys",
        _ => "flagged keys",
    };
    format!("{rows} {what}")
}

/// A bar chart of calls per day with a labelled axis.
fn total_chart(days: &[i32], totals: &[i64]) -> String {
    let n = days.len().max(1);
    let (left, top, width, height) = (48.0, 8.0, 720.0, 140.0);
    let slot = width / n as f64;
    let bar = (slot * 0.8).max(1.0);
    let max = totals.iter().copied().max().unwrap_or(0).max(1);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         aria-label=\"calls per day, at most {max}\">",
        w = left + width + 8.0,
        h = top + height + 24.0
    );
    let _ = write!(
        s,
        "<line class=\"base\" x1=\"{left}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\"/>",
        y = top + height,
        x2 = left + width
    );
    let _ = write!(
        s,
        "<text x=\"{x}\" y=\"{y}\" text-anchor=\"end\">{max}</text><text x=\"{x}\" y=\"{y0}\" text-anchor=\"end\">0</text>",
        x = left - 6.0,
        y = top + 10.0,
        y0 = top + height
    );
    for (i, (day, t)) in days.iter().zip(totals).enumerate() {
        let hgt = height * (*t as f64) / max as f64;
        let x = left + slot * i as f64 + (slot - bar) / 2.0;
        let _ = write!(
            s,
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{hgt:.1}\"><title>{d}: {t} calls</title></rect>",
            y = top + height - hgt,
            d = day_string(*day)
        );
        // Label every day when there are few, else about eight of them.
        let every = n.div_ceil(8);
        if i % every == 0 || i + 1 == n {
            let _ = write!(
                s,
                "<text x=\"{cx:.1}\" y=\"{ty}\" text-anchor=\"middle\">{label}</text>",
                cx = x + bar / 2.0,
                ty = top + height + 16.0,
                label = &day_string(*day)[5..]
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// A small per-key bar chart: one bar per day, scaled to the key's busiest day.
fn sparkline(days: &[i32], counts: Option<&[i64]>) -> String {
    let n = days.len().max(1);
    let (width, height) = (140.0, 22.0);
    let slot = width / n as f64;
    let bar = (slot * 0.8).max(0.8);
    let max = counts
        .and_then(|c| c.iter().copied().max())
        .unwrap_or(0)
        .max(1);
    let total: i64 = counts.map_or(0, |c| c.iter().sum());
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" width=\"{width}\" height=\"{h}\" viewBox=\"0 0 {width} {h}\" \
         aria-label=\"{total} calls in the window\">",
        h = height + 2.0
    );
    let _ = write!(
        s,
        "<line class=\"base\" x1=\"0\" y1=\"{height}\" x2=\"{width}\" y2=\"{height}\"/>"
    );
    if let Some(c) = counts {
        for (i, (day, v)) in days.iter().zip(c).enumerate() {
            if *v == 0 {
                continue;
            }
            let hgt = (height * (*v as f64) / max as f64).max(1.5);
            let _ = write!(
                s,
                "<rect class=\"bar\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{hgt:.1}\"><title>{d}: {v} calls</title></rect>",
                x = slot * i as f64 + (slot - bar) / 2.0,
                y = height - hgt,
                d = day_string(*day)
            );
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn sparkline_draws_one_bar_per_active_day() {
        let s = sparkline(&[20_055, 20_056, 20_057], Some(&[3, 0, 6]));
        assert_eq!(s.matches("<rect").count(), 2);
        assert!(s.contains("2024-11-30: 6 calls"), "{s}");
        assert!(s.contains("aria-label=\"9 calls in the window\""));
        let empty = sparkline(&[20_056], None);
        assert_eq!(empty.matches("<rect").count(), 0);
    }
}
