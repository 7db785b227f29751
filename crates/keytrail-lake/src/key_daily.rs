//! `key_daily`: one row per access key per UTC day, derived from the rows written to `events`.
//!
//! The aggregate is a commutative merge (counts add, sets unite, first/last take min/max, the
//! "last event" fields come from the greatest `(time, eventid)`), so the same events give the
//! same row whatever order and however many runs they arrive in.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampMillisecondArray,
};
use arrow::datatypes::TimestampMillisecondType;
use arrow::error::ArrowError;
use keytrail_model::schema::{UTC, col, key_daily_schema};
use keytrail_model::{KeyKind, Millis};

/// Who and what of the latest event seen for a key on a day.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Latest {
    time: Millis,
    event_id: Option<String>,
    account_id: Option<String>,
    principal_type: Option<String>,
    principal_arn: Option<String>,
    principal_id: Option<String>,
    user_name: Option<String>,
    event_source: Option<String>,
    event_name: Option<String>,
    region: Option<String>,
    source_ip: Option<String>,
}

impl Latest {
    fn is_after(&self, other: &Latest) -> bool {
        (self.time, &self.event_id) > (other.time, &other.event_id)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct KeyDay {
    first: Millis,
    latest: Latest,
    events: i64,
    errors: i64,
    ips: BTreeSet<String>,
    regions: BTreeSet<String>,
    sources: BTreeSet<String>,
    names: BTreeSet<String>,
    agents: BTreeSet<String>,
}

impl KeyDay {
    fn merge(&mut self, other: KeyDay) {
        self.first = self.first.min(other.first);
        if other.latest.is_after(&self.latest) {
            self.latest = other.latest;
        }
        self.events += other.events;
        self.errors += other.errors;
        self.ips.extend(other.ips);
        self.regions.extend(other.regions);
        self.sources.extend(other.sources);
        self.names.extend(other.names);
        self.agents.extend(other.agents);
    }
}

/// `key_daily` rows being built, by day then key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyDaily {
    days: BTreeMap<i32, HashMap<String, KeyDay>>,
}

fn strings<'a>(batch: &'a RecordBatch, path: &[&str]) -> Result<&'a StringArray, ArrowError> {
    let missing = || ArrowError::SchemaError(format!("no column {}", path.join(".")));
    let mut arr: &dyn Array = batch.column_by_name(path[0]).ok_or_else(missing)?.as_ref();
    for name in &path[1..] {
        arr = arr
            .as_struct_opt()
            .and_then(|s| s.column_by_name(name))
            .ok_or_else(missing)?
            .as_ref();
    }
    arr.as_string_opt::<i32>()
        .ok_or_else(|| ArrowError::SchemaError(format!("column {} is not Utf8", path.join("."))))
}

fn timestamps<'a>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a TimestampMillisecondArray, ArrowError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())
        .ok_or_else(|| ArrowError::SchemaError(format!("no millisecond timestamp column {name}")))
}

fn opt(a: &StringArray, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.value(i).to_owned())
}

fn insert(set: &mut BTreeSet<String>, a: &StringArray, i: usize) {
    if a.is_valid(i) && !set.contains(a.value(i)) {
        set.insert(a.value(i).to_owned());
    }
}

impl KeyDaily {
    pub fn is_empty(&self) -> bool {
        self.days.is_empty()
    }

