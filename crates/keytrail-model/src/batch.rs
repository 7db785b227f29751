//! Decoded events → Arrow record batches of [`crate::schema::events_schema`].
//!
//! The builder appends straight into Arrow buffers (no row objects in between); `finish`
//! assembles the nested structs and checks the result against THE schema, so a drift between
//! this file and `schema.rs` fails the first test that builds a batch.

use std::sync::Arc;

use arrow::array::NullBufferBuilder;
use arrow::array::{
    ArrayRef, BooleanBuilder, ListArray, RecordBatch, StringBuilder, StructArray,
    TimestampMillisecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Fields, SchemaRef};
use arrow::error::ArrowError;

use crate::event::{Event, extra_json};
use crate::facts::{EventView, Facts, facts};
use crate::schema::{Table, UTC};

/// A set of string columns filled together, plus the validity of the struct holding them.
struct StructCols<const N: usize> {
    cols: [StringBuilder; N],
    valid: NullBufferBuilder,
}

fn strings(rows: usize) -> StringBuilder {
    StringBuilder::with_capacity(rows, rows * 16)
}

impl<const N: usize> StructCols<N> {
    fn new(rows: usize) -> Self {
        StructCols {
            cols: std::array::from_fn(|_| strings(rows)),
            valid: NullBufferBuilder::new(rows),
        }
    }

    fn append(&mut self, values: Option<[Option<&str>; N]>) {
        match values {
            Some(vals) => {
                for (c, v) in self.cols.iter_mut().zip(vals) {
                    c.append_option(v);
                }
                self.valid.append_non_null();
            }
            None => {
                for c in &mut self.cols {
                    c.append_null();
                }
                self.valid.append_null();
            }
        }
    }

    fn children(&mut self) -> Vec<ArrayRef> {
        self.cols
            .iter_mut()
            .map(|c| Arc::new(c.finish()) as ArrayRef)
            .collect()
    }

    fn finish(&mut self, fields: &Fields) -> Result<ArrayRef, ArrowError> {
        let children = self.children();
        let nulls = self.valid.finish();
        Ok(Arc::new(StructArray::try_new(
            fields.clone(),
            children,
            nulls,
        )?))
    }
}

fn struct_fields(dt: &DataType) -> Result<&Fields, ArrowError> {
    match dt {
        DataType::Struct(f) => Ok(f),
        DataType::List(item) => struct_fields(item.data_type()),
        other => Err(ArrowError::SchemaError(format!(
            "expected a struct, found {other}"
        ))),
    }
}

fn child_fields<'f>(fields: &'f Fields, name: &str) -> Result<&'f Fields, ArrowError> {
    let f = fields
        .iter()
        .find(|f| f.name() == name)
        .ok_or_else(|| ArrowError::SchemaError(format!("no field {name}")))?;
    struct_fields(f.data_type())
}

/// Builds `events` (or `insights`) record batches from decoded events.
pub struct EventBatchBuilder {
    table: Table,
    schema: SchemaRef,
    len: usize,
    eventversion: StringBuilder,
    // useridentity: 7 scalar leaves, then onbehalfof, sessioncontext, then 2 more leaves.
    ui_head: StructCols<7>,
    ui_onbehalfof: StructCols<2>,
    sc_attributes: StructCols<2>,
    sc_issuer: StructCols<5>,
    sc_webid: StructCols<2>,
    sc_tail: StructCols<2>, // ec2roledelivery, sourceidentity; validity = sessioncontext's
    ui_tail: StructCols<2>, // identityprovider, credentialid; validity = useridentity's
    eventtime: TimestampMillisecondBuilder,
    mid: [StringBuilder; 12], // eventsource .. eventid
    readonly: BooleanBuilder,
    res_offsets: Vec<i32>,
    res_valid: NullBufferBuilder,
    res_items: StructCols<3>,
    tail: [StringBuilder; 8], // eventtype .. eventcategory
    managementevent: BooleanBuilder,
    addendum: StructCols<4>,
    sessioncredentialfromconsole: StringBuilder,
    edgedevicedetails: StringBuilder,
    tlsdetails: StructCols<3>,
    insightdetails: StringBuilder,
    accesskeyid: StringBuilder,
    extrafields: StringBuilder,
    sourceobject: StringBuilder,
    facts: FactBuilders,
}

