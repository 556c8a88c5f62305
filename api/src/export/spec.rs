//! What an export is: a `[[export]]` table of the config file, checked whole when it is loaded
//! (a bad one stops the process with one line naming the export and the key), and the periods
//! its runs cover.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use super::relative::{RelativeTime, local_midnight};
use super::table::{SchemaTypes, TablePlan};

/// The file formats an export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Parquet,
    Csv,
    /// JSON lines: one object per row.
    #[serde(alias = "json")]
    #[value(alias = "json")]
    Jsonl,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }
}

/// An `[[export]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExport {
    pub name: String,
    pub query: String,
    #[serde(default)]
    pub operation_name: Option<String>,
    #[serde(default)]
    pub variables: toml::Table,
    pub period: String,
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub time_zone: Option<String>,
    pub format: Format,
    pub destination: PathBuf,
}

/// The variables a period fills in, when the query declares them.
pub const SINCE: &str = "since";
pub const UNTIL: &str = "until";
pub const TIME_ZONE: &str = "timeZone";

/// An export, checked.
#[derive(Debug, Clone)]
pub struct ExportSpec {
    pub name: String,
    pub query: String,
    pub operation_name: Option<String>,
    /// Fixed variables; the period's and the relative ones come on top at each run.
    pub variables: serde_json::Map<String, serde_json::Value>,
    /// `DateTime` variables given as times relative to the run (`start of yesterday`), by name.
    pub relative: BTreeMap<String, RelativeTime>,
    pub period: Period,
    pub schedule: Schedule,
    pub time_zone: Tz,
    pub format: Format,
    pub destination: PathBuf,
    pub table: TablePlan,
}

impl ExportSpec {
    /// Checks one `[[export]]` table against the schema.
    pub fn from_raw(raw: RawExport, types: &SchemaTypes) -> Result<ExportSpec, String> {
        let name = raw.name;
        let valid_name = !name.is_empty()
            && name.len() <= 100
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_name {
            return Err(format!(
                "export name {name:?} must be 1 to 100 letters, digits, '-' or '_' (it names files and keys)"
            ));
        }
        let at = |key: &str, message: String| format!("export `{name}`: `{key}`: {message}");
        let period: Period = raw.period.parse().map_err(|e| at("period", e))?;
        let time_zone: Tz = match raw.time_zone.as_deref() {
            None => Tz::UTC,
            Some(zone) => zone.parse().map_err(|_| {
                at("time_zone", format!("{zone:?} is not an IANA time zone such as UTC or Europe/Berlin"))
            })?,
        };
        let schedule_text = raw.schedule.unwrap_or_else(|| period.default_schedule().to_owned());
        let schedule = Schedule::parse(&schedule_text).map_err(|e| at("schedule", e))?;
        let table = TablePlan::new(types, &raw.query, raw.operation_name.as_deref()).map_err(|e| at("query", e))?;
        let mut variables = serde_json::Map::new();
        let mut relative = BTreeMap::new();
        for (key, value) in raw.variables {
            let value = serde_json::to_value(value).map_err(|e| at(&format!("variables.{key}"), e.to_string()))?;
            // A `DateTime` variable may be relative to the run ("start of yesterday"); an RFC 3339
            // time stays as it is.
            if let (Some("DateTime"), Some(text)) = (table.variable_type(&key), value.as_str())
                && DateTime::parse_from_rfc3339(text).is_err()
            {
                let time = RelativeTime::parse(text).map_err(|e| at(&format!("variables.{key}"), e))?;
                relative.insert(key, time);
                continue;
            }
            variables.insert(key, value);
        }
        for filled in [SINCE, UNTIL, TIME_ZONE] {
            if (variables.contains_key(filled) || relative.contains_key(filled)) && table.declares(filled) {
                return Err(at(
                    "variables",
                    format!("`{filled}` comes from the period and the time zone; remove it from `variables`"),
                ));
            }
        }
        if raw.destination.as_os_str().is_empty() {
            return Err(at("destination", "must name a directory".to_owned()));
        }
        Ok(ExportSpec {
            name,
            query: raw.query,
            operation_name: raw.operation_name,
            variables,
            relative,
            period,
            schedule,
            time_zone,
            format: raw.format,
            destination: raw.destination,
            table,
        })
    }