    /// The days that have rows.
    pub fn days(&self) -> impl Iterator<Item = i32> + '_ {
        self.days.keys().copied()
    }

    /// Number of `(day, key)` rows.
    pub fn rows(&self) -> usize {
        self.days.values().map(HashMap::len).sum()
    }

    /// Add the rows of an `events` batch whose events all fall on `day`.
    pub fn add_events(&mut self, day: i32, batch: &RecordBatch) -> Result<(), ArrowError> {
        let key = strings(batch, &["accesskeyid"])?;
        let time = timestamps(batch, "eventtime")?;
        let event_id = strings(batch, &["eventid"])?;
        let source = strings(batch, &["eventsource"])?;
        let name = strings(batch, &["eventname"])?;
        let region = strings(batch, &["awsregion"])?;
        let ip = strings(batch, &["sourceipaddress"])?;
        let agent = strings(batch, &["useragent"])?;
        let error = strings(batch, &["errorcode"])?;
        // The caller's account, as the `calleraccountid` fact decides it.
        let account = strings(batch, &["calleraccountid"])?;
        let ptype = strings(batch, &["useridentity", "type"])?;
        let arn = strings(batch, &["useridentity", "arn"])?;
        let pid = strings(batch, &["useridentity", "principalid"])?;
        let user = strings(batch, &["useridentity", "username"])?;
        let map = self.days.entry(day).or_default();
        for i in 0..batch.num_rows() {
            if key.is_null(i) {
                continue;
            }
            let t = time.value(i);
            let latest = Latest {
                time: t,
                event_id: opt(event_id, i),
                account_id: opt(account, i),
                principal_type: opt(ptype, i),
                principal_arn: opt(arn, i),
                principal_id: opt(pid, i),
                user_name: opt(user, i),
                event_source: opt(source, i),
                event_name: opt(name, i),
                region: opt(region, i),
                source_ip: opt(ip, i),
            };
            let failed = error.is_valid(i) && !error.value(i).is_empty();
            let row = match map.get_mut(key.value(i)) {
                Some(row) => {
                    row.first = row.first.min(t);
                    if latest.is_after(&row.latest) {
                        row.latest = latest;
                    }
                    row.events += 1;
                    row
                }
                None => map.entry(key.value(i).to_owned()).or_insert(KeyDay {
                    first: t,
                    latest,
                    events: 1,
                    errors: 0,
                    ips: BTreeSet::new(),
                    regions: BTreeSet::new(),
                    sources: BTreeSet::new(),
                    names: BTreeSet::new(),
                    agents: BTreeSet::new(),
                }),
            };
            row.errors += i64::from(failed);
            insert(&mut row.ips, ip, i);
            insert(&mut row.regions, region, i);
            insert(&mut row.sources, source, i);
            insert(&mut row.names, name, i);
            insert(&mut row.agents, agent, i);
        }
        if map.is_empty() {
            self.days.remove(&day);
        }
        Ok(())
    }

    /// Add the rows of a `key_daily` batch of `day` (an existing file being merged).
    pub fn add_key_daily(&mut self, day: i32, batch: &RecordBatch) -> Result<(), ArrowError> {
        let s = |name: &str| strings(batch, &[name]);
        let key = s("accesskeyid")?;
        let first = timestamps(batch, col::FIRSTEVENTTIME)?;
        let last = timestamps(batch, col::LASTEVENTTIME)?;
        let ints = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int64Type>())
                .ok_or_else(|| ArrowError::SchemaError(format!("no Int64 column {name}")))
        };
        let events = ints("events")?;
        let errors = ints("errors")?;
        let (account, ptype, arn, pid, user) = (
            s("accountid")?,
            s("principaltype")?,
            s("principalarn")?,
            s("principalid")?,
            s("username")?,
        );
        let (leid, lsrc, lname, lregion, lip) = (
            s("lasteventid")?,
            s("lasteventsource")?,
            s("lasteventname")?,
            s("lastawsregion")?,
            s("lastsourceipaddress")?,
        );
        let list = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_list_opt::<i32>())
                .ok_or_else(|| ArrowError::SchemaError(format!("no list column {name}")))
        };
        let lists = [
            list("sourceipaddresses")?,
            list("awsregions")?,
            list("eventsources")?,
            list("eventnames")?,
            list("useragents")?,
        ];
        let map = self.days.entry(day).or_default();
        for i in 0..batch.num_rows() {
            let mut sets: [BTreeSet<String>; 5] = Default::default();
            for (set, l) in sets.iter_mut().zip(&lists) {
                if l.is_valid(i) {
                    let v = l.value(i);
                    if let Some(v) = v.as_string_opt::<i32>() {
                        set.extend(v.iter().flatten().map(str::to_owned));
                    }
                }
            }
            let [ips, regions, sources, names, agents] = sets;
            let row = KeyDay {
                first: first.value(i),
                latest: Latest {
                    time: last.value(i),
                    event_id: opt(leid, i),
                    account_id: opt(account, i),
                    principal_type: opt(ptype, i),
                    principal_arn: opt(arn, i),
                    principal_id: opt(pid, i),
                    user_name: opt(user, i),
                    event_source: opt(lsrc, i),
                    event_name: opt(lname, i),
                    region: opt(lregion, i),
                    source_ip: opt(lip, i),
                },
                events: events.value(i),
                errors: errors.value(i),
                ips,
                regions,
                sources,
                names,
                agents,
            };
            match map.get_mut(key.value(i)) {
                Some(existing) => existing.merge(row),
                None => {
                    map.insert(key.value(i).to_owned(), row);
                }
            }
        }
        Ok(())
    }

    /// Merge another aggregate into this one.
    pub fn merge(&mut self, other: KeyDaily) {
        for (day, rows) in other.days {
            let map = self.days.entry(day).or_default();
            for (key, row) in rows {
                match map.get_mut(&key) {
                    Some(existing) => existing.merge(row),
                    None => {
                        map.insert(key, row);
                    }
                }
            }
        }
    }

    /// Take the rows of one day out of the aggregate.
    /// Add the rows of a published `key_daily` file of `day`.
    pub fn add_file(&mut self, day: i32, path: &std::path::Path) -> Result<(), crate::LakeError> {
        for batch in crate::files::read_file(path)? {
            self.add_key_daily(day, &batch)
                .map_err(|e| crate::LakeError::arrow(path, e))?;
        }
        Ok(())
    }

    /// Write `day`'s rows as `key_daily/date=…/part-<run>.parquet` under `root`; the record
    /// names it relative to `root`.
    pub fn write_day(
        &self,
        day: i32,
        root: &std::path::Path,
        run_id: &str,
    ) -> Result<crate::FileRecord, crate::LakeError> {
        use keytrail_model::Table;
        let rel = format!(
            "{}/date={}/part-{run_id}.parquet",
            Table::KeyDaily.name(),
            keytrail_model::time::day_string(day)
        );
        let path = crate::rel_to_path(root, &rel);
        let batch = self
            .batch(day)
            .map_err(|e| crate::LakeError::arrow(&path, e))?;
        let written = crate::files::write_file(&path, Table::KeyDaily, &batch, run_id)?;
        Ok(crate::FileRecord {
            table: Table::KeyDaily.name().to_owned(),
            path: rel,
            rows: written.rows,
            bytes: written.bytes,
            stats: self.stats(day),
            covers: Vec::new(),
        })
    }

    /// What the commit record says of `day`'s file: the first and last event of its keys (the
    /// least `firsteventtime`, the greatest `lasteventtime`) and its least and greatest key, so
    /// that a reader answers the lake's time range without opening it and skips it for a key
    /// outside its range. `None` for a day without rows.
    fn stats(&self, day: i32) -> Option<crate::index::FileStats> {
        let rows = self.days.get(&day)?;
        Some(crate::index::FileStats {
            min_time: rows.values().map(|r| r.first).min()?,
            max_time: rows.values().map(|r| r.latest.time).max()?,
            min_key: rows.keys().min().cloned(),
            max_key: rows.keys().max().cloned(),
            key_changes: None,
        })
    }

    pub fn take_day(&mut self, day: i32) -> KeyDaily {
        let mut out = KeyDaily::default();
        if let Some(rows) = self.days.remove(&day) {
            out.days.insert(day, rows);
        }
        out
    }

    /// The rows of `day` as a `key_daily` batch, ordered by access key.
    pub fn batch(&self, day: i32) -> Result<RecordBatch, ArrowError> {
        let empty = HashMap::new();
        let rows = self.days.get(&day).unwrap_or(&empty);
        let mut keys: Vec<&String> = rows.keys().collect();
        keys.sort();
        let get = |f: fn(&KeyDay) -> Option<&str>| -> ArrayRef {
            Arc::new(keys.iter().map(|k| f(&rows[*k])).collect::<StringArray>())
        };
        let ts = |f: fn(&KeyDay) -> Millis| -> ArrayRef {
            Arc::new(
                TimestampMillisecondArray::from(
                    keys.iter().map(|k| f(&rows[*k])).collect::<Vec<_>>(),
                )
                .with_timezone(UTC),
            )
        };
        let list = |f: fn(&KeyDay) -> &BTreeSet<String>| -> ArrayRef {
            let mut b = ListBuilder::new(StringBuilder::new());
            for k in &keys {
                for v in f(&rows[*k]) {
                    b.values().append_value(v);
                }
                b.append(true);
            }
            Arc::new(b.finish())
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                keys.iter()
                    .map(|k| Some(k.as_str()))
                    .collect::<StringArray>(),
            ),
            Arc::new(
                keys.iter()
                    .map(|k| Some(KeyKind::of(k).as_str()))
                    .collect::<StringArray>(),
            ),
            get(|r| r.latest.account_id.as_deref()),
            get(|r| r.latest.principal_type.as_deref()),
            get(|r| r.latest.principal_arn.as_deref()),
            get(|r| r.latest.principal_id.as_deref()),
            get(|r| r.latest.user_name.as_deref()),
            ts(|r| r.first),
            ts(|r| r.latest.time),
            get(|r| r.latest.event_id.as_deref()),
            get(|r| r.latest.event_source.as_deref()),
            get(|r| r.latest.event_name.as_deref()),
            get(|r| r.latest.region.as_deref()),
            get(|r| r.latest.source_ip.as_deref()),
            Arc::new(Int64Array::from(
                keys.iter().map(|k| rows[*k].events).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                keys.iter().map(|k| rows[*k].errors).collect::<Vec<_>>(),
            )),
            list(|r| &r.ips),
            list(|r| &r.regions),
            list(|r| &r.sources),
            list(|r| &r.names),
            list(|r| &r.agents),
        ];
        RecordBatch::try_new(key_daily_schema(), columns)
    }
}

