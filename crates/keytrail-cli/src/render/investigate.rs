//! The investigation as text, written as it is read. Table and Markdown print every section,
//! then the timeline; CSV is the timeline (one table, for spreadsheets and SIEM imports); JSON
//! is the whole investigation with each timeline row's full event; HTML is one self-contained
//! page (no script, no network fetch). The timeline is streamed a chunk at a time
//! ([`keytrail_investigate::Timeline`]), so its length costs no memory.

use std::io::Write;
use std::sync::Arc;

use keytrail_engine::LakeSession;
use keytrail_engine::arrow::array::{RecordBatch, StringArray};
use keytrail_engine::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use keytrail_investigate::{Activity, Investigation, Seen, Timeline, TimelineRow};

use super::{BatchWriter, Format, escape};

/// One section: a title and a string table.
struct Section {
    title: &'static str,
    schema: SchemaRef,
    batch: RecordBatch,
}

fn string_batch(header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<(SchemaRef, RecordBatch)> {
    let schema = Arc::new(Schema::new(
        header
            .iter()
            .map(|h| Field::new(*h, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let cols = (0..header.len())
        .map(|i| {
            Arc::new(
                rows.iter()
                    .map(|r| r.get(i).filter(|c| !c.is_empty()).cloned())
                    .collect::<StringArray>(),
            ) as keytrail_engine::arrow::array::ArrayRef
        })
        .collect();
    let batch = RecordBatch::try_new(Arc::clone(&schema), cols)?;
    Ok((schema, batch))
}

fn section(
    title: &'static str,
    header: &[&str],
    rows: Vec<Vec<String>>,
) -> anyhow::Result<Section> {
    let (schema, batch) = string_batch(header, &rows)?;
    Ok(Section {
        title,
        schema,
        batch,
    })
}

fn o(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

fn seen_rows(v: &[Seen]) -> Vec<Vec<String>> {
    v.iter()
        .map(|s| {
            vec![
                s.value.clone(),
                s.events.to_string(),
                s.errors.to_string(),
                s.first.clone(),
                s.last.clone(),
                s.keys.join(" "),
            ]
        })
        .collect()
}

fn sections(inv: &Investigation) -> anyhow::Result<Vec<Section>> {
    const SEEN: &[&str] = &["value", "events", "errors", "first", "last", "keys"];
    let keys = inv
        .keys
        .iter()
        .map(|k| {
            vec![
                format!("{}{}", "  ".repeat(k.depth), k.key),
                k.kind.clone(),
                o(&k.parent),
                o(&k.principal),
                o(&k.account),
                k.events.to_string(),
                k.errors.to_string(),
                o(&k.first_seen),
                o(&k.last_seen),
                k.deactivated
                    .as_ref()
                    .map(|d| format!("{} {}", d.action, d.time))
                    .unwrap_or_default(),
                if k.used_after_ancestor_deactivated > 0 {
                    k.used_after_ancestor_deactivated.to_string()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    let derived = inv
        .derived
        .iter()
        .map(|e| {
            vec![
                e.time.clone(),
                e.parent.clone(),
                e.event_name.clone(),
                e.child.clone(),
                o(&e.child_principal),
                o(&e.expiration),
                o(&e.source_ip),
                o(&e.event_id),
            ]
        })
        .collect();
    let blast = inv
        .blast_radius
        .iter()
        .map(|b| {
            vec![
                b.group.to_owned(),
                b.time.clone(),
                b.action.clone(),
                b.resource.clone(),
                if b.succeeded { "yes" } else { "no" }.to_owned(),
                b.count.to_string(),
                o(&b.key),
                o(&b.event_id),
            ]
        })
        .collect();
    Ok(vec![
        section(
            "Keys in the chain",
            &[
                "key",
                "kind",
                "parent",
                "principal",
                "account",
                "events",
                "errors",
                "first seen",
                "last seen",
                "deactivated",
                "used after parent deactivated",
            ],
            keys,
        )?,
        section(
            "Derived credentials",
            &[
                "time",
                "parent",
                "call",
                "child",
                "child principal",
                "expiration",
                "source ip",
                "event id",
            ],
            derived,
        )?,
        section(
            "Blast radius",
            &[
                "group",
                "time",
                "action",
                "resource",
                "succeeded",
                "calls",
                "key",
                "event id",
            ],
            blast,
        )?,
        section("Source IPs", SEEN, seen_rows(&inv.activity.source_ips))?,
        section("User agents", SEEN, seen_rows(&inv.activity.user_agents))?,
        section("Regions", SEEN, seen_rows(&inv.activity.regions))?,
        section("Services", SEEN, seen_rows(&inv.activity.services))?,
    ])
}

const TIMELINE: [&str; 12] = [
    "time",
    "key",
    "identity",
    "call",
    "region",
    "source ip",
    "error",
    "summary",
    "user agent",
    "identity type",
    "event id",
    "relation",
];

fn timeline_cells(t: &TimelineRow) -> Vec<String> {
    vec![
        t.time.clone(),
        o(&t.key),
        o(&t.identity_arn),
        format!(
            "{}:{}",
            t.event_source
                .as_deref()
                .unwrap_or("")
                .trim_end_matches(".amazonaws.com"),
            t.event_name.as_deref().unwrap_or("")
        ),
        o(&t.region),
        o(&t.source_ip),
        o(&t.error_code),
        t.summary.clone(),
        o(&t.user_agent),
        o(&t.identity_type),
        o(&t.event_id),
        t.relation.to_owned(),
    ]
}

fn heading(inv: &Investigation) -> Vec<String> {
    let mut lines = vec![format!(
        "Investigation of {} — {} key(s) in the chain, {} event(s) made with them{}",
        inv.start_keys.join(", "),
        inv.keys.len(),
        inv.activity.events,
        match (&inv.window.since, &inv.window.until) {
            (None, None) => String::new(),
            (s, u) => format!(", window {} .. {}", o(s), o(u)),
        }
    )];
    if let (Some(f), Some(l)) = (&inv.activity.first_seen, &inv.activity.last_seen) {
        lines.push(format!(
            "First seen {f}, last seen {l}; {} call(s) failed.",
            inv.activity.errors
        ));
    }
    lines
}

/// A writer that indents every line after the first by one level (two spaces), so that a
/// value written pretty through it reads as a member of the top object.
struct Indented<'a>(&'a mut dyn Write);

impl Write for Indented<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for line in buf.split_inclusive(|b| *b == b'\n') {
            self.0.write_all(line)?;
            if line.ends_with(b"\n") {
                self.0.write_all(b"  ")?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Write `v` as pretty JSON, a member `name` of the top object, straight to `out` (the blast
/// radius of a long chain is hundreds of thousands of items: never held as text or as a
/// `serde_json::Value`). `end` follows it.
fn member(
    out: &mut dyn Write,
    name: &str,
    v: &impl serde::Serialize,
    end: &str,
) -> anyhow::Result<()> {
    write!(out, "  {}: ", serde_json::to_string(name)?)?;
    serde_json::to_writer_pretty(Indented(out), v)?;
    writeln!(out, "{end}")?;
    Ok(())
}

/// The parts of an investigation written before its timeline (the chain, the derived keys,
/// the blast radius, the activity), freed once written: for a busy chain they are hundreds of
/// megabytes that would otherwise be held while the timeline is read and written.
fn release_written(inv: &mut Investigation) {
    inv.keys = Vec::new();
    inv.derived = Vec::new();
    inv.blast_radius = Vec::new();
    inv.activity = Activity::default();
}

/// Write the investigation in `format`, reading the timeline's rows from `session`.
pub async fn render(
    out: &mut dyn Write,
    mut inv: Investigation,
    session: &LakeSession,
    format: Format,
) -> anyhow::Result<()> {
    let inv = &mut inv;
    let mut timeline = Timeline::open(session, inv, format == Format::Json).await?;
    match format {
        Format::Json => {
            writeln!(out, "{{")?;
            member(out, "start_keys", &inv.start_keys, ",")?;
            member(out, "window", &inv.window, ",")?;
            member(out, "keys", &inv.keys, ",")?;
            member(out, "derived", &inv.derived, ",")?;
            member(out, "blast_radius", &inv.blast_radius, ",")?;
            member(out, "activity", &inv.activity, ",")?;
            member(out, "custody", &inv.custody, ",")?;
            member(out, "timeline_rows", &inv.timeline_rows, ",")?;
            release_written(inv);
            write!(out, "  \"timeline\": [")?;
            let mut first = true;
            while let Some(chunk) = timeline.next(session).await? {
                for (row, event) in chunk.rows.iter().zip(&chunk.events_json) {
                    let mut text = serde_json::to_string(row)?;
                    text.pop(); // the closing brace
                    write!(
                        out,
                        "{}\n    {text},\"event\":{event}}}",
                        if first { "" } else { "," }
                    )?;
                    first = false;
                }
            }
            writeln!(out, "{}],", if first { "" } else { "\n  " })?;
            member(out, "notes", &inv.notes, "")?;
            writeln!(out, "}}")?;
        }
        Format::Jsonl => {
            release_written(inv);
            while let Some(chunk) = timeline.next(session).await? {
                for row in &chunk.rows {
                    writeln!(out, "{}", serde_json::to_string(row)?)?;
                }
            }
        }
        Format::Csv => {
            release_written(inv);
            stream_timeline(out, &mut timeline, session, Format::Csv).await?
        }
        Format::Table | Format::Markdown => {
            let md = format == Format::Markdown;
            let mut first = true;
            for l in heading(inv) {
                writeln!(out, "{}{l}", if md && first { "# " } else { "" })?;
                first = false;
            }
            if !inv.notes.is_empty() {
                writeln!(out, "\n{}", if md { "## Notes\n" } else { "NOTES" })?;
                for n in &inv.notes {
                    writeln!(out, "- {n}")?;
                }
            }
            for s in sections(inv)? {
                title(out, s.title, md)?;
                super::write_batches(out, format, &s.schema, &[s.batch], 70)?;
            }
            release_written(inv);
            title(out, "Timeline", md)?;
            stream_timeline(out, &mut timeline, session, format).await?;
        }
        Format::Html => html(out, inv, &mut timeline, session).await?,
    }
    Ok(())
}

fn title(out: &mut dyn Write, t: &str, md: bool) -> anyhow::Result<()> {
    if md {
        writeln!(out, "\n## {t}\n")?;
    } else {
        writeln!(out, "\n{}", t.to_uppercase())?;
    }
    Ok(())
}

async fn stream_timeline(
    out: &mut dyn Write,
    timeline: &mut Timeline,
    session: &LakeSession,
    format: Format,
) -> anyhow::Result<()> {
    let (schema, _) = string_batch(&TIMELINE, &[])?;
    let mut w = BatchWriter::new(format, schema, 70)?;
    while let Some(chunk) = timeline.next(session).await? {
        let rows: Vec<Vec<String>> = chunk.rows.iter().map(timeline_cells).collect();
        let (_, batch) = string_batch(&TIMELINE, &rows)?;
        w.write(out, &batch)?;
    }
    w.finish(out)?;
    Ok(())
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
     table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:12px}\
     th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}\
     th{background:#f2f2f2}tr.err td{background:#fff1f0}.note{background:#fff8e1;padding:.5em 1em}";

fn html_table_head(out: &mut dyn Write, title: &str, header: &[String]) -> anyhow::Result<()> {
    writeln!(
        out,
        "<h2>{}</h2>\n<table><tr>{}</tr>",
        escape(title),
        header
            .iter()
            .map(|h| format!("<th>{}</th>", escape(h)))
            .collect::<String>()
    )?;
    Ok(())
}

fn html_row(out: &mut dyn Write, cells: &[String], failed: bool) -> anyhow::Result<()> {
    writeln!(
        out,
        "<tr{}>{}</tr>",
        if failed { " class=\"err\"" } else { "" },
        cells
            .iter()
            .map(|c| format!("<td>{}</td>", escape(c)))
            .collect::<String>()
    )?;
    Ok(())
}

async fn html(
    out: &mut dyn Write,
    inv: &mut Investigation,
    timeline: &mut Timeline,
    session: &LakeSession,
) -> anyhow::Result<()> {
    writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <title>keytrail investigation</title><style>{STYLE}</style></head><body>"
    )?;
    let mut lines = heading(inv).into_iter();
    if let Some(h) = lines.next() {
        writeln!(out, "<h1>{}</h1>", escape(&h))?;
    }
    for l in lines {
        writeln!(out, "<p>{}</p>", escape(&l))?;
    }
    if !inv.notes.is_empty() {
        writeln!(out, "<div class=\"note\"><h2>Notes</h2><ul>")?;
        for n in &inv.notes {
            writeln!(out, "<li>{}</li>", escape(n))?;
        }
        writeln!(out, "</ul></div>")?;
    }
    for s in sections(inv)? {
        let (header, rows) = super::cells(&s.schema, &[s.batch])?;
        html_table_head(out, s.title, &header)?;
        for r in rows {
            html_row(out, &r, false)?;
        }
        writeln!(out, "</table>")?;
    }
    release_written(inv);
    let header: Vec<String> = TIMELINE.iter().map(|h| (*h).to_owned()).collect();
    html_table_head(out, "Timeline", &header)?;
    while let Some(chunk) = timeline.next(session).await? {
        for t in &chunk.rows {
            html_row(out, &timeline_cells(t), t.error_code.is_some())?;
        }
    }
    writeln!(out, "</table>\n</body></html>")?;
    Ok(())
}
