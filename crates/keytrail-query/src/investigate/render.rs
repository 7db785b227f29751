//! The investigation as text. Table and Markdown print every section; CSV is the timeline (one
//! table, for spreadsheets and SIEM imports); JSON is the whole [`Investigation`] with full
//! event rows; HTML is one self-contained page (no script, no network fetch).

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::{Investigation, Seen};
use crate::error::QueryError;
use crate::output::{self, Format};

/// One section: a title and a string table.
struct Section {
    title: &'static str,
    schema: SchemaRef,
    batch: RecordBatch,
}

fn section(
    title: &'static str,
    header: &[&str],
    rows: Vec<Vec<String>>,
) -> Result<Section, QueryError> {
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
            ) as arrow::array::ArrayRef
        })
        .collect();
    let batch =
        RecordBatch::try_new(Arc::clone(&schema), cols).map_err(|source| QueryError::Output {
            format: "text",
            source,
        })?;
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

fn sections(inv: &Investigation) -> Result<Vec<Section>, QueryError> {
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
        timeline(inv)?,
    ])
}

fn timeline(inv: &Investigation) -> Result<Section, QueryError> {
    let rows = inv
        .timeline
        .iter()
        .map(|t| {
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
        })
        .collect();
    section(
        "Timeline",
        &[
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
        ],
        rows,
    )
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

/// Render the investigation in `format`.
pub fn render(inv: &Investigation, format: Format) -> Result<String, QueryError> {
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(inv)
                .map_err(|e| QueryError::Invalid(format!("internal: writing JSON: {e}")))?;
            s.push('\n');
            Ok(s)
        }
        Format::Csv => {
            let t = timeline(inv)?;
            output::csv(&t.schema, &[t.batch])
        }
        Format::Table | Format::Markdown => {
            let md = format == Format::Markdown;
            let mut out = String::new();
            for l in heading(inv) {
                let _ = writeln!(out, "{}{l}", if md && out.is_empty() { "# " } else { "" });
            }
            if !inv.notes.is_empty() {
                let _ = writeln!(out, "\n{}", if md { "## Notes\n" } else { "NOTES" });
                for n in &inv.notes {
                    let _ = writeln!(out, "- {n}");
                }
            }
            for s in sections(inv)? {
                let _ = writeln!(
                    out,
                    "\n{}",
                    if md {
                        format!("## {}\n", s.title)
                    } else {
                        s.title.to_uppercase()
                    }
                );
                if md {
                    out.push_str(&output::markdown(&s.schema, &[s.batch])?);
                } else {
                    out.push_str(&output::table(&s.schema, &[s.batch], 70)?);
                }
            }
            Ok(out)
        }
        Format::Html => html(inv),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html(inv: &Investigation) -> Result<String, QueryError> {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <title>keytrail investigation</title><style>\
         body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
         table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:12px}\
         th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}\
         th{background:#f2f2f2}tr.err td{background:#fff1f0}.note{background:#fff8e1;padding:.5em 1em}\
         </style></head><body>\n",
    );
    let mut lines = heading(inv).into_iter();
    if let Some(h) = lines.next() {
        let _ = writeln!(out, "<h1>{}</h1>", esc(&h));
    }
    for l in lines {
        let _ = writeln!(out, "<p>{}</p>", esc(&l));
    }
    if !inv.notes.is_empty() {
        out.push_str("<div class=\"note\"><h2>Notes</h2><ul>\n");
        for n in &inv.notes {
            let _ = writeln!(out, "<li>{}</li>", esc(n));
        }
        out.push_str("</ul></div>\n");
    }
    for s in sections(inv)? {
        let (header, rows) = output::cells(&s.schema, &[s.batch])?;
        let err_col = header.iter().position(|h| h == "error");
        let _ = writeln!(
            out,
            "<h2>{}</h2>\n<table><tr>{}</tr>",
            esc(s.title),
            header
                .iter()
                .map(|h| format!("<th>{}</th>", esc(h)))
                .collect::<String>()
        );
        for r in rows {
            let failed = err_col.is_some_and(|i| r.get(i).is_some_and(|c| !c.is_empty()));
            let _ = writeln!(
                out,
                "<tr{}>{}</tr>",
                if failed { " class=\"err\"" } else { "" },
                r.iter()
                    .map(|c| format!("<td>{}</td>", esc(c)))
                    .collect::<String>()
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str("</body></html>\n");
    Ok(out)
}
