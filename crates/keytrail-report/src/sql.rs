//! The SQL of the reports. Every report is one statement over the lake's tables (`events`,
//! `key_daily`) and, when an inventory is given, the tables `inventory_keys` and
//! `credential_slots`; DataFusion plans and runs it. Nothing here loops over rows.
//!
//! # Time
//!
//! A report is "as of" an instant (`--as-of`, default now) and counts activity in a window
//! `[since, as_of)`. `key_daily` holds whole UTC days, so a day only partly inside the window
//! reads `events`: `as_of`'s day is re-aggregated from its events before `as_of`, and `since`'s
//! day takes only its window counts from `events` (see [`daily`]). The figures are exact, and
//! `events` is read for at most two days. Every other day comes from `key_daily`. Days after `as_of` are
//! never read, so a report over an old lake is reproducible.
//!
//! # Dialects
//!
//! Every report's statement is also written in DuckDB's dialect, for the benchmark that runs the
//! same query in both engines (`benches/`); the two differ only in how a typed timestamp
//! literal, an ordered "last" aggregate, epoch milliseconds, integer division and a day's text
//! are spelled. The inventory's tables exist only in a keytrail session: the benchmark runs the
//! lake-only reports.

use keytrail_model::time::{day_of, day_string};
use keytrail_model::{KeyKind, Millis};

/// Milliseconds in a day.
pub const DAY: i64 = 86_400_000;

/// The SQL dialect to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    DataFusion,
    DuckDb,
}

impl Dialect {
    /// A UTC timestamp literal.
    fn ts(self, ms: Millis) -> String {
        match self {
            Dialect::DataFusion => {
                format!("arrow_cast({ms}, 'Timestamp(Millisecond, Some(\"UTC\"))')")
            }
            Dialect::DuckDb => format!("make_timestamptz({}::BIGINT)", ms * 1000),
        }
    }

    /// A typed NULL timestamp.
    fn null_ts(self) -> &'static str {
        match self {
            Dialect::DataFusion => "arrow_cast(NULL, 'Timestamp(Millisecond, Some(\"UTC\"))')",
            Dialect::DuckDb => "CAST(NULL AS TIMESTAMPTZ)",
        }
    }

    fn date(self, day: i32) -> String {
        format!("DATE '{}'", day_string(day))
    }

    /// Milliseconds since the epoch of a timestamp expression.
    fn ms(self, e: &str) -> String {
        match self {
            Dialect::DataFusion => format!("CAST({e} AS BIGINT)"),
            Dialect::DuckDb => format!("epoch_ms({e})"),
        }
    }

    /// Integer division.
    fn idiv(self, a: &str, b: &str) -> String {
        match self {
            Dialect::DataFusion => format!("({a}) / {b}"),
            Dialect::DuckDb => format!("({a}) // {b}"),
        }
    }

    /// The value of `x` in the row with the greatest `order` (an ordered aggregate).
    fn last(self, x: &str, order: &str) -> String {
        match self {
            Dialect::DataFusion => format!("last_value({x} ORDER BY {order})"),
            Dialect::DuckDb => format!("last({x} ORDER BY {order})"),
        }
    }

    /// How many distinct values the lists `x` of a group hold together (an aggregate; NULL when
    /// every list is NULL; the lists hold no NULL).
    fn distinct_in_lists(self, x: &str) -> String {
        match self {
            Dialect::DataFusion => format!(
                "CAST(cardinality(array_distinct(flatten(array_agg({x}) FILTER (WHERE {x} IS NOT NULL)))) AS BIGINT)"
            ),
            Dialect::DuckDb => format!(
                "len(list_distinct(flatten(array_agg({x}) FILTER (WHERE {x} IS NOT NULL))))"
            ),
        }
    }

    /// A timestamp as `YYYY-MM-DD`.
    fn day_text(self, e: &str) -> String {
        match self {
            Dialect::DataFusion => format!("to_char({e}, '%Y-%m-%d')"),
            Dialect::DuckDb => format!("strftime({e}, '%Y-%m-%d')"),
        }
    }
}

/// The instants a report covers: activity is counted in `[since, as_of)`, and nothing at or
/// after `as_of` is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub since: Millis,
    pub as_of: Millis,
}

impl Window {
    /// The UTC days the window touches (for charts), first to last.
    pub fn days(&self) -> Vec<i32> {
        let last = day_of(self.as_of - 1).max(day_of(self.since));
        (day_of(self.since)..=last).collect()
    }
}

/// `key_daily`'s key kind, from the key ID's prefix (as `keytrail_model::KeyKind::of`).
const KIND_OF_KEY: &str = "CASE WHEN accesskeyid LIKE 'AKIA%' THEN 'long-term' WHEN accesskeyid LIKE 'ASIA%' THEN 'temporary' ELSE 'other' END";