/// `(day, key)` rows a run holds in memory before it writes them to spill files: about 2.7 kB
/// each on generated data (the five sets dominate), so about 45 MB.
pub const SPILL_ROWS: usize = 16 * 1024;

/// A run's `key_daily` rows: held in memory up to [`SPILL_ROWS`] rows, then written, one file
/// per day, under `dir` (inside the run's staging directory, so they go with it) and
/// forgotten. [`KeyDailySpill::take_day`] gathers a day's rows back from memory and its spill
/// files; the merge is commutative, so the result is the rows the run would have held whole.
/// Memory is then bounded by [`SPILL_ROWS`] while the run writes, and by one day's keys at its
/// commit, whatever the number of days and keys.
#[derive(Debug)]
pub struct KeyDailySpill {
    held: KeyDaily,
    dir: std::path::PathBuf,
    spilled: BTreeMap<i32, Vec<std::path::PathBuf>>,
    spills: usize,
    limit: usize,
}

impl KeyDailySpill {
    pub fn new(dir: std::path::PathBuf) -> KeyDailySpill {
        KeyDailySpill::with_limit(dir, SPILL_ROWS)
    }

    /// As [`KeyDailySpill::new`], spilling past `limit` rows.
    pub fn with_limit(dir: std::path::PathBuf, limit: usize) -> KeyDailySpill {
        KeyDailySpill {
            held: KeyDaily::default(),
            dir,
            spilled: BTreeMap::new(),
            spills: 0,
            limit: limit.max(1),
        }
    }