    /// The variables of a run over `window`: the fixed ones, the relative ones resolved against
    /// the window's end in the export's time zone, and `since`, `until` and `timeZone` where
    /// the query declares them.
    pub fn variables_for(&self, window: &Window) -> serde_json::Map<String, serde_json::Value> {
        let mut variables = self.variables.clone();
        for (name, time) in &self.relative {
            let resolved = time.resolve(window.end, self.time_zone);
            variables.insert(name.clone(), serde_json::Value::String(rfc3339(resolved)));
        }
        let filled = [
            (SINCE, rfc3339(window.start)),
            (UNTIL, rfc3339(window.end)),
            (TIME_ZONE, self.time_zone.name().to_owned()),
        ];
        for (name, value) in filled {
            if self.table.declares(name) {
                variables.insert(name.to_owned(), serde_json::Value::String(value));
            }
        }
        variables
    }

    /// The period a run at `at` covers.
    pub fn window_at(&self, at: DateTime<Utc>) -> Window {
        self.period.ending_at(at, self.time_zone)
    }

    /// The data file of a period, relative to the destination.
    pub fn file_name(&self, window: &Window) -> String {
        format!("{}/{}_{}.{}", self.name, self.name, window.label, self.format.extension())
    }
}

/// Reads the `export` array of a config file.
pub fn load(value: &toml::Value, types: &SchemaTypes) -> Result<Vec<ExportSpec>, String> {
    let toml::Value::Array(tables) = value else {
        return Err("`export` must be an array of tables: write each export as [[export]]".to_owned());
    };
    let mut specs: Vec<ExportSpec> = Vec::new();
    for (index, table) in tables.iter().enumerate() {
        let raw: RawExport =
            table.clone().try_into().map_err(|e: toml::de::Error| format!("export #{}: {}", index + 1, e.message()))?;
        let spec = ExportSpec::from_raw(raw, types)?;
        if specs.iter().any(|other| other.name == spec.name) {
            return Err(format!("export `{}` is declared twice; names must differ", spec.name));
        }
        specs.push(spec);
    }
    Ok(specs)
}

pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// A cron schedule (`minute hour day-of-month month day-of-week`, or six fields with the
/// second first: `*/10 * * * * *`), read in the export's time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub text: String,
    cron: croner::Cron,
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build();
        let cron = parser.parse(text).map_err(|e| {
            format!(
                "{text:?} is not a cron schedule like \"10 0 * * *\" (minute hour day month weekday, or six \
                 fields with the second first): {e}"
            )
        })?;
        Ok(Schedule { text: text.to_owned(), cron })
    }

    /// The first time the schedule fires strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&after.with_timezone(&zone), false).ok().map(|t| t.with_timezone(&Utc))
    }

    /// The last time the schedule fired at or before `at`.
    pub fn last_at_or_before(&self, at: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
        self.cron.find_previous_occurrence(&at.with_timezone(&zone), true).ok().map(|t| t.with_timezone(&Utc))
    }
}

/// The calendar unit of a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Minute,
    Hour,
    Day,
    /// From Monday.
    Week,
    Month,
}

impl Unit {
    pub(super) fn parse(word: &str) -> Option<Unit> {
        Some(match word.strip_suffix('s').unwrap_or(word) {
            "minute" => Unit::Minute,
            "hour" => Unit::Hour,
            "day" => Unit::Day,
            "week" => Unit::Week,
            "month" => Unit::Month,
            _ => return None,
        })
    }

    fn suffix(self) -> &'static str {
        match self {
            Unit::Minute => "min",
            Unit::Hour => "h",
            Unit::Day => "d",
            Unit::Week => "w",
            Unit::Month => "mo",
        }
    }
}