/// The body of the `daily` CTE: one row per key per UTC day before `as_of`, in `key_daily`'s
/// columns, plus the day's activity inside the window (`w_events`, `w_errors`, `w_ips`).
///
/// Every day before `as_of`'s comes from `key_daily`. Two days may be only partly inside the
/// window, and read `events`:
///
/// - `as_of`'s own day (unless `as_of` is midnight): its rows are re-aggregated from `events`
///   before `as_of`, last use and all;
/// - `since`'s day (unless midnight, or the same day): `key_daily` has its last use, and only
///   the window's counts are taken from `events` (from `since` on), in extra rows whose other
///   columns are NULL: they are never a key's latest row (see [`lake_keys`]), and `min`/`max`
///   skip them.
///
/// `kinds` keeps the keys of one kind only (`key_daily`'s `keykind`, and the same rule for the
/// days read from `events`): the unused and rotation reports judge long-term keys, a few
/// hundred among a lake's hundred thousand role sessions' keys.
pub fn daily(w: &Window, d: Dialect, kinds: KindFilter) -> String {
    let (kind_daily, kind_events) = match kinds.kind() {
        Some(k) => (
            format!(" AND keykind = '{k}'"),
            format!(" AND {KIND_OF_KEY} = '{k}'"),
        ),
        None => (String::new(), String::new()),
    };
    let a_day = day_of(w.as_of);
    let a_partial = w.as_of.rem_euclid(DAY) != 0;
    let s_day = day_of(w.since);
    let s_partial = w.since.rem_euclid(DAY) != 0;
    // The first whole day inside the window.
    let w_day = d.date(if s_partial { s_day + 1 } else { s_day });
    let since = d.ts(w.since);
    let mut sql = format!(
        "SELECT accesskeyid, keykind, accountid, principaltype, principalarn, username, \"date\", \
         firsteventtime, lasteventtime, lasteventid, lasteventsource, lasteventname, lastawsregion, lastsourceipaddress, \
         CASE WHEN \"date\" >= {w_day} THEN events ELSE 0 END AS w_events, \
         CASE WHEN \"date\" >= {w_day} THEN errors ELSE 0 END AS w_errors, \
         CASE WHEN \"date\" >= {w_day} THEN sourceipaddresses END AS w_ips \
         FROM key_daily WHERE \"date\" < {a}{kind_daily}",
        a = d.date(a_day),
    );
    if s_partial && s_day < a_day {
        let text = "CAST(NULL AS VARCHAR)";
        let ts = d.null_ts();
        sql.push_str(&format!(
            " UNION ALL SELECT accesskeyid, {text} AS keykind, {text} AS accountid, {text} AS principaltype, \
             {text} AS principalarn, {text} AS username, \"date\", {ts} AS firsteventtime, {ts} AS lasteventtime, \
             {text} AS lasteventid, {text} AS lasteventsource, {text} AS lasteventname, {text} AS lastawsregion, \
             {text} AS lastsourceipaddress, \
             count(*) AS w_events, \
             count(*) FILTER (WHERE errorcode <> '') AS w_errors, \
             array_agg(DISTINCT sourceipaddress) FILTER (WHERE sourceipaddress IS NOT NULL) AS w_ips \
             FROM events WHERE \"date\" = {s} AND accesskeyid IS NOT NULL AND eventtime >= {since}{kind_events} \
             GROUP BY accesskeyid, \"date\"",
            s = d.date(s_day),
        ));
    }
    if a_partial {
        let order = "eventtime, eventid NULLS FIRST";
        let last = |x: &str| d.last(x, order);
        sql.push_str(&format!(
            " UNION ALL SELECT accesskeyid, {KIND_OF_KEY} AS keykind, \
             {account} AS accountid, {ptype} AS principaltype, {arn} AS principalarn, {user} AS username, \"date\", \
             min(eventtime) AS firsteventtime, max(eventtime) AS lasteventtime, {eid} AS lasteventid, \
             {src} AS lasteventsource, {name} AS lasteventname, {region} AS lastawsregion, {ip} AS lastsourceipaddress, \
             count(*) FILTER (WHERE eventtime >= {since}) AS w_events, \
             count(*) FILTER (WHERE eventtime >= {since} AND errorcode <> '') AS w_errors, \
             array_agg(DISTINCT sourceipaddress) FILTER (WHERE eventtime >= {since} AND sourceipaddress IS NOT NULL) AS w_ips \
             FROM events WHERE \"date\" = {a} AND accesskeyid IS NOT NULL AND eventtime < {as_of}{kind_events} \
             GROUP BY accesskeyid, \"date\"",
            account = last("calleraccountid"),
            ptype = last("useridentity.type"),
            arn = last("useridentity.arn"),
            user = last("useridentity.username"),
            eid = last("eventid"),
            src = last("eventsource"),
            name = last("eventname"),
            region = last("awsregion"),
            ip = last("sourceipaddress"),
            a = d.date(a_day),
            as_of = d.ts(w.as_of),
        ));
    }
    sql
}

/// CTEs of the last-used report (the unused and rotation reports make `daily` and `lake_keys`
/// tables of their [`Script`]): `daily` and `lake_keys` (one row per key seen in the lake
/// before `as_of`, with its latest use, its activity in the window and its distinct source IPs
/// in the window).
///
/// `daily` holds only the keys of `kinds`: the report lists no other. The inventory's matching
/// reads only long-term keys' rows, so it is the same unless `kinds` is temporary keys, and then
/// the inventory's rows (long-term keys all) are not listed either.
fn lake_ctes(w: &Window, d: Dialect, kinds: KindFilter) -> String {
    format!(
        "daily AS ({daily}), lake_keys AS ({lake_keys})",
        daily = daily(w, d, kinds),
        lake_keys = lake_keys(d, true),
    )
}