    /// Add rows; write everything held to spill files once it passes the limit.
    pub fn merge(&mut self, rows: KeyDaily) -> Result<(), crate::LakeError> {
        self.held.merge(rows);
        if self.held.rows() >= self.limit {
            self.spill()?;
        }
        Ok(())
    }

    /// Take in every row of `other` (its spill files stay where they are).
    pub fn absorb(&mut self, other: KeyDailySpill) -> Result<(), crate::LakeError> {
        for (day, paths) in other.spilled {
            self.spilled.entry(day).or_default().extend(paths);
        }
        self.spills += other.spills;
        self.merge(other.held)
    }

    fn spill(&mut self) -> Result<(), crate::LakeError> {
        use keytrail_model::Table;
        let held = std::mem::take(&mut self.held);
        for day in held.days() {
            let path = self.dir.join(format!("{day}-{:05}.parquet", self.spills));
            let batch = held
                .batch(day)
                .map_err(|e| crate::LakeError::arrow(&path, e))?;
            crate::files::write_scratch(&path, Table::KeyDaily, &batch)?;
            self.spilled.entry(day).or_default().push(path);
        }
        self.spills += 1;
        Ok(())
    }

    /// Number of times rows were written out.
    pub fn spills(&self) -> usize {
        self.spills
    }