/// The fact columns, in THE schema's order (`schema::fact_fields`).
pub struct FactBuilders {
    denied: BooleanBuilder,
    caller_account: StringBuilder,
    resource_account: StringBuilder,
    aws_service: BooleanBuilder,
    source_class: StringBuilder,
    target_key: StringBuilder,
    key_status: StringBuilder,
    minted_key: StringBuilder,
    minted_expiration: TimestampMillisecondBuilder,
    minted_principal: StringBuilder,
    target_user: StringBuilder,
    target_role: StringBuilder,
    target_policy: StringBuilder,
}

impl FactBuilders {
    pub fn with_capacity(rows: usize) -> FactBuilders {
        FactBuilders {
            denied: BooleanBuilder::with_capacity(rows),
            caller_account: strings(rows),
            resource_account: strings(rows),
            aws_service: BooleanBuilder::with_capacity(rows),
            source_class: strings(rows),
            target_key: StringBuilder::new(),
            key_status: StringBuilder::new(),
            minted_key: StringBuilder::new(),
            minted_expiration: TimestampMillisecondBuilder::new().with_timezone(UTC),
            minted_principal: StringBuilder::new(),
            target_user: StringBuilder::new(),
            target_role: StringBuilder::new(),
            target_policy: StringBuilder::new(),
        }
    }

    /// Append one event's facts.
    pub fn append(&mut self, f: &Facts) {
        self.denied.append_value(f.denied);
        self.caller_account
            .append_option(f.caller_account.as_deref());
        self.resource_account
            .append_option(f.resource_account.as_deref());
        self.aws_service.append_value(f.aws_service);
        self.source_class
            .append_option(f.source_class.map(|c| c.as_str()));
        self.target_key.append_option(f.target_key.as_deref());
        self.key_status
            .append_option(f.key_status.map(|s| s.as_str()));
        let m = f.minted.as_ref();
        self.minted_key.append_option(m.map(|m| m.key.as_str()));
        self.minted_expiration
            .append_option(m.and_then(|m| m.expiration));
        self.minted_principal
            .append_option(m.and_then(|m| m.principal.as_deref()));
        self.target_user.append_option(f.target_user.as_deref());
        self.target_role.append_option(f.target_role.as_deref());
        self.target_policy.append_option(f.target_policy.as_deref());
    }

    /// The columns appended so far, in schema order; the builders are empty afterwards.
    pub fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.denied.finish()),
            Arc::new(self.caller_account.finish()),
            Arc::new(self.resource_account.finish()),
            Arc::new(self.aws_service.finish()),
            Arc::new(self.source_class.finish()),
            Arc::new(self.target_key.finish()),
            Arc::new(self.key_status.finish()),
            Arc::new(self.minted_key.finish()),
            Arc::new(self.minted_expiration.finish()),
            Arc::new(self.minted_principal.finish()),
            Arc::new(self.target_user.finish()),
            Arc::new(self.target_role.finish()),
            Arc::new(self.target_policy.finish()),
        ]
    }
}

impl EventBatchBuilder {
    pub fn new(table: Table) -> Self {
        EventBatchBuilder::with_capacity(table, 1024)
    }