/// The body of `lake_keys`, over `daily`: a key's sums, and its latest use (who, which call,
/// where from); with `source_ips`, also how many distinct source IPs it used in the window
/// (the last-used report's column: counted in the same aggregate as the sums, not by a scan of
/// its own).
///
/// The latest use is the `daily` row whose `lasteventtime` is the key's greatest, joined back
/// to the key's sums, instead of one ordered "last" aggregate per column: DataFusion holds each
/// such aggregate's ordering per group as scalar values, and the nine of them took most of the
/// report's time. The row is unique because `daily` has one row per key per day (`key_daily`'s
/// own rule, and the re-aggregated partial day is a day `key_daily` is not read for) and a
/// day's last event lies in that day; the count-only rows of `since`'s day have no
/// `lasteventtime`, so they never match.
fn lake_keys(d: Dialect, source_ips: bool) -> String {
    let (count, column) = if source_ips {
        (
            format!(", {} AS source_ips", d.distinct_in_lists("w_ips")),
            ", a.source_ips",
        )
    } else {
        (String::new(), "")
    };
    format!(
        "SELECT a.accesskeyid, l.keykind, l.accountid, l.principaltype, l.principalarn, l.username, \
           a.first_seen, a.last_used, l.lasteventsource, l.lasteventname, l.lastawsregion, l.lastsourceipaddress, \
           a.events, a.errors{column} \
         FROM (SELECT accesskeyid, min(firsteventtime) AS first_seen, max(lasteventtime) AS last_used, \
           sum(w_events) AS events, sum(w_errors) AS errors{count} FROM daily GROUP BY accesskeyid) a \
         LEFT JOIN daily l ON l.accesskeyid = a.accesskeyid AND l.lasteventtime = a.last_used"
    )
}

/// Calls that changed a key's status before `as_of` (the `targetkeyid` and `keystatus`
/// facts: successful `CreateAccessKey`, `UpdateAccessKey` and `DeleteAccessKey`): which key,
/// which user, and the status each call left the key in.
fn key_changes(w: &Window, d: Dialect) -> String {
    format!(
        "SELECT eventtime, eventid, eventname, targetkeyid AS key_id, \
           keystatus AS status, \
           COALESCE(targetuser, \
             CASE WHEN useridentity.type = 'Root' THEN '<root_account>' ELSE useridentity.username END) AS user_name, \
           resourceaccountid AS account_id \
         FROM events \
         WHERE keystatus IS NOT NULL AND eventtime < {as_of}",
        as_of = d.ts(w.as_of),
    )
}

/// A report's SQL: tables computed first, each once and in order (a table may read those before
/// it), then the statement whose rows are the report.
///
/// DataFusion plans a CTE again at every reference: the unused and rotation reports read their
/// per-key facts in several places, and as one statement scanned `key_daily` ten times and
/// `events` four. Their shared parts are tables here instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    /// `(name, statement)`, in the order to compute them.
    pub tables: Vec<(&'static str, String)>,
    /// The report's rows.
    pub query: String,
}

impl Script {
    /// The script as one statement, its tables as CTEs of the query (for DuckDB, which computes a
    /// CTE read more than once only once; as temporary tables it took twice the time).
    pub fn text(&self) -> String {
        if self.tables.is_empty() {
            return self.query.clone();
        }
        let ctes = self
            .tables
            .iter()
            .map(|(name, statement)| format!("{name} AS ({statement})"))
            .collect::<Vec<_>>()
            .join(", ");
        match self.query.strip_prefix("WITH ") {
            Some(rest) => format!("WITH {ctes}, {rest}"),
            None => format!("WITH {ctes} {}", self.query),
        }
    }
}

