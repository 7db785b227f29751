//! THE Arrow schemas of the keytrail lake, defined once.
//!
//! Column names follow the CloudTrail table AWS documents for Athena, so a query written for
//! Athena ports with few changes. Differences (all listed in `docs/schema.md`):
//! `eventtime` is a UTC timestamp (Athena: string), `readonly` and `managementevent` are
//! booleans, `useridentity.sessioncontext.webidfederationdata.attributes` is JSON text (Athena:
//! map), and keytrail adds `accesskeyid`, `extrafields`, `insightdetails` and `sourceobject`.
//! The partition column `date` lives in the directory name (`date=YYYY-MM-DD`), not in files.
//!
//! Any change to these functions changes [`SCHEMA_VERSION`] and the snapshot test below.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Version of the lake's table schemas, stamped into every Parquet file's key-value metadata
/// under [`META_SCHEMA_VERSION`]. Bump it on any change to a schema below.
pub const SCHEMA_VERSION: u32 = 2;

/// Parquet/Arrow metadata key holding [`SCHEMA_VERSION`].
pub const META_SCHEMA_VERSION: &str = "keytrail.schema_version";
/// Parquet/Arrow metadata key naming the table a file belongs to.
pub const META_TABLE: &str = "keytrail.table";
/// Parquet/Arrow metadata key holding the keytrail version that wrote the file.
pub const META_WRITER: &str = "keytrail.writer";

/// The time zone of every timestamp column.
pub const UTC: &str = "UTC";

/// Column names used by code outside this module.
pub mod col {
    pub const USERIDENTITY: &str = "useridentity";
    pub const EVENTTIME: &str = "eventtime";
    pub const EVENTSOURCE: &str = "eventsource";
    pub const EVENTNAME: &str = "eventname";
    pub const AWSREGION: &str = "awsregion";
    pub const SOURCEIPADDRESS: &str = "sourceipaddress";
    pub const USERAGENT: &str = "useragent";
    pub const ERRORCODE: &str = "errorcode";
    pub const EVENTID: &str = "eventid";
    pub const EVENTTYPE: &str = "eventtype";
    pub const RECIPIENTACCOUNTID: &str = "recipientaccountid";
    pub const ACCESSKEYID: &str = "accesskeyid";
    pub const SOURCEOBJECT: &str = "sourceobject";
    pub const REQUESTPARAMETERS: &str = "requestparameters";
    pub const RESPONSEELEMENTS: &str = "responseelements";
    // The fact columns (schema version 2), each computed by one function of `crate::facts`.
    pub const DENIED: &str = "denied";
    pub const CALLERACCOUNTID: &str = "calleraccountid";
    pub const RESOURCEACCOUNTID: &str = "resourceaccountid";
    pub const AWSSERVICE: &str = "awsservice";
    pub const SOURCECLASS: &str = "sourceclass";
    pub const TARGETKEYID: &str = "targetkeyid";
    pub const KEYSTATUS: &str = "keystatus";
    pub const MINTEDKEYID: &str = "mintedkeyid";
    pub const MINTEDEXPIRATION: &str = "mintedexpiration";
    pub const MINTEDPRINCIPAL: &str = "mintedprincipal";
    pub const TARGETUSER: &str = "targetuser";
    pub const TARGETROLE: &str = "targetrole";
    pub const TARGETPOLICY: &str = "targetpolicy";
    /// `key_daily`: a key's first and last event of the day.
    pub const FIRSTEVENTTIME: &str = "firsteventtime";
    pub const LASTEVENTTIME: &str = "lasteventtime";
    /// Hive partition column (directory `date=YYYY-MM-DD`), not stored in files.
    pub const DATE: &str = "date";
}

/// The tables of a lake. Each is a directory under the lake root, Hive-partitioned by `date`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// One row per CloudTrail event (management and data events).
    Events,
    /// CloudTrail Insights events, kept apart from API activity; same columns as `events`.
    Insights,
    /// One row per access key per UTC day, derived from `events`.
    KeyDaily,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Events, Table::Insights, Table::KeyDaily];

    /// Directory name under the lake root, and the table name in SQL.
    pub fn name(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::Insights => "insights",
            Table::KeyDaily => "key_daily",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn schema(self) -> SchemaRef {
        match self {
            Table::Events | Table::Insights => events_schema_for(self),
            Table::KeyDaily => key_daily_schema(),
        }
    }
}

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn strukt(name: &str, children: Vec<Field>) -> Field {
    Field::new(name, DataType::Struct(Fields::from(children)), true)
}