    /// A builder sized for about `rows` events.
    pub fn with_capacity(table: Table, rows: usize) -> Self {
        EventBatchBuilder {
            table,
            schema: table.schema(),
            len: 0,
            eventversion: strings(rows),
            ui_head: StructCols::new(rows),
            ui_onbehalfof: StructCols::new(rows),
            sc_attributes: StructCols::new(rows),
            sc_issuer: StructCols::new(rows),
            sc_webid: StructCols::new(rows),
            sc_tail: StructCols::new(rows),
            ui_tail: StructCols::new(rows),
            eventtime: TimestampMillisecondBuilder::with_capacity(rows).with_timezone(UTC),
            mid: std::array::from_fn(|_| strings(rows)),
            readonly: BooleanBuilder::with_capacity(rows),
            res_offsets: {
                let mut v = Vec::with_capacity(rows + 1);
                v.push(0);
                v
            },
            res_valid: NullBufferBuilder::new(rows),
            res_items: StructCols::new(rows),
            tail: std::array::from_fn(|_| strings(rows)),
            managementevent: BooleanBuilder::with_capacity(rows),
            addendum: StructCols::new(rows),
            sessioncredentialfromconsole: strings(rows),
            edgedevicedetails: strings(rows),
            tlsdetails: StructCols::new(rows),
            insightdetails: strings(rows),
            accesskeyid: strings(rows),
            extrafields: strings(rows),
            sourceobject: strings(rows),
            facts: FactBuilders::with_capacity(rows),
        }
    }