/// The `inventory` CTE: one row per key the inventory knows (by ID, or as an unmatched
/// credential report slot with a NULL ID), with what the inventory says about it.
///
/// Credential report slots are matched to key IDs by, in this order (the first rule that gives
/// exactly one key wins, and a key claimed by two slots is given to neither):
///
/// 1. a list-access-keys/CSV key of the same user whose `CreateDate` is within 1 s of the
///    slot's `last_rotated`;
/// 2. a `CreateAccessKey` event in the lake for the same user and account within 5 s of
///    `last_rotated`;
/// 3. the user's only key slot and the only long-term key of the user's ARN in the lake, first
///    seen at or after `last_rotated`, and used in the lake on the day the report says the key
///    was last used.
fn inventory_ctes(w: &Window, has_inventory: bool, d: Dialect) -> String {
    let null_ts = d.null_ts();
    if !has_inventory {
        return format!(
            "inventory AS (SELECT CAST(NULL AS VARCHAR) AS access_key_id, CAST(NULL AS VARCHAR) AS user_name, \
               CAST(NULL AS VARCHAR) AS user_arn, CAST(NULL AS VARCHAR) AS account_id, CAST(NULL AS VARCHAR) AS status, \
               {null_ts} AS created, {null_ts} AS iam_last_used, CAST(NULL AS VARCHAR) AS iam_last_used_region, \
               CAST(NULL AS VARCHAR) AS iam_last_used_service, CAST(NULL AS BOOLEAN) AS iam_never_used, \
               CAST(NULL AS VARCHAR) AS inventory, CAST(NULL AS VARCHAR) AS inventory_match WHERE false)"
        );
    }
    let ms = |e: &str| d.ms(e);
    format!(
        "lake_users AS (SELECT accesskeyid AS key_id, max(principalarn) AS user_arn, min(firsteventtime) AS first_seen \
           FROM daily WHERE keykind = 'long-term' GROUP BY accesskeyid), \
         arn_keys AS (SELECT user_arn, count(*) AS n FROM lake_users GROUP BY user_arn), \
         slot_users AS (SELECT user_arn, count(*) AS slots FROM credential_slots GROUP BY user_arn), \
         key_days AS (SELECT DISTINCT accesskeyid, \"date\" FROM daily), \
         cand AS ( \
           SELECT s.user_arn, s.slot, k.access_key_id AS key_id, 1 AS rule \
             FROM credential_slots s JOIN inventory_keys k ON k.user_name = s.user_name \
             WHERE (k.account_id IS NULL OR s.account_id IS NULL OR k.account_id = s.account_id) \
               AND abs({k_created} - {s_rotated}) <= 1000 \
           UNION ALL \
           SELECT s.user_arn, s.slot, c.key_id, 2 AS rule \
             FROM credential_slots s JOIN key_changes c ON c.user_name = s.user_name \
             WHERE c.eventname = 'CreateAccessKey' AND c.key_id IS NOT NULL \
               AND (c.account_id IS NULL OR s.account_id IS NULL OR c.account_id = s.account_id) \
               AND abs({c_time} - {s_rotated}) <= 5000 \
           UNION ALL \
           SELECT s.user_arn, s.slot, l.key_id, 3 AS rule \
             FROM credential_slots s \
             JOIN slot_users su ON su.user_arn = s.user_arn AND su.slots = 1 \
             JOIN arn_keys ak ON ak.user_arn = s.user_arn AND ak.n = 1 \
             JOIN lake_users l ON l.user_arn = s.user_arn \
             JOIN key_days kd ON kd.accesskeyid = l.key_id AND kd.\"date\" = CAST(s.last_used AS DATE) \
             WHERE s.last_rotated IS NULL OR {l_first} >= {s_rotated} - 1000), \
         per_rule AS (SELECT user_arn, slot, rule, count(DISTINCT key_id) AS n, max(key_id) AS key_id \
           FROM cand GROUP BY user_arn, slot, rule), \
         pick AS (SELECT user_arn, slot, rule, key_id FROM \
           (SELECT p.*, row_number() OVER (PARTITION BY user_arn, slot ORDER BY rule) AS r FROM per_rule p WHERE n = 1) t \
           WHERE r = 1), \
         claims AS (SELECT key_id, count(*) AS n FROM pick GROUP BY key_id), \
         fits AS (SELECT user_arn, slot, max(n) AS n FROM per_rule GROUP BY user_arn, slot), \
         inv_users AS (SELECT DISTINCT user_name FROM inventory_keys), \
         slots AS (SELECT s.*, \
             CASE WHEN c.n = 1 THEN p.key_id END AS key_id, \
             CASE WHEN c.n = 1 THEN p.rule END AS rule, \
             CASE \
               WHEN c.n = 1 THEN NULL \
               WHEN p.key_id IS NOT NULL THEN 'the key that fits it (' || p.key_id || ') fits another slot too' \
               WHEN f.n > 1 THEN CAST(f.n AS VARCHAR) || ' keys fit it' \
               WHEN COALESCE(ak.n, 0) = 0 AND iu.user_name IS NULL THEN 'no key of this user is in the lake or a key list' \
               WHEN s.last_rotated IS NULL THEN 'the report gives no creation time for it' \
               ELSE 'its creation time (' || {s_day} || ') matches no key of a key list nor a CreateAccessKey event in the lake, and the user has ' \
                 || CAST(COALESCE(ak.n, 0) AS VARCHAR) || ' long-term key(s) in the lake' \
             END AS unmatched \
           FROM credential_slots s \
           LEFT JOIN pick p ON p.user_arn = s.user_arn AND p.slot = s.slot \
           LEFT JOIN claims c ON c.key_id = p.key_id \
           LEFT JOIN fits f ON f.user_arn = s.user_arn AND f.slot = s.slot \
           LEFT JOIN arn_keys ak ON ak.user_arn = s.user_arn \
           LEFT JOIN inv_users iu ON iu.user_name = s.user_name), \
         report_users AS (SELECT DISTINCT user_name FROM credential_slots), \
         inventory AS (SELECT COALESCE(k.access_key_id, s.key_id) AS access_key_id, \
             COALESCE(k.user_name, s.user_name) AS user_name, s.user_arn, \
             COALESCE(k.account_id, s.account_id) AS account_id, \
             COALESCE(k.status, CASE WHEN s.active THEN 'Active' WHEN NOT s.active THEN 'Inactive' END) AS status, \
             COALESCE(k.created, s.last_rotated) AS created, \
             CASE WHEN s.last_used < {as_of} THEN s.last_used END AS iam_last_used, \
             CASE WHEN s.last_used < {as_of} THEN s.last_used_region END AS iam_last_used_region, \
             CASE WHEN s.last_used < {as_of} THEN s.last_used_service END AS iam_last_used_service, \
             COALESCE(s.never_used, false) AS iam_never_used, \
             concat_ws(' + ', k.source, CASE WHEN s.user_arn IS NOT NULL THEN 'credential-report' END) AS inventory, \
             CASE \
               WHEN s.user_arn IS NOT NULL AND s.key_id IS NULL THEN \
                 'credential report key ' || CAST(s.slot AS VARCHAR) || ' of ' || s.user_name || ': key ID unknown: ' || s.unmatched \
               WHEN s.rule = 1 THEN 'credential report key ' || CAST(s.slot AS VARCHAR) || ': matched by creation time to the key list' \
               WHEN s.rule = 2 THEN 'credential report key ' || CAST(s.slot AS VARCHAR) || ': matched by creation time to a CreateAccessKey event' \
               WHEN s.rule = 3 THEN 'credential report key ' || CAST(s.slot AS VARCHAR) || ': matched as the only key of the user in the lake' \
               WHEN ru.user_name IS NOT NULL THEN 'in no credential report slot of ' || k.user_name \
             END AS inventory_match \
           FROM inventory_keys k \
           FULL OUTER JOIN slots s ON k.access_key_id = s.key_id \
           LEFT JOIN report_users ru ON ru.user_name = k.user_name \
           WHERE COALESCE(k.created, s.last_rotated) IS NULL OR COALESCE(k.created, s.last_rotated) < {as_of})",
        as_of = d.ts(w.as_of),
        k_created = ms("k.created"),
        s_rotated = ms("s.last_rotated"),
        c_time = ms("c.eventtime"),
        l_first = ms("l.first_seen"),
        s_day = d.day_text("s.last_rotated"),
    )
}