/// What each run covers: the last `count` whole units before the run (`yesterday` is the last
/// day; `last 7 days` the seven days before today), in the export's time zone. Only whole,
/// past units: a period is over when it is exported, so a re-run covers the same posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub count: u32,
    pub unit: Unit,
}

impl FromStr for Period {
    type Err = String;

    fn from_str(text: &str) -> Result<Period, String> {
        let refuse = || {
            format!(
                "{text:?} is not a period: write \"yesterday\", \"last hour\", \"last day\", \"last week\", \
                 \"last month\" or \"last N minutes|hours|days|weeks|months\""
            )
        };
        let lower = text.trim().to_ascii_lowercase();
        let words: Vec<&str> = lower.split_whitespace().collect();
        let (count, unit) = match words.as_slice() {
            ["yesterday"] => (1, Unit::Day),
            ["last", unit] if !unit.ends_with('s') => (1, Unit::parse(unit).ok_or_else(refuse)?),
            ["last", count, unit] => {
                (count.parse::<u32>().map_err(|_| refuse())?, Unit::parse(unit).ok_or_else(refuse)?)
            }
            _ => return Err(refuse()),
        };
        if !(1..=10_000).contains(&count) {
            return Err(format!("{text:?}: the count must be between 1 and 10000"));
        }
        Ok(Period { count, unit })
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.unit {
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
        };
        match (self.count, self.unit) {
            (1, Unit::Day) => f.write_str("yesterday"),
            (1, _) => write!(f, "last {unit}"),
            (n, _) => write!(f, "last {n} {unit}s"),
        }
    }
}

/// One period, as run: `[start, end)` and the label that names its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The start in the export's time zone (`2026-01-31`, `2026-01`), or in UTC for hours and
    /// minutes (`2026-01-31T13Z`: a local hour can occur twice); `_7d` and such when the period
    /// spans several units.
    pub label: String,
}

impl Period {
    /// The schedule of an export that gives none: ten minutes after each period ends, so that
    /// the buffer (flushed every five minutes by default) has reached the lake.
    pub fn default_schedule(&self) -> &'static str {
        match self.unit {
            Unit::Minute => "* * * * *",
            Unit::Hour => "10 * * * *",
            Unit::Day => "10 0 * * *",
            Unit::Week => "10 0 * * MON",
            Unit::Month => "10 0 1 * *",
        }
    }

    /// The period that ends at the start of the unit `at` falls in, in `zone`.
    pub fn ending_at(&self, at: DateTime<Utc>, zone: Tz) -> Window {
        let local = at.with_timezone(&zone);
        let (start, end, label_time) = match self.unit {
            // An hour or minute is the same length everywhere: step back in absolute time by the
            // local minutes and seconds (right for zones a half hour off, and across DST).
            Unit::Minute | Unit::Hour => {
                let minutes = if self.unit == Unit::Hour { i64::from(local.minute()) } else { 0 };
                let into_unit = Duration::minutes(minutes)
                    + Duration::seconds(i64::from(local.second()))
                    + Duration::nanoseconds(i64::from(local.nanosecond()));
                let end = at - into_unit;
                let length = if self.unit == Unit::Hour { Duration::hours(1) } else { Duration::minutes(1) };
                let start = end - length * self.count as i32;
                (start, end, start.naive_utc())
            }
            Unit::Day | Unit::Week | Unit::Month => {
                let today = local.date_naive();
                let end_date = match self.unit {
                    Unit::Day => today,
                    Unit::Week => today - Duration::days(i64::from(today.weekday().num_days_from_monday())),
                    _ => today.with_day(1).unwrap_or(today),
                };
                let start_date = match self.unit {
                    Unit::Day => end_date - Duration::days(i64::from(self.count)),
                    Unit::Week => end_date - Duration::days(7 * i64::from(self.count)),
                    _ => end_date.checked_sub_months(chrono::Months::new(self.count)).unwrap_or(NaiveDate::MIN),
                };
                (
                    local_midnight(start_date, zone),
                    local_midnight(end_date, zone),
                    start_date.and_hms_opt(0, 0, 0).unwrap_or_default(),
                )
            }
        };
        let mut label = match self.unit {
            Unit::Minute => format!("{}Z", label_time.format("%Y-%m-%dT%H%M")),
            Unit::Hour => format!("{}Z", label_time.format("%Y-%m-%dT%H")),
            Unit::Day | Unit::Week => label_time.format("%Y-%m-%d").to_string(),
            Unit::Month => label_time.format("%Y-%m").to_string(),
        };
        if self.count > 1 {
            label.push_str(&format!("_{}{}", self.count, self.unit.suffix()));
        }
        Window { start, end, label }
    }
}