    pub fn table(&self) -> Table {
        self.table
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append one event read from `source` (a path or `s3://bucket/key`).
    pub fn append(&mut self, e: &Event<'_>, source: &str) {
        self.len += 1;
        self.eventversion.append_option(e.event_version.as_deref());

        let ui = e.user_identity.as_ref();
        self.ui_head.append(ui.map(|u| {
            [
                u.r#type.as_deref(),
                u.principal_id.as_deref(),
                u.arn.as_deref(),
                u.account_id.as_deref(),
                u.invoked_by.as_deref(),
                u.access_key_id.as_deref(),
                u.user_name.as_deref(),
            ]
        }));
        self.ui_onbehalfof.append(
            ui.and_then(|u| u.on_behalf_of.as_ref())
                .map(|o| [o.user_id.as_deref(), o.identity_store_arn.as_deref()]),
        );
        let sc = ui.and_then(|u| u.session_context.as_ref());
        self.sc_attributes.append(
            sc.and_then(|c| c.attributes.as_ref())
                .map(|a| [a.mfa_authenticated.as_deref(), a.creation_date.as_deref()]),
        );
        self.sc_issuer
            .append(sc.and_then(|c| c.session_issuer.as_ref()).map(|s| {
                [
                    s.r#type.as_deref(),
                    s.principal_id.as_deref(),
                    s.arn.as_deref(),
                    s.account_id.as_deref(),
                    s.user_name.as_deref(),
                ]
            }));
        self.sc_webid.append(
            sc.and_then(|c| c.web_id_federation_data.as_ref())
                .map(|w| [w.federated_provider.as_deref(), w.attributes.as_deref()]),
        );
        self.sc_tail
            .append(sc.map(|c| [c.ec2_role_delivery.as_deref(), c.source_identity.as_deref()]));
        self.ui_tail
            .append(ui.map(|u| [u.identity_provider.as_deref(), u.credential_id.as_deref()]));

        self.eventtime.append_value(e.event_time);
        let mid = [
            e.event_source.as_deref(),
            e.event_name.as_deref(),
            e.aws_region.as_deref(),
            e.source_ip_address.as_deref(),
            e.user_agent.as_deref(),
            e.error_code.as_deref(),
            e.error_message.as_deref(),
            e.request_parameters.as_deref(),
            e.response_elements.as_deref(),
            e.additional_event_data.as_deref(),
            e.request_id.as_deref(),
            e.event_id.as_deref(),
        ];
        for (b, v) in self.mid.iter_mut().zip(mid) {
            b.append_option(v);
        }
        self.readonly.append_option(e.read_only);

        match &e.resources {
            Some(items) => {
                for r in items {
                    self.res_items.append(Some([
                        r.arn.as_deref(),
                        r.account_id.as_deref(),
                        r.r#type.as_deref(),
                    ]));
                }
                self.res_valid.append_non_null();
            }
            None => self.res_valid.append_null(),
        }
        let last = self.res_offsets.last().copied().unwrap_or(0);
        let n = e.resources.as_ref().map_or(0, Vec::len);
        self.res_offsets
            .push(last + i32::try_from(n).unwrap_or(i32::MAX));

        let tail = [
            e.event_type.as_deref(),
            e.api_version.as_deref(),
            e.recipient_account_id.as_deref(),
            e.service_event_details.as_deref(),
            e.shared_event_id.as_deref(),
            e.vpc_endpoint_id.as_deref(),
            e.vpc_endpoint_account_id.as_deref(),
            e.event_category.as_deref(),
        ];
        for (b, v) in self.tail.iter_mut().zip(tail) {
            b.append_option(v);
        }
        self.managementevent.append_option(e.management_event);
        self.addendum.append(e.addendum.as_ref().map(|a| {
            [
                a.reason.as_deref(),
                a.updated_fields.as_deref(),
                a.original_request_id.as_deref(),
                a.original_event_id.as_deref(),
            ]
        }));
        self.sessioncredentialfromconsole
            .append_option(e.session_credential_from_console.as_deref());
        self.edgedevicedetails
            .append_option(e.edge_device_details.as_deref());
        self.tlsdetails.append(e.tls_details.as_ref().map(|t| {
            [
                t.tls_version.as_deref(),
                t.cipher_suite.as_deref(),
                t.client_provided_host_header.as_deref(),
            ]
        }));
        self.insightdetails
            .append_option(e.insight_details.as_deref());
        self.accesskeyid.append_option(e.access_key_id());
        self.extrafields.append_option(extra_json(&e.extra));
        self.sourceobject.append_value(source);
        self.facts.append(&facts(&EventView::of_event(e)));
    }

    /// Take the rows appended so far as a batch; the builder is empty afterwards.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let schema = Arc::clone(&self.schema);
        let fields = schema.fields();
        let field = |name: &str| {
            fields
                .iter()
                .find(|f| f.name() == name)
                .map(|f| f.data_type().clone())
                .ok_or_else(|| ArrowError::SchemaError(format!("no column {name}")))
        };

        // useridentity
        let ui_dt = field("useridentity")?;
        let ui_fields = struct_fields(&ui_dt)?;
        let sc_fields = child_fields(ui_fields, "sessioncontext")?;
        let sc_nulls = self.sc_tail.valid.finish();
        let [ec2, srcid] = take2(self.sc_tail.children())?;
        let sessioncontext: ArrayRef = Arc::new(StructArray::try_new(
            sc_fields.clone(),
            vec![
                self.sc_attributes
                    .finish(child_fields(sc_fields, "attributes")?)?,
                self.sc_issuer
                    .finish(child_fields(sc_fields, "sessionissuer")?)?,
                ec2,
                self.sc_webid
                    .finish(child_fields(sc_fields, "webidfederationdata")?)?,
                srcid,
            ],
            sc_nulls,
        )?);
        let mut ui_children = self.ui_head.children();
        let ui_nulls = self.ui_head.valid.finish();
        // The tail's validity mirrors the head's; drop it.
        let _ = self.ui_tail.valid.finish();
        ui_children.push(
            self.ui_onbehalfof
                .finish(child_fields(ui_fields, "onbehalfof")?)?,
        );
        ui_children.push(sessioncontext);
        ui_children.extend(self.ui_tail.children());
        let useridentity: ArrayRef = Arc::new(StructArray::try_new(
            ui_fields.clone(),
            ui_children,
            ui_nulls,
        )?);

        // resources
        let res_dt = field("resources")?;
        let DataType::List(item_field) = &res_dt else {
            return Err(ArrowError::SchemaError("resources is not a list".into()));
        };
        let items = self.res_items.finish(struct_fields(&res_dt)?)?;
        let offsets = OffsetBuffer::new(std::mem::replace(&mut self.res_offsets, vec![0]).into());
        let resources: ArrayRef = Arc::new(ListArray::try_new(
            Arc::clone(item_field),
            offsets,
            items,
            self.res_valid.finish(),
        )?);

        let mut columns: Vec<ArrayRef> = Vec::with_capacity(fields.len());
        columns.push(Arc::new(self.eventversion.finish()));
        columns.push(useridentity);
        columns.push(Arc::new(self.eventtime.finish()));
        for b in &mut self.mid {
            columns.push(Arc::new(b.finish()));
        }
        columns.push(Arc::new(self.readonly.finish()));
        columns.push(resources);
        for b in &mut self.tail {
            columns.push(Arc::new(b.finish()));
        }
        columns.push(Arc::new(self.managementevent.finish()));
        columns.push(self.addendum.finish(struct_fields(&field("addendum")?)?)?);
        columns.push(Arc::new(self.sessioncredentialfromconsole.finish()));
        columns.push(Arc::new(self.edgedevicedetails.finish()));
        columns.push(
            self.tlsdetails
                .finish(struct_fields(&field("tlsdetails")?)?)?,
        );
        columns.push(Arc::new(self.insightdetails.finish()));
        columns.push(Arc::new(self.accesskeyid.finish()));
        columns.push(Arc::new(self.extrafields.finish()));
        columns.push(Arc::new(self.sourceobject.finish()));
        columns.extend(self.facts.finish());
        self.len = 0;
        RecordBatch::try_new(schema, columns)
    }
}