/// Which keys the last-used report lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KindFilter {
    #[default]
    All,
    LongTerm,
    Temporary,
}

impl KindFilter {
    /// The kind kept (its name in `key_daily.keykind`), or `None` for every kind.
    fn kind(self) -> Option<&'static str> {
        match self {
            KindFilter::All => None,
            KindFilter::LongTerm => Some(KeyKind::LongTerm.as_str()),
            KindFilter::Temporary => Some(KeyKind::Temporary.as_str()),
        }
    }

    /// The report's rows of the kind kept (its `kind` column).
    fn condition(self) -> String {
        match self.kind() {
            Some(k) => format!("kind = '{k}'"),
            None => "TRUE".to_owned(),
        }
    }
}

/// The owner's name: the IAM user, or the role, federated user or root for temporary keys.
const OWNER: &str = "COALESCE(i.user_name, k.username, CASE k.principaltype \
    WHEN 'AssumedRole' THEN split_part(k.principalarn, '/', 2) \
    WHEN 'FederatedUser' THEN split_part(k.principalarn, '/', 2) \
    WHEN 'Root' THEN '<root_account>' END)";

/// The owner's ARN: the user's, or for a role session the role's (`arn:aws:iam::A:role/R`; a
/// role's path is not in the session ARN, so it is not shown).
const OWNER_ARN: &str = "CASE WHEN k.principaltype = 'AssumedRole' THEN \
    'arn:' || split_part(k.principalarn, ':', 2) || ':iam::' || split_part(k.principalarn, ':', 5) || ':role/' || split_part(k.principalarn, '/', 2) \
    ELSE COALESCE(k.principalarn, i.user_arn) END";

/// The latest known use, from the lake or the credential report, and where it comes from.
const LAST_USED: &str = "CASE WHEN i.iam_last_used IS NULL OR k.last_used >= i.iam_last_used \
    THEN COALESCE(k.last_used, i.iam_last_used) ELSE i.iam_last_used END";
const FROM_LAKE: &str =
    "(k.last_used IS NOT NULL AND (i.iam_last_used IS NULL OR k.last_used >= i.iam_last_used))";

/// The last-used report: one row per access key (seen in the lake before `as_of`, or listed by
/// the inventory), stalest first.
pub fn last_used(w: &Window, kinds: KindFilter, has_inventory: bool, d: Dialect) -> String {
    let changes = if has_inventory {
        format!("key_changes AS ({}), ", key_changes(w, d))
    } else {
        String::new()
    };
    let inventory = format!("{changes}{}", inventory_ctes(w, has_inventory, d));
    let days = d.idiv(
        &format!("{} - {}", w.as_of, d.ms(LAST_USED)),
        &DAY.to_string(),
    );
    format!(
        "WITH {lake}, {inventory}, \
         report AS (SELECT \
           COALESCE(k.accesskeyid, i.access_key_id) AS access_key_id, \
           COALESCE(k.keykind, 'long-term') AS kind, \
           i.status AS status, \
           {OWNER} AS owner, \
           {OWNER_ARN} AS owner_arn, \
           COALESCE(k.accountid, i.account_id) AS account_id, \
           k.principaltype AS principal_type, \
           i.created AS created, \
           k.first_seen AS first_seen, \
           {LAST_USED} AS last_used, \
           CASE WHEN {FROM_LAKE} THEN 'lake' WHEN i.iam_last_used IS NOT NULL THEN 'credential report' \
             WHEN i.iam_never_used THEN 'never (credential report)' END AS last_used_from, \
           CAST({days} AS BIGINT) AS days_since_used, \
           CASE WHEN {FROM_LAKE} THEN k.lasteventsource ELSE i.iam_last_used_service END AS last_service, \
           CASE WHEN {FROM_LAKE} THEN k.lasteventname END AS last_event, \
           CASE WHEN {FROM_LAKE} THEN k.lastawsregion ELSE i.iam_last_used_region END AS last_region, \
           CASE WHEN {FROM_LAKE} THEN k.lastsourceipaddress END AS last_source_ip, \
           COALESCE(k.events, 0) AS events, \
           COALESCE(k.errors, 0) AS errors, \
           COALESCE(k.source_ips, 0) AS source_ips, \
           i.inventory AS inventory, \
           i.inventory_match AS inventory_match \
         FROM lake_keys k \
         FULL OUTER JOIN inventory i ON k.accesskeyid = i.access_key_id) \
         SELECT * FROM report WHERE {cond} \
         ORDER BY last_used ASC NULLS FIRST, access_key_id ASC NULLS FIRST, owner ASC, \
           created ASC NULLS FIRST, inventory_match ASC NULLS FIRST",
        lake = lake_ctes(w, d, kinds),
        cond = kinds.condition(),
    )
}

