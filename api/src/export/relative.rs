//! Relative times in an export's variables. A `DateTime` variable of the query may be given, in
//! the export's `variables`, as a time relative to the run: `now`, `N units ago`,
//! `start of today`, `start of yesterday`, `start of this UNIT`, `start of last UNIT` or
//! `start of N units ago` (units: minute, hour, day, week, month). Each run resolves them in
//! the export's time zone against the end of the period it covers (not the wall clock), so a
//! re-run of a period resolves them the same. Pure: knows nothing of Redis, files or GraphQL.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use super::spec::Unit;

/// A time relative to a run's reference (its period's end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelativeTime {
    /// As written (`start of 7 days ago`), for the manifest.
    pub text: String,
    /// How many units back from the reference (0: the reference's own unit).
    count: u32,
    unit: Unit,
    /// Whether to go on to the first instant of the unit reached (`start of …`).
    start_of: bool,
}

impl RelativeTime {
    /// Reads a relative time; the error says what is accepted, in one line.
    pub fn parse(text: &str) -> Result<RelativeTime, String> {
        let refuse = || {
            format!(
                "{text:?} is not a time: write an RFC 3339 time (2026-01-31T00:00:00Z) or a relative one: \
                 \"now\", \"N minutes|hours|days|weeks|months ago\", \"start of today\", \"start of yesterday\", \
                 \"start of this|last minute|hour|day|week|month\" or \"start of N days ago\""
            )
        };
        let lower = text.trim().to_ascii_lowercase();
        let words: Vec<&str> = lower.split_whitespace().collect();
        let (start_of, rest) = match words.as_slice() {
            ["start", "of", rest @ ..] => (true, rest),
            rest => (false, rest),
        };
        let (count, unit) = match (start_of, rest) {
            (false, ["now"]) => (0, Unit::Minute),
            (true, ["today"]) => (0, Unit::Day),
            (true, ["yesterday"]) => (1, Unit::Day),
            (true, ["this", unit]) => (0, singular_unit(unit).ok_or_else(refuse)?),
            (true, ["last", unit]) => (1, singular_unit(unit).ok_or_else(refuse)?),
            (_, [count, unit, "ago"]) => {
                let count: u32 = count.parse().map_err(|_| refuse())?;
                let unit = Unit::parse(unit).ok_or_else(refuse)?;
                (count, unit)
            }
            _ => return Err(refuse()),
        };
        if count > 100_000 {
            return Err(format!("{text:?}: the count must be at most 100000"));
        }
        Ok(RelativeTime { text: text.to_owned(), count, unit, start_of })
    }

    /// The instant this names for a run whose period ends at `reference`, in `zone`. Minutes
    /// and hours go back in absolute time; days, weeks and months go back on the local
    /// calendar, keeping the local time of day (so `1 day ago` across a DST change is 23 or 25
    /// hours, and a local time that does not exist moves to the first one after it).
    pub fn resolve(&self, reference: DateTime<Utc>, zone: Tz) -> DateTime<Utc> {
        let count = i64::from(self.count);
        let back = match self.unit {
            Unit::Minute => reference - Duration::minutes(count),
            Unit::Hour => reference - Duration::hours(count),
            Unit::Day | Unit::Week | Unit::Month => {
                let local = reference.with_timezone(&zone).naive_local();
                let shifted = match self.unit {
                    Unit::Day => local - Duration::days(count),
                    Unit::Week => local - Duration::days(7 * count),
                    _ => local.checked_sub_months(chrono::Months::new(self.count)).unwrap_or(NaiveDateTime::MIN),
                };
                first_instant_at_or_after(shifted, zone)
            }
        };
        if !self.start_of {
            return back;
        }
        let local = back.with_timezone(&zone);
        match self.unit {
            // A minute or an hour is the same length everywhere: step back by the local minutes
            // and seconds (right for zones a half hour off).
            Unit::Minute | Unit::Hour => {
                let minutes = if self.unit == Unit::Hour { i64::from(local.minute()) } else { 0 };
                back - Duration::minutes(minutes)
                    - Duration::seconds(i64::from(local.second()))
                    - Duration::nanoseconds(i64::from(local.nanosecond()))
            }
            Unit::Day => local_midnight(local.date_naive(), zone),
            Unit::Week => {
                let date = local.date_naive();
                local_midnight(date - Duration::days(i64::from(date.weekday().num_days_from_monday())), zone)
            }
            Unit::Month => {
                let date = local.date_naive();
                local_midnight(date.with_day(1).unwrap_or(date), zone)
            }
        }
    }
}