/// Compute the fact columns of rows stored without them (a `events` or `insights` batch of a
/// schema version 1 file) and return the rows in THE schema of `table`: what
/// `keytrail lake upgrade` writes. The facts come from the stored columns through the same
/// functions ingest uses.
pub fn add_facts(batch: &RecordBatch, table: Table) -> Result<RecordBatch, ArrowError> {
    let schema = table.schema();
    let text = |path: &[&str]| -> Result<Option<arrow::array::StringArray>, ArrowError> {
        let mut arr: Option<ArrayRef> = batch.column_by_name(path[0]).cloned();
        for name in &path[1..] {
            arr = match arr {
                Some(a) => a
                    .as_any()
                    .downcast_ref::<StructArray>()
                    .and_then(|s| s.column_by_name(name).cloned()),
                None => None,
            };
        }
        Ok(match arr {
            Some(a) => Some(
                a.as_any()
                    .downcast_ref::<arrow::array::StringArray>()
                    .cloned()
                    .ok_or_else(|| {
                        ArrowError::SchemaError(format!("column {} is not Utf8", path.join(".")))
                    })?,
            ),
            None => None,
        })
    };
    let cols = [
        text(&["eventsource"])?,
        text(&["eventname"])?,
        text(&["errorcode"])?,
        text(&["requestparameters"])?,
        text(&["responseelements"])?,
        text(&["useridentity", "type"])?,
        text(&["useridentity", "accountid"])?,
        text(&["useridentity", "arn"])?,
        text(&["useridentity", "invokedby"])?,
        text(&["useridentity", "sessioncontext", "sessionissuer", "arn"])?,
        text(&["accesskeyid"])?,
        text(&["recipientaccountid"])?,
        text(&["sourceipaddress"])?,
    ];
    fn get(c: &Option<arrow::array::StringArray>, i: usize) -> Option<&str> {
        use arrow::array::Array;
        c.as_ref().filter(|a| a.is_valid(i)).map(|a| a.value(i))
    }
    let mut facts_cols = FactBuilders::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let v = EventView {
            event_source: get(&cols[0], i),
            event_name: get(&cols[1], i),
            error_code: get(&cols[2], i),
            request_parameters: get(&cols[3], i),
            response_elements: get(&cols[4], i),
            identity_type: get(&cols[5], i),
            identity_account: get(&cols[6], i),
            identity_arn: get(&cols[7], i),
            invoked_by: get(&cols[8], i),
            issuer_arn: get(&cols[9], i),
            access_key_id: get(&cols[10], i).filter(|k| !k.is_empty()),
            recipient_account: get(&cols[11], i),
            source_ip: get(&cols[12], i),
        };
        facts_cols.append(&facts(&v));
    }
    let mut computed = facts_cols.finish().into_iter();
    let fact_names: Vec<String> = crate::schema::fact_fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut columns = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        if fact_names.contains(f.name()) {
            columns.push(
                computed
                    .next()
                    .ok_or_else(|| ArrowError::SchemaError("fact columns out of step".into()))?,
            );
        } else {
            let c = batch.column_by_name(f.name()).ok_or_else(|| {
                ArrowError::SchemaError(format!("the stored rows have no column {}", f.name()))
            })?;
            columns.push(Arc::clone(c));
        }
    }
    RecordBatch::try_new(schema, columns)
}