/// The tables the unused and rotation reports judge: `facts`, one row per long-term key (seen
/// in the lake, listed by the inventory, or created, changed or deleted in the lake), plus one
/// row per unmatched credential report slot; and `coverage` (see [`COVERAGE`]). Built from
/// `key_changes`, `daily`, `lake_keys` (see those functions) and `lifecycle` (each key's
/// status, creation, user and account as its changes left them).
///
/// `daily` holds only long-term keys' days (the keys judged; the inventory's matching reads only
/// theirs): a table of a few rows per key for a lake's few hundred users' keys, read three times
/// (twice by `lake_keys`, once by the inventory's matching) without scanning `key_daily` again.
fn facts_tables(w: &Window, has_inventory: bool, d: Dialect) -> Vec<(&'static str, String)> {
    let order = "eventtime, eventid NULLS FIRST";
    // The inventory's matching reads the `daily` and `key_changes` tables.
    let inventory = inventory_ctes(w, has_inventory, d);
    let lifecycle = format!(
        "SELECT key_id, {status} AS lake_status, max(eventtime) AS status_time, \
           min(CASE WHEN eventname = 'CreateAccessKey' THEN eventtime END) AS lake_created, \
           {user} AS user_name, {account} AS account_id \
         FROM key_changes WHERE key_id IS NOT NULL GROUP BY key_id",
        status = d.last("status", order),
        user = d.last("user_name", order),
        account = d.last("account_id", order),
    );
    let facts = format!(
        "WITH {inventory}, \
         universe AS (SELECT accesskeyid AS key_id FROM lake_keys WHERE keykind = 'long-term' \
           UNION SELECT access_key_id AS key_id FROM inventory WHERE access_key_id IS NOT NULL \
           UNION SELECT key_id FROM lifecycle) \
         SELECT u.key_id AS access_key_id, \
             COALESCE(i.user_name, k.username, l.user_name, CASE k.principaltype WHEN 'Root' THEN '<root_account>' END) AS owner, \
             COALESCE(k.accountid, i.account_id, l.account_id) AS account_id, \
             COALESCE(i.status, l.lake_status) AS status, \
             CASE WHEN i.status IS NOT NULL THEN 'inventory' WHEN l.lake_status IS NOT NULL THEN 'lake' END AS status_from, \
             COALESCE(i.created, l.lake_created) AS created, \
             CASE WHEN i.created IS NOT NULL THEN 'inventory' WHEN l.lake_created IS NOT NULL THEN 'CreateAccessKey event' END AS created_from, \
             k.first_seen AS first_seen, \
             {LAST_USED} AS last_used, \
             CASE WHEN {FROM_LAKE} THEN 'lake' WHEN i.iam_last_used IS NOT NULL THEN 'credential report' END AS last_used_from, \
             COALESCE(i.iam_never_used, false) AS iam_never_used, \
             (i.user_name IS NOT NULL) AS in_inventory, \
             i.inventory AS inventory, i.inventory_match AS inventory_match \
           FROM universe u \
           LEFT JOIN lake_keys k ON k.accesskeyid = u.key_id \
           LEFT JOIN inventory i ON i.access_key_id = u.key_id \
           LEFT JOIN lifecycle l ON l.key_id = u.key_id \
           UNION ALL \
           SELECT NULL AS access_key_id, i.user_name AS owner, i.account_id, i.status, \
             'inventory' AS status_from, i.created, CASE WHEN i.created IS NOT NULL THEN 'inventory' END AS created_from, \
             {null_ts} AS first_seen, i.iam_last_used AS last_used, \
             CASE WHEN i.iam_last_used IS NOT NULL THEN 'credential report' END AS last_used_from, \
             COALESCE(i.iam_never_used, false) AS iam_never_used, true AS in_inventory, \
             i.inventory, i.inventory_match \
           FROM inventory i WHERE i.access_key_id IS NULL",
        null_ts = d.null_ts(),
    );
    vec![
        ("key_changes", key_changes(w, d)),
        (
            "daily",
            format!(
                "SELECT {DAILY_JUDGED} FROM ({}) d",
                daily(w, d, KindFilter::LongTerm)
            ),
        ),
        ("lake_keys", lake_keys(d, false)),
        ("lifecycle", lifecycle),
        // Of every key, not only the long-term ones `daily` holds here.
        (COVERAGE, coverage(w, d)),
        ("facts", facts),
    ]
}

/// The columns of `daily` the unused and rotation reports read (`lake_keys`, the inventory's
/// matching): not the last event's ID nor the window's source IPs, which only the last-used
/// report lists.
const DAILY_JUDGED: &str = "accesskeyid, keykind, accountid, principaltype, principalarn, username, \"date\", \
    firsteventtime, lasteventtime, lasteventsource, lasteventname, lastawsregion, lastsourceipaddress, \
    w_events, w_errors";

/// Whole days from `e` (a timestamp) to `as_of`.
fn days_to(as_of: Millis, e: &str, d: Dialect) -> String {
    format!(
        "CAST({} AS BIGINT)",
        d.idiv(&format!("{as_of} - {}", d.ms(e)), &DAY.to_string())
    )
}