/// Reads a time given on the command line: RFC 3339, or a date (its midnight in `zone`).
pub fn parse_time(text: &str, zone: Tz) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|date| local_midnight(date, zone))
        .map_err(|_| format!("{text:?} is neither an RFC 3339 time (2026-01-31T00:10:00Z) nor a date (2026-01-31)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn period(text: &str) -> Period {
        text.parse().unwrap()
    }

    #[test]
    fn periods_read_like_people_say_them_and_refuse_the_rest() {
        assert_eq!(period("yesterday"), Period { count: 1, unit: Unit::Day });
        assert_eq!(period("last hour"), Period { count: 1, unit: Unit::Hour });
        assert_eq!(period("Last 7 days"), Period { count: 7, unit: Unit::Day });
        assert_eq!(period("last 1 week"), Period { count: 1, unit: Unit::Week });
        assert_eq!(period("last 15 minutes"), Period { count: 15, unit: Unit::Minute });
        for bad in ["today", "last", "last 0 days", "last seven days", "last 3 fortnights", "last days"] {
            assert!(bad.parse::<Period>().is_err(), "{bad} was accepted");
        }
        for text in ["yesterday", "last hour", "last 7 days", "last month"] {
            assert_eq!(period(text).to_string(), text);
        }
    }

    #[test]
    fn a_period_is_the_whole_units_before_the_run_in_its_time_zone() {
        let yesterday = period("yesterday").ending_at(utc("2026-03-10T00:10:00Z"), Tz::UTC);
        assert_eq!((yesterday.start, yesterday.end), (utc("2026-03-09T00:00:00Z"), utc("2026-03-10T00:00:00Z")));
        assert_eq!(yesterday.label, "2026-03-09");

        // Berlin's yesterday ends at its own midnight, 23:00 UTC in winter.
        let berlin = period("yesterday").ending_at(utc("2026-03-10T00:10:00Z"), Tz::Europe__Berlin);
        assert_eq!((berlin.start, berlin.end), (utc("2026-03-08T23:00:00Z"), utc("2026-03-09T23:00:00Z")));
        assert_eq!(berlin.label, "2026-03-09");

        // A day across the spring change in New York has 23 hours.
        let dst = period("yesterday").ending_at(utc("2026-03-09T05:10:00Z"), Tz::America__New_York);
        assert_eq!((dst.start, dst.end), (utc("2026-03-08T05:00:00Z"), utc("2026-03-09T04:00:00Z")));

        let week = period("last 7 days").ending_at(utc("2026-03-10T12:00:00Z"), Tz::UTC);
        assert_eq!((week.start, week.end), (utc("2026-03-03T00:00:00Z"), utc("2026-03-10T00:00:00Z")));
        assert_eq!(week.label, "2026-03-03_7d");

        // 2026-03-10 is a Tuesday: last week ran from Monday the 2nd.
        let calendar_week = period("last week").ending_at(utc("2026-03-10T12:00:00Z"), Tz::UTC);
        assert_eq!(calendar_week.start, utc("2026-03-02T00:00:00Z"));
        assert_eq!(calendar_week.end, utc("2026-03-09T00:00:00Z"));

        let month = period("last month").ending_at(utc("2026-03-01T00:10:00Z"), Tz::UTC);
        assert_eq!((month.start, month.end), (utc("2026-02-01T00:00:00Z"), utc("2026-03-01T00:00:00Z")));
        assert_eq!(month.label, "2026-02");

        // Kolkata's hours begin at half past, UTC.
        let hour = period("last hour").ending_at(utc("2026-03-10T10:45:00Z"), Tz::Asia__Kolkata);
        assert_eq!((hour.start, hour.end), (utc("2026-03-10T09:30:00Z"), utc("2026-03-10T10:30:00Z")));
        assert_eq!(hour.label, "2026-03-10T09Z");
    }

    #[test]
    fn schedules_fire_in_their_time_zone() {
        let daily = Schedule::parse("10 0 * * *").unwrap();
        let next = daily.next_after(utc("2026-03-10T12:00:00Z"), Tz::Europe__Berlin).unwrap();
        assert_eq!(next, utc("2026-03-10T23:10:00Z"));
        assert_eq!(daily.last_at_or_before(next, Tz::Europe__Berlin), Some(next));
        assert!(Schedule::parse("every day").unwrap_err().contains("cron"));
        // Six fields: seconds first.
        let often = Schedule::parse("*/5 * * * * *").unwrap();
        assert_eq!(often.next_after(utc("2026-03-10T12:00:01Z"), Tz::UTC), Some(utc("2026-03-10T12:00:05Z")));
        assert!(Schedule::parse("0 0 0 * * * 2026").is_err(), "no year field");
    }

    fn spec(variables: &str) -> Result<ExportSpec, String> {
        let text = format!(
            "name = \"x\"\nquery = \"query ($from: DateTime!, $to: DateTime, $label: String) {{ topHashtags(filter: {{ since: $from, until: $to, textContains: $label }}) {{ tag }} }}\"\n\
             period = \"yesterday\"\ntime_zone = \"America/New_York\"\nformat = \"csv\"\ndestination = \"/tmp\"\n{variables}"
        );
        let raw: RawExport = toml::from_str(&text).unwrap();
        ExportSpec::from_raw(raw, &SchemaTypes::skyglass())
    }

    #[test]
    fn datetime_variables_may_be_relative_to_the_period_end() {
        let export = spec("variables = { from = \"start of 7 days ago\", to = \"now\", label = \"now\" }").unwrap();
        // New York's yesterday of 2026-03-08, the spring change: it ends at EDT midnight.
        let window = export.window_at(utc("2026-03-09T05:10:00Z"));
        let variables = export.variables_for(&window);
        assert_eq!(variables["from"], "2026-03-02T05:00:00Z");
        assert_eq!(variables["to"], "2026-03-09T04:00:00Z");
        assert_eq!(variables["label"], "now", "a String variable is never read as a time");
        let fixed = spec("variables = { from = \"2026-01-01T00:00:00Z\" }").unwrap();
        assert_eq!(fixed.variables_for(&window)["from"], "2026-01-01T00:00:00Z");
    }

    #[test]
    fn a_bad_relative_time_is_refused_naming_the_export_and_key() {
        let error = spec("variables = { from = \"start of tomorrow\" }").unwrap_err();
        assert!(error.starts_with("export `x`: `variables.from`: \"start of tomorrow\" is not a time"), "{error}");
        assert!(!error.contains('\n'), "{error}");
    }

    #[test]
    fn command_line_times_are_rfc3339_or_local_dates() {
        assert_eq!(parse_time("2026-03-10T00:10:00Z", Tz::UTC), Ok(utc("2026-03-10T00:10:00Z")));
        assert_eq!(parse_time("2026-03-10", Tz::Europe__Berlin), Ok(utc("2026-03-09T23:00:00Z")));
        assert!(parse_time("tomorrow", Tz::UTC).is_err());
    }
}