/// `hour` or `day` (a `this`/`last` unit is singular).
fn singular_unit(word: &str) -> Option<Unit> {
    if word.ends_with('s') { None } else { Unit::parse(word) }
}

/// The first instant of a local calendar day (later than midnight where a DST change skips it).
pub fn local_midnight(date: NaiveDate, zone: Tz) -> DateTime<Utc> {
    first_instant_at_or_after(date.and_hms_opt(0, 0, 0).unwrap_or_default(), zone)
}

/// A local time as an instant: the earlier of two where it occurs twice, the first existing one
/// after it where a DST change skips it.
fn first_instant_at_or_after(local: NaiveDateTime, zone: Tz) -> DateTime<Utc> {
    (0..=180)
        .find_map(|minutes| zone.from_local_datetime(&(local + Duration::minutes(minutes))).earliest())
        .map_or_else(|| Utc.from_utc_datetime(&local), |t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn at(text: &str, reference: &str, zone: Tz) -> DateTime<Utc> {
        RelativeTime::parse(text).unwrap().resolve(utc(reference), zone)
    }

    #[test]
    fn relative_times_resolve_against_the_period_end_in_the_time_zone() {
        // A Berlin "yesterday" period that ends at Berlin's midnight of 2026-03-10.
        let end = "2026-03-09T23:00:00Z";
        let berlin = Tz::Europe__Berlin;
        assert_eq!(at("now", end, berlin), utc(end));
        assert_eq!(at("start of today", end, berlin), utc(end));
        assert_eq!(at("Start of Yesterday", end, berlin), utc("2026-03-08T23:00:00Z"));
        assert_eq!(at("start of 7 days ago", end, berlin), utc("2026-03-02T23:00:00Z"));
        assert_eq!(at("7 days ago", end, berlin), utc("2026-03-02T23:00:00Z"));
        assert_eq!(at("90 minutes ago", end, berlin), utc("2026-03-09T21:30:00Z"));
        // 2026-03-10 is a Tuesday: this week began on Monday the 9th, last week on the 2nd.
        assert_eq!(at("start of this week", end, berlin), utc("2026-03-08T23:00:00Z"));
        assert_eq!(at("start of last week", end, berlin), utc("2026-03-01T23:00:00Z"));
        assert_eq!(at("start of last month", end, berlin), utc("2026-01-31T23:00:00Z"));
        assert_eq!(at("1 month ago", "2026-03-31T12:00:00Z", Tz::UTC), utc("2026-02-28T12:00:00Z"));
        // Kolkata's hours begin at half past, UTC.
        assert_eq!(at("start of last hour", "2026-03-10T10:45:00Z", Tz::Asia__Kolkata), utc("2026-03-10T09:30:00Z"));
    }

    #[test]
    fn days_ago_follow_the_local_calendar_across_a_dst_change() {
        let york = Tz::America__New_York;
        // New York's midnight of 2026-03-09 (EDT, UTC-4); the day before began at midnight EST
        // (UTC-5): 23 hours earlier, not 24.
        let end = "2026-03-09T04:00:00Z";
        assert_eq!(at("1 day ago", end, york), utc("2026-03-08T05:00:00Z"));
        assert_eq!(at("start of yesterday", end, york), utc("2026-03-08T05:00:00Z"));
        assert_eq!(at("24 hours ago", end, york), utc("2026-03-08T04:00:00Z"));
        // In autumn the day before holds 25 hours.
        assert_eq!(at("start of yesterday", "2026-11-02T05:00:00Z", york), utc("2026-11-01T04:00:00Z"));
        // 02:30 local did not exist on 2026-03-08: a day before 02:30 on the 9th is 03:00 EDT.
        assert_eq!(at("1 day ago", "2026-03-09T06:30:00Z", york), utc("2026-03-08T07:00:00Z"));
    }

    #[test]
    fn bad_relative_times_are_refused_in_one_line() {
        for bad in [
            "soon",
            "tomorrow",
            "start of tomorrow",
            "start of next week",
            "3 fortnights ago",
            "-1 days ago",
            "seven days ago",
            "start of this days",
            "days ago",
            "now ago",
            "1000000 days ago",
            "",
        ] {
            let error = RelativeTime::parse(bad).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{bad}: {error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }
}