/// The unused report: active long-term keys not used for `days` days, and keys never used
/// (after `grace` days), each with why.
pub fn unused(w: &Window, days: u32, grace: u32, has_inventory: bool, d: Dialect) -> Script {
    let as_of = w.as_of;
    let cutoff = d.ts(as_of - i64::from(days) * DAY);
    let grace_cutoff = d.ts(as_of - i64::from(grace) * DAY);
    // Use is known for certain never to have happened: the credential report says so, or the
    // key was created while the lake was recording and the lake saw no use.
    let known_never = "(f.iam_never_used OR (f.created IS NOT NULL AND f.created >= c.lake_start))";
    let status_note = "CASE WHEN status IS NULL THEN ' (status unknown: not in an inventory; taken as active)' ELSE '' END";
    let query = format!(
        "WITH judged AS (SELECT f.*, c.lake_start, \
           CASE \
             WHEN f.status IS NOT NULL AND f.status <> 'Active' THEN NULL \
             WHEN f.last_used IS NOT NULL THEN CASE WHEN f.last_used < {cutoff} THEN 'unused' END \
             WHEN {known_never} THEN CASE WHEN f.created IS NULL OR f.created < {grace_cutoff} THEN 'never-used' END \
             WHEN c.lake_start <= {cutoff} THEN 'unused' \
             ELSE 'unknown' \
           END AS flag \
           FROM facts f CROSS JOIN coverage c) \
         SELECT access_key_id, owner AS user_name, account_id, status, created, last_used, last_used_from, \
           {since_used} AS days_since_used, flag, \
           CASE flag \
             WHEN 'unused' THEN CASE WHEN last_used IS NOT NULL \
               THEN 'not used for ' || CAST({since_used} AS VARCHAR) || ' days (last used ' || {last_day} || ', per the ' || last_used_from || ')' \
               ELSE 'no use in the lake, which covers the ' || CAST({since_start} AS VARCHAR) || ' days since ' || {start_day} \
                 || CASE WHEN created IS NULL THEN '; creation date unknown' ELSE '; created ' || {created_day} END END \
             WHEN 'never-used' THEN 'never used' \
               || CASE WHEN iam_never_used THEN ' (per the credential report)' ELSE ' (no use in the lake since its creation)' END \
               || CASE WHEN created IS NULL THEN '' ELSE '; created ' || {created_day} || ', ' || CAST({age} AS VARCHAR) || ' days ago' END \
             ELSE 'no use in the lake, but the lake covers only ' || CAST({since_start} AS VARCHAR) || ' days (since ' || {start_day} \
               || '), fewer than {days}, and no credential report gives its last use' \
           END || {status_note} AS reason, \
           inventory, inventory_match \
         FROM judged j WHERE flag IS NOT NULL \
         ORDER BY CASE flag WHEN 'never-used' THEN 0 WHEN 'unused' THEN 1 ELSE 2 END, \
           last_used ASC NULLS FIRST, created ASC NULLS FIRST, access_key_id ASC NULLS FIRST, user_name ASC",
        since_used = days_to(as_of, "last_used", d),
        since_start = days_to(as_of, "lake_start", d),
        age = days_to(as_of, "created", d),
        last_day = d.day_text("last_used"),
        start_day = d.day_text("lake_start"),
        created_day = d.day_text("created"),
    );
    Script {
        tables: facts_tables(w, has_inventory, d),
        query,
    }
}