    /// The days that have rows, held or spilled.
    pub fn days(&self) -> Vec<i32> {
        let mut days: BTreeSet<i32> = self.held.days().collect();
        days.extend(self.spilled.keys().copied());
        days.into_iter().collect()
    }

    /// All of one day's rows, from memory and its spill files.
    pub fn take_day(&mut self, day: i32) -> Result<KeyDaily, crate::LakeError> {
        let mut out = self.held.take_day(day);
        for path in self.spilled.remove(&day).unwrap_or_default() {
            out.add_file(day, &path)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keytrail_model::{EventBatchBuilder, Table, decode_event};

    fn events(lines: &[&str]) -> RecordBatch {
        let mut b = EventBatchBuilder::new(Table::Events);
        for l in lines {
            b.append(&decode_event(l).expect("event"), "test");
        }
        b.finish().expect("batch")
    }

    const A1: &str = r#"{"eventTime":"2024-01-01T10:00:00Z","eventID":"a1","eventSource":"s3.amazonaws.com","eventName":"ListBuckets","awsRegion":"us-east-1","sourceIPAddress":"198.51.100.1","userAgent":"cli","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/alice","accountId":"111122223333","accessKeyId":"AKIAA","userName":"alice"}}"#;
    const A2: &str = r#"{"eventTime":"2024-01-01T12:00:00Z","eventID":"a2","eventSource":"iam.amazonaws.com","eventName":"CreateUser","awsRegion":"us-east-1","sourceIPAddress":"203.0.113.9","errorCode":"AccessDenied","userAgent":"cli","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/alice","accountId":"111122223333","accessKeyId":"AKIAA","userName":"alice"}}"#;
    const B1: &str = r#"{"eventTime":"2024-01-01T11:00:00Z","eventID":"b1","eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity","userIdentity":{"type":"AssumedRole","accessKeyId":"ASIAB"}}"#;
    const NOKEY: &str = r#"{"eventTime":"2024-01-01T11:00:00Z","eventID":"n1","userIdentity":{"type":"AWSService","invokedBy":"ec2.amazonaws.com"}}"#;

    #[test]
    fn aggregates_per_key() {
        let mut kd = KeyDaily::default();
        kd.add_events(19723, &events(&[A2, B1, A1, NOKEY]))
            .expect("add");
        assert_eq!(kd.rows(), 2);
        let batch = kd.batch(19723).expect("batch");
        let key = batch.column(0).as_string::<i32>();
        assert_eq!((key.value(0), key.value(1)), ("AKIAA", "ASIAB"));
        let kind = batch.column(1).as_string::<i32>();
        assert_eq!((kind.value(0), kind.value(1)), ("long-term", "temporary"));
        let events = batch
            .column_by_name("events")
            .expect("c")
            .as_primitive::<arrow::datatypes::Int64Type>();
        let errors = batch
            .column_by_name("errors")
            .expect("c")
            .as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!((events.value(0), errors.value(0)), (2, 1));
        let last = batch
            .column_by_name("lasteventname")
            .expect("c")
            .as_string::<i32>();
        assert_eq!(last.value(0), "CreateUser");
        let ips = batch
            .column_by_name("sourceipaddresses")
            .expect("c")
            .as_list::<i32>();
        let ips0 = ips.value(0);
        let ips0: Vec<_> = ips0.as_string::<i32>().iter().flatten().collect();
        assert_eq!(ips0, ["198.51.100.1", "203.0.113.9"]);
    }

    #[test]
    fn merging_runs_equals_one_run() {
        let mut whole = KeyDaily::default();
        whole
            .add_events(19723, &events(&[A1, A2, B1]))
            .expect("add");

        // Two runs, the second merged with the file the first wrote.
        let mut first = KeyDaily::default();
        first.add_events(19723, &events(&[A2])).expect("add");
        let file = first.batch(19723).expect("batch");
        let mut second = KeyDaily::default();
        second.add_events(19723, &events(&[B1, A1])).expect("add");
        second.add_key_daily(19723, &file).expect("merge file");
        assert_eq!(second, whole);
        assert_eq!(
            second.batch(19723).expect("b"),
            whole.batch(19723).expect("b")
        );
    }

    #[test]
    fn spilled_rows_come_back_as_one_run_of_them() {
        const C1: &str = r#"{"eventTime":"2024-01-02T09:00:00Z","eventID":"c1","eventSource":"ec2.amazonaws.com","eventName":"RunInstances","awsRegion":"eu-west-1","sourceIPAddress":"192.0.2.7","userAgent":"sdk","userIdentity":{"type":"IAMUser","accountId":"111122223333","accessKeyId":"AKIAA","userName":"alice"}}"#;
        let mut whole = KeyDaily::default();
        whole
            .add_events(19723, &events(&[A1, A2, B1]))
            .expect("add");
        whole.add_events(19724, &events(&[C1])).expect("add");

        let dir = tempfile::tempdir().expect("tmp");
        // A limit of 2 rows: the second piece spills both days held.
        let mut run = KeyDailySpill::with_limit(dir.path().join("spill"), 2);
        let pieces: [(i32, &[&str]); 4] = [
            (19723, &[A2]),
            (19724, &[C1]),
            (19723, &[B1]),
            (19723, &[A1]),
        ];
        for (day, lines) in pieces {
            let mut part = KeyDaily::default();
            part.add_events(day, &events(lines)).expect("add");
            run.merge(part).expect("merge");
        }
        assert_eq!(run.spills(), 2);
        assert_eq!(run.days(), vec![19723, 19724]);
        for day in [19723, 19724] {
            let got = run.take_day(day).expect("take");
            assert_eq!(got.batch(day).expect("b"), whole.batch(day).expect("b"));
        }
        assert!(run.days().is_empty());
    }

    #[test]
    fn a_spill_absorbed_into_another_gives_the_rows_of_both() {
        let mut whole = KeyDaily::default();
        whole
            .add_events(19723, &events(&[A1, A2, B1]))
            .expect("add");
        let dir = tempfile::tempdir().expect("tmp");
        let mut run = KeyDailySpill::with_limit(dir.path().join("run"), 2);
        let mut scope = KeyDailySpill::with_limit(dir.path().join("scope"), 1);
        let part = |lines: &[&str]| {
            let mut p = KeyDaily::default();
            p.add_events(19723, &events(lines)).expect("add");
            p
        };
        run.merge(part(&[A1])).expect("merge");
        // The scope spills its first piece and holds its second.
        scope.merge(part(&[A2])).expect("merge");
        scope.held.merge(part(&[B1]));
        assert_eq!((run.spills(), scope.spills()), (0, 1));
        run.absorb(scope).expect("absorb");
        assert_eq!(run.days(), vec![19723]);
        let got = run.take_day(19723).expect("take");
        assert_eq!(got.batch(19723).expect("b"), whole.batch(19723).expect("b"));
    }
}