/// The type of every timestamp column: milliseconds since the epoch, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some(UTC.into()))
}

/// Fields of `useridentity.sessioncontext.sessionissuer`.
fn session_issuer_fields() -> Vec<Field> {
    vec![
        utf8("type"),
        utf8("principalid"),
        utf8("arn"),
        utf8("accountid"),
        utf8("username"),
    ]
}

/// The `useridentity` struct, as in Athena's CloudTrail table.
pub fn useridentity_fields() -> Fields {
    Fields::from(vec![
        utf8("type"),
        utf8("principalid"),
        utf8("arn"),
        utf8("accountid"),
        utf8("invokedby"),
        utf8("accesskeyid"),
        utf8("username"),
        strukt("onbehalfof", vec![utf8("userid"), utf8("identitystorearn")]),
        strukt(
            "sessioncontext",
            vec![
                strukt(
                    "attributes",
                    vec![utf8("mfaauthenticated"), utf8("creationdate")],
                ),
                strukt("sessionissuer", session_issuer_fields()),
                utf8("ec2roledelivery"),
                strukt(
                    "webidfederationdata",
                    vec![utf8("federatedprovider"), utf8("attributes")],
                ),
                utf8("sourceidentity"),
            ],
        ),
        utf8("identityprovider"),
        utf8("credentialid"),
    ])
}

/// The element type of `resources`.
pub fn resource_fields() -> Fields {
    Fields::from(vec![utf8("arn"), utf8("accountid"), utf8("type")])
}

fn build_events_fields() -> Vec<Field> {
    let mut fields = vec![
        utf8("eventversion"),
        Field::new(
            col::USERIDENTITY,
            DataType::Struct(useridentity_fields()),
            true,
        ),
        Field::new(col::EVENTTIME, timestamp_type(), false),
        utf8(col::EVENTSOURCE),
        utf8(col::EVENTNAME),
        utf8(col::AWSREGION),
        utf8(col::SOURCEIPADDRESS),
        utf8(col::USERAGENT),
        utf8(col::ERRORCODE),
        utf8("errormessage"),
        utf8(col::REQUESTPARAMETERS),
        utf8(col::RESPONSEELEMENTS),
        utf8("additionaleventdata"),
        utf8("requestid"),
        utf8(col::EVENTID),
        Field::new("readonly", DataType::Boolean, true),
        Field::new(
            "resources",
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Struct(resource_fields()),
                true,
            ))),
            true,
        ),
        utf8(col::EVENTTYPE),
        utf8("apiversion"),
        utf8(col::RECIPIENTACCOUNTID),
        utf8("serviceeventdetails"),
        utf8("sharedeventid"),
        utf8("vpcendpointid"),
        utf8("vpcendpointaccountid"),
        utf8("eventcategory"),
        Field::new("managementevent", DataType::Boolean, true),
        strukt(
            "addendum",
            vec![
                utf8("reason"),
                utf8("updatedfields"),
                utf8("originalrequestid"),
                utf8("originaleventid"),
            ],
        ),
        utf8("sessioncredentialfromconsole"),
        utf8("edgedevicedetails"),
        strukt(
            "tlsdetails",
            vec![
                utf8("tlsversion"),
                utf8("ciphersuite"),
                utf8("clientprovidedhostheader"),
            ],
        ),
        utf8("insightdetails"),
        // keytrail's own columns.
        utf8(col::ACCESSKEYID),
        utf8("extrafields"),
        utf8(col::SOURCEOBJECT),
    ];
    fields.extend(fact_fields());
    fields
}

/// The fact columns (schema version 2): what the event means, computed at ingest by
/// `crate::facts` (one function per column) so no query re-derives it.
pub fn fact_fields() -> Vec<Field> {
    vec![
        Field::new(col::DENIED, DataType::Boolean, false),
        utf8(col::CALLERACCOUNTID),
        utf8(col::RESOURCEACCOUNTID),
        Field::new(col::AWSSERVICE, DataType::Boolean, false),
        utf8(col::SOURCECLASS),
        utf8(col::TARGETKEYID),
        utf8(col::KEYSTATUS),
        utf8(col::MINTEDKEYID),
        Field::new(col::MINTEDEXPIRATION, timestamp_type(), true),
        utf8(col::MINTEDPRINCIPAL),
        utf8(col::TARGETUSER),
        utf8(col::TARGETROLE),
        utf8(col::TARGETPOLICY),
    ]
}