/// The rotation report: active long-term keys older than `max_age` days, and users with two
/// active keys, each with why.
pub fn rotation(w: &Window, max_age: u32, has_inventory: bool, d: Dialect) -> Script {
    let as_of = w.as_of;
    let cutoff = d.ts(as_of - i64::from(max_age) * DAY);
    let slots = if has_inventory {
        "report_slots AS (SELECT user_name, COALESCE(account_id, '') AS account_id, \
           sum(CASE WHEN active THEN 1 ELSE 0 END) AS n FROM credential_slots GROUP BY 1, 2), \
         listed AS (SELECT user_name, COALESCE(account_id, '') AS account_id, \
           sum(CASE WHEN status = 'Active' THEN 1 ELSE 0 END) AS n FROM inventory_keys GROUP BY 1, 2)"
            .to_owned()
    } else {
        "report_slots AS (SELECT CAST(NULL AS VARCHAR) AS user_name, CAST(NULL AS VARCHAR) AS account_id, CAST(0 AS BIGINT) AS n WHERE false), \
         listed AS (SELECT CAST(NULL AS VARCHAR) AS user_name, CAST(NULL AS VARCHAR) AS account_id, CAST(0 AS BIGINT) AS n WHERE false)"
            .to_owned()
    };
    let query = format!(
        "WITH {slots}, \
         live AS (SELECT f.*, COALESCE(f.account_id, '') AS acct FROM facts f \
           WHERE f.owner IS NOT NULL AND (f.status IS NULL OR f.status = 'Active')), \
         presumed AS (SELECT owner, acct, count(*) AS n FROM live GROUP BY owner, acct), \
         per_user AS (SELECT p.owner, p.acct, COALESCE(r.n, l.n, p.n) AS n, \
             CASE WHEN r.n IS NOT NULL THEN 'credential report' WHEN l.n IS NOT NULL THEN 'key list' END AS counted_from \
           FROM presumed p \
           LEFT JOIN report_slots r ON r.user_name = p.owner AND r.account_id = p.acct \
           LEFT JOIN listed l ON l.user_name = p.owner AND l.account_id = p.acct), \
         judged AS (SELECT v.*, u.n AS user_active_keys, u.counted_from, \
             CASE WHEN v.created IS NOT NULL THEN v.created < {cutoff} \
               ELSE v.first_seen IS NOT NULL AND v.first_seen < {cutoff} END AS too_old, \
             (u.n >= 2 AND (v.status IS NOT NULL OR u.counted_from IS NULL)) AS two_keys \
           FROM live v JOIN per_user u ON u.owner = v.owner AND u.acct = v.acct) \
         SELECT access_key_id, owner AS user_name, account_id, status, created, created_from, first_seen, \
           CASE WHEN created IS NOT NULL THEN {age} END AS age_days, \
           last_used, {since_used} AS days_since_used, \
           concat_ws(',', CASE WHEN too_old THEN 'too-old' END, CASE WHEN two_keys THEN 'two-active-keys' END) AS flags, \
           concat_ws('; ', \
             CASE WHEN too_old AND created IS NOT NULL THEN \
               CAST({age} AS VARCHAR) || ' days old (created ' || {created_day} || ', per the ' || created_from || '), more than {max_age}' END, \
             CASE WHEN too_old AND created IS NULL THEN \
               'older than {max_age} days: first seen in the lake ' || {first_day} || ' (' || CAST({first_age} AS VARCHAR) || ' days ago); creation date unknown' END, \
             CASE WHEN two_keys THEN owner || ' has ' || CAST(user_active_keys AS VARCHAR) || ' active keys' \
               || CASE WHEN counted_from IS NULL THEN ' (status unknown: keys seen in the lake taken as active)' ELSE ' (per the ' || counted_from || ')' END END, \
             CASE WHEN status IS NULL THEN 'status unknown: not in an inventory; taken as active' END) AS reason, \
           inventory, inventory_match \
         FROM judged WHERE too_old OR two_keys \
         ORDER BY created ASC NULLS LAST, first_seen ASC NULLS LAST, user_name ASC, access_key_id ASC NULLS FIRST",
        age = days_to(as_of, "created", d),
        first_age = days_to(as_of, "first_seen", d),
        since_used = days_to(as_of, "last_used", d),
        created_day = d.day_text("created"),
        first_day = d.day_text("first_seen"),
    );
    Script {
        tables: facts_tables(w, has_inventory, d),
        query,
    }
}

/// Daily calls per key over the window's days (for charts).
pub fn activity(w: &Window) -> String {
    let d = Dialect::DataFusion;
    format!(
        "WITH daily AS ({daily}) SELECT accesskeyid, CAST(\"date\" AS VARCHAR) AS day, sum(w_events) AS events \
         FROM daily WHERE \"date\" >= {first} AND w_events > 0 GROUP BY accesskeyid, \"date\"",
        daily = daily(w, d, KindFilter::All),
        first = d.date(day_of(w.since)),
    )
}

/// The name of the table every report's [`Script`] computes with [`coverage`]: the report's
/// header and notes read it, and the unused report judges keys by it.
pub const COVERAGE: &str = "coverage";

/// The lake's first and last event with a key before `as_of` (`lake_start`, `lake_end`; one
/// row): `key_daily` for the days before `as_of`'s, and `events` only for the part of `as_of`'s
/// day before it (a two-column scan of one day, not the re-aggregation of [`daily`]).
pub fn coverage(w: &Window, d: Dialect) -> String {
    let a_day = day_of(w.as_of);
    let mut sql = format!(
        "SELECT min(firsteventtime) AS lake_start, max(lasteventtime) AS lake_end FROM key_daily WHERE \"date\" < {}",
        d.date(a_day)
    );
    if w.as_of.rem_euclid(DAY) != 0 {
        sql.push_str(&format!(
            " UNION ALL SELECT min(eventtime) AS lake_start, max(eventtime) AS lake_end FROM events \
             WHERE \"date\" = {} AND accesskeyid IS NOT NULL AND eventtime < {}",
            d.date(a_day),
            d.ts(w.as_of)
        ));
    }
    format!("SELECT min(lake_start) AS lake_start, max(lake_end) AS lake_end FROM ({sql}) c")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_is_one_statement_for_duckdb() {
        let w = Window {
            since: 10 * DAY,
            as_of: 100 * DAY,
        };
        let s = rotation(&w, 90, false, Dialect::DuckDb);
        let names: Vec<&str> = s.tables.iter().map(|t| t.0).collect();
        assert_eq!(
            names,
            [
                "key_changes",
                "daily",
                "lake_keys",
                "lifecycle",
                "coverage",
                "facts"
            ]
        );
        let text = s.text();
        assert!(text.starts_with("WITH key_changes AS (SELECT "), "{text}");
        // The query's own CTEs continue the tables' list; only `facts` (its inventory) has a
        // WITH of its own.
        assert!(text.contains("), report_slots AS ("), "{text}");
        assert_eq!(text.matches("WITH ").count(), 2, "{text}");
        // `key_daily` is scanned by `daily` (long-term keys) and `coverage` (every key) only.
        assert_eq!(text.matches("FROM key_daily").count(), 2, "{text}");
        assert!(!text.contains("arrow_cast"), "{text}");
        // A script without tables is its query.
        let last = Script {
            tables: Vec::new(),
            query: last_used(&w, KindFilter::All, false, Dialect::DuckDb),
        };
        assert_eq!(last.text(), last.query);
    }
}