fn take2(mut v: Vec<ArrayRef>) -> Result<[ArrayRef; 2], ArrowError> {
    match (v.pop(), v.pop()) {
        (Some(b), Some(a)) => Ok([a, b]),
        _ => Err(ArrowError::SchemaError("expected two columns".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode_event;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::TimestampMillisecondType;

    #[test]
    fn batch_matches_the_schema_and_keeps_values() {
        let a = decode_event(
            r#"{"eventTime":"2024-11-30T08:43:17Z","eventName":"CreateUser","userIdentity":{"type":"IAMUser","accessKeyId":"AKIAIOSFODNN7EXAMPLE","sessionContext":{"attributes":{"mfaAuthenticated":"false"}}},"resources":[{"ARN":"arn:1"},{"ARN":"arn:2"}],"readOnly":false,"@version":"1"}"#,
        )
        .expect("a");
        let b = decode_event(r#"{"eventTime":"2024-11-30T09:00:00Z","eventName":"ConsoleLogin","userIdentity":{"type":"Root","accessKeyId":""}}"#)
            .expect("b");
        let c = decode_event(r#"{"eventTime":"2024-11-30T10:00:00Z"}"#).expect("c");
        let mut builder = EventBatchBuilder::new(Table::Events);
        for e in [&a, &b, &c] {
            builder.append(e, "s3://bucket/key.json.gz");
        }
        let batch = builder.finish().expect("batch matches the schema");
        assert_eq!(batch.num_rows(), 3);
        assert!(builder.is_empty());

        let key = batch
            .column_by_name("accesskeyid")
            .expect("column")
            .as_string::<i32>();
        assert_eq!(key.value(0), "AKIAIOSFODNN7EXAMPLE");
        assert!(key.is_null(1), "empty key ID is no key");
        assert!(key.is_null(2));

        let ui = batch
            .column_by_name("useridentity")
            .expect("column")
            .as_struct();
        assert!(ui.is_valid(0) && ui.is_valid(1) && ui.is_null(2));
        let sc = ui.column_by_name("sessioncontext").expect("sc").as_struct();
        assert!(sc.is_valid(0) && sc.is_null(1));
        let attrs = sc.column_by_name("attributes").expect("attrs").as_struct();
        assert_eq!(
            attrs
                .column_by_name("mfaauthenticated")
                .expect("mfa")
                .as_string::<i32>()
                .value(0),
            "false"
        );

        let res = batch
            .column_by_name("resources")
            .expect("res")
            .as_list::<i32>();
        assert_eq!(res.value_length(0), 2);
        assert!(res.is_null(1));
        let t = batch
            .column_by_name("eventtime")
            .expect("t")
            .as_primitive::<TimestampMillisecondType>();
        assert_eq!(t.value(0), 1_732_956_197_000);
        let extra = batch
            .column_by_name("extrafields")
            .expect("x")
            .as_string::<i32>();
        assert_eq!(extra.value(0), r#"{"@version":"1"}"#);
        assert!(extra.is_null(1));

        // The builder is reusable after finish.
        builder.append(&c, "x");
        assert_eq!(builder.finish().expect("again").num_rows(), 1);
    }
}