fn metadata(table: Table) -> HashMap<String, String> {
    HashMap::from([
        (META_SCHEMA_VERSION.to_owned(), SCHEMA_VERSION.to_string()),
        (META_TABLE.to_owned(), table.name().to_owned()),
    ])
}

static EVENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new_with_metadata(
        build_events_fields(),
        metadata(Table::Events),
    ))
});
static INSIGHTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new_with_metadata(
        build_events_fields(),
        metadata(Table::Insights),
    ))
});

/// Schema of the `events` table: one row per CloudTrail event.
pub fn events_schema() -> SchemaRef {
    Arc::clone(&EVENTS)
}

fn events_schema_for(table: Table) -> SchemaRef {
    match table {
        Table::Insights => Arc::clone(&INSIGHTS),
        _ => events_schema(),
    }
}

fn list_of_utf8(name: &str) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        true,
    )
}

static KEY_DAILY: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new_with_metadata(
        vec![
            Field::new(col::ACCESSKEYID, DataType::Utf8, false),
            Field::new("keykind", DataType::Utf8, false),
            utf8("accountid"),
            utf8("principaltype"),
            utf8("principalarn"),
            utf8("principalid"),
            utf8("username"),
            Field::new(col::FIRSTEVENTTIME, timestamp_type(), false),
            Field::new(col::LASTEVENTTIME, timestamp_type(), false),
            utf8("lasteventid"),
            utf8("lasteventsource"),
            utf8("lasteventname"),
            utf8("lastawsregion"),
            utf8("lastsourceipaddress"),
            Field::new("events", DataType::Int64, false),
            Field::new("errors", DataType::Int64, false),
            list_of_utf8("sourceipaddresses"),
            list_of_utf8("awsregions"),
            list_of_utf8("eventsources"),
            list_of_utf8("eventnames"),
            list_of_utf8("useragents"),
        ],
        metadata(Table::KeyDaily),
    ))
});

/// Schema of the `key_daily` table: one row per access key per UTC day.
pub fn key_daily_schema() -> SchemaRef {
    Arc::clone(&KEY_DAILY)
}

/// A plain-text rendering of a schema, one leaf per line with its type: what the snapshot
/// test pins and what `docs/schema.md` must match.
pub fn describe(schema: &Schema) -> String {
    fn walk(out: &mut String, prefix: &str, field: &Field) {
        let path = if prefix.is_empty() {
            field.name().clone()
        } else {
            format!("{prefix}.{}", field.name())
        };
        let null = if field.is_nullable() { "" } else { " NOT NULL" };
        match field.data_type() {
            DataType::Struct(children) => {
                out.push_str(&format!("{path}: struct{null}\n"));
                for c in children {
                    walk(out, &path, c);
                }
            }
            DataType::List(item) => match item.data_type() {
                DataType::Struct(children) => {
                    out.push_str(&format!("{path}: list<struct>{null}\n"));
                    for c in children {
                        walk(out, &format!("{path}[]"), c);
                    }
                }
                other => out.push_str(&format!("{path}: list<{other}>{null}\n")),
            },
            other => out.push_str(&format!("{path}: {other}{null}\n")),
        }
    }
    let mut out = String::new();
    for f in schema.fields() {
        walk(&mut out, "", f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_schema_snapshot() {
        insta::assert_snapshot!(describe(&events_schema()));
    }

    #[test]
    fn key_daily_schema_snapshot() {
        insta::assert_snapshot!(describe(&key_daily_schema()));
    }

    /// `docs/schema.md` names every column of both tables in its tables' first cells.
    #[test]
    fn the_schema_page_lists_every_column() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/schema.md"))
                .expect("docs/schema.md");
        for schema in [events_schema(), key_daily_schema()] {
            for line in describe(&schema).lines() {
                let path = line.split(':').next().unwrap_or_default();
                let cell = format!("| `{path}` |");
                assert!(
                    doc.contains(&cell),
                    "docs/schema.md has no row for `{path}`"
                );
            }
        }
    }

    #[test]
    fn schemas_carry_their_version_and_table() {
        for t in Table::ALL {
            let s = t.schema();
            assert_eq!(
                s.metadata().get(META_SCHEMA_VERSION),
                Some(&SCHEMA_VERSION.to_string())
            );
            assert_eq!(
                s.metadata().get(META_TABLE).map(String::as_str),
                Some(t.name())
            );
            assert_eq!(Table::from_name(t.name()), Some(t));
        }
    }
}
