//! Local time for time buckets, DST-correct without DuckDB's ICU extension (the bundled
//! DuckDB has none).
//!
//! A zone's UTC offset over a span is a step function ([`Offsets`]) that SQL evaluates as a
//! `CASE` over the clock column; `date_trunc` of the shifted, zone-less timestamp gives the
//! local bucket. Rust computes the same buckets ([`bucket_start`], [`bucket_starts`]) to list
//! every bucket of a range, empty ones included.
//!
//! A MINUTE or HOUR bucket is a span of real time: across a DST fall-back the repeated local
//! hour is two buckets. A DAY, WEEK (from Monday) or MONTH bucket is a local calendar period,
//! 23 or 25 hours long across a change, starting at the first instant of its local date.

use chrono::{DateTime, Duration, Months, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use crate::error::{Error, Result};

const MICROS_PER_SECOND: i64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interval {
    Minute,
    Hour,
    Day,
    Week,
    Month,
}

impl Interval {
    /// The `date_trunc` part name.
    pub fn unit(self) -> &'static str {
        match self {
            Interval::Minute => "minute",
            Interval::Hour => "hour",
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
        }
    }

    /// Whether a bucket is a local calendar period (rather than a fixed span of real time).
    pub fn is_calendar(self) -> bool {
        matches!(self, Interval::Day | Interval::Week | Interval::Month)
    }
}

/// Parses an IANA zone name (`Europe/Paris`, `UTC`).
pub fn parse_zone(name: &str) -> Result<Tz> {
    name.parse::<Tz>().map_err(|_| {
        Error::InvalidArgument(format!(
            "`{}` is not an IANA time zone name (such as `UTC` or `America/New_York`)",
            name.chars().take(64).collect::<String>()
        ))
    })
}

/// A zone's UTC offset over a span: `initial_s` (seconds east of UTC) until the first change,
/// then each change `(at_us, offset_s)` from its instant on, in time order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Offsets {
    pub initial_s: i32,
    pub changes: Vec<(i64, i32)>,
}

impl Offsets {
    /// A zone without changes (UTC, or any fixed offset).
    pub fn fixed(offset_s: i32) -> Offsets {
        Offsets { initial_s: offset_s, changes: Vec::new() }
    }

    /// Whether every offset is a whole number of hours and changes on a whole UTC hour: then
    /// each UTC hour lies inside one bucket of any interval of an hour or more.
    pub fn whole_hours(&self) -> bool {
        const HOUR_US: i64 = 3_600_000_000;
        self.initial_s % 3600 == 0
            && self.changes.iter().all(|(at_us, offset_s)| at_us.rem_euclid(HOUR_US) == 0 && offset_s % 3600 == 0)
    }

    /// The offset in force at `at_us`, exactly as the SQL `CASE` computes it.
    pub fn at(&self, at_us: i64) -> i32 {
        let after = self.changes.partition_point(|(change_us, _)| *change_us <= at_us);
        if after == 0 { self.initial_s } else { self.changes[after - 1].1 }
    }
}

/// The offsets of `zone` from `from_us` to `to_us`. Outside that span the nearest edge's offset
/// holds, so callers cover every instant they bucket. Changes are found by sampling every 6
/// hours and bisecting to the second (zones never change twice within 6 hours).
pub fn offsets(zone: Tz, from_us: i64, to_us: i64) -> Offsets {
    const STEP_S: i64 = 6 * 3600;
    let offset_at = |s: i64| -> i32 {
        let utc = DateTime::from_timestamp(s, 0).unwrap_or_default().naive_utc();
        zone.offset_from_utc_datetime(&utc).fix().local_minus_utc()
    };
    let from_s = from_us.div_euclid(MICROS_PER_SECOND).clamp(MIN_SECONDS, MAX_SECONDS);
    let to_s = to_us.div_euclid(MICROS_PER_SECOND).clamp(from_s, MAX_SECONDS);
    let initial_s = offset_at(from_s);
    let mut changes = Vec::new();
    let mut current = initial_s;
    let mut at = from_s;
    while at < to_s {
        let next = (at + STEP_S).min(to_s);
        let offset = offset_at(next);
        if offset != current {
            // The first second with the new offset lies in (at, next].
            let (mut lo, mut hi) = (at, next);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if offset_at(mid) == current { lo = mid } else { hi = mid }
            }
            changes.push((hi * MICROS_PER_SECOND, offset_at(hi)));
            current = offset;
        }
        at = next;
    }
    Offsets { initial_s, changes }
}

/// The seconds range the lake deals in (years 1 to 9999), so date arithmetic never overflows.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

/// The UTC start of the bucket holding `at_us`.
pub fn bucket_start(interval: Interval, zone: Tz, offsets: &Offsets, at_us: i64) -> i64 {
    let offset_us = i64::from(offsets.at(at_us)) * MICROS_PER_SECOND;
    let local = naive(at_us.saturating_add(offset_us));
    let truncated = truncate(interval, local);
    if interval.is_calendar() { local_to_utc(zone, truncated) } else { micros(truncated) - offset_us }
}

/// Every bucket start from the one holding `from_us` up to (excluding) `to_us`, in order; an
/// error when there would be more than `max`.
pub fn bucket_starts(
    interval: Interval,
    zone: Tz,
    offsets: &Offsets,
    from_us: i64,
    to_us: i64,
    max: usize,
) -> Result<Vec<i64>> {
    let mut starts = Vec::new();
    if from_us >= to_us {
        return Ok(starts);
    }
    let mut start = bucket_start(interval, zone, offsets, from_us);
    while start < to_us {
        if starts.len() == max {
            return Err(Error::InvalidArgument(format!(
                "the range holds more than {max} {} buckets; narrow it with since/until or use a longer interval",
                interval.unit()
            )));
        }
        starts.push(start);
        start = next_start(interval, zone, offsets, start);
    }
    Ok(starts)
}

/// The start of the bucket after the one starting at `start_us`.
fn next_start(interval: Interval, zone: Tz, offsets: &Offsets, start_us: i64) -> i64 {
    let length_s = match interval {
        Interval::Minute => 60,
        Interval::Hour => 3600,
        Interval::Day | Interval::Week | Interval::Month => {
            let offset_us = i64::from(offsets.at(start_us)) * MICROS_PER_SECOND;
            let local = truncate(interval, naive(start_us + offset_us));
            let next_local = match interval {
                Interval::Day => local + Duration::days(1),
                Interval::Week => local + Duration::days(7),
                _ => local.checked_add_months(Months::new(1)).unwrap_or(NaiveDateTime::MAX),
            };
            return local_to_utc(zone, next_local).max(start_us + 1);
        }
    };
    let next = bucket_start(interval, zone, offsets, start_us + length_s * MICROS_PER_SECOND);
    if next > start_us { next } else { start_us + length_s * MICROS_PER_SECOND }
}

/// `date_trunc` on a zone-less timestamp, as DuckDB does it (weeks start on Monday).
fn truncate(interval: Interval, local: NaiveDateTime) -> NaiveDateTime {
    let date = local.date();
    let midnight = |d: NaiveDate| d.and_time(NaiveTime::MIN);
    match interval {
        Interval::Minute => local.with_second(0).and_then(|t| t.with_nanosecond(0)).unwrap_or(local),
        Interval::Hour => {
            local.with_minute(0).and_then(|t| t.with_second(0)).and_then(|t| t.with_nanosecond(0)).unwrap_or(local)
        }
        Interval::Day => midnight(date),
        Interval::Week => {
            midnight(date - Duration::days(i64::from(chrono::Datelike::weekday(&date).num_days_from_monday())))
        }
        Interval::Month => midnight(chrono::Datelike::with_day(&date, 1).unwrap_or(date)),
    }
}

/// The first instant whose local time in `zone` is `local` or later: `local` itself when it
/// exists (the earlier one when it occurs twice), else the end of the DST gap that skips it.
/// Zones change on whole minutes, so probing minute by minute lands exactly on a gap's end.
pub fn local_to_utc(zone: Tz, local: NaiveDateTime) -> i64 {
    let mut probe = local;
    for _ in 0..=24 * 60 {
        if let Some(instant) = zone.from_local_datetime(&probe).earliest() {
            return instant.with_timezone(&Utc).timestamp_micros();
        }
        probe += Duration::minutes(1);
    }
    micros(local)
}

fn naive(micros: i64) -> NaiveDateTime {
    DateTime::from_timestamp_micros(micros).unwrap_or_default().naive_utc()
}

fn micros(naive: NaiveDateTime) -> i64 {
    naive.and_utc().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text).unwrap().timestamp_micros()
    }

    fn show(us: i64) -> String {
        DateTime::from_timestamp_micros(us).unwrap().to_rfc3339()
    }

    #[test]
    fn new_york_changes_twice_in_2024() {
        let zone = parse_zone("America/New_York").unwrap();
        let offsets = offsets(zone, at("2024-01-01T00:00:00Z"), at("2025-01-01T00:00:00Z"));
        assert_eq!(offsets.initial_s, -5 * 3600);
        let changes: Vec<(String, i32)> = offsets.changes.iter().map(|(t, o)| (show(*t), *o)).collect();
        assert_eq!(
            changes,
            [("2024-03-10T07:00:00+00:00".to_owned(), -4 * 3600), ("2024-11-03T06:00:00+00:00".to_owned(), -5 * 3600)]
        );
    }

    #[test]
    fn days_across_dst_are_23_and_25_hours() {
        let zone = parse_zone("Europe/Berlin").unwrap();
        let offsets = offsets(zone, at("2024-03-01T00:00:00Z"), at("2024-11-01T00:00:00Z"));
        let starts =
            bucket_starts(Interval::Day, zone, &offsets, at("2024-03-30T12:00:00Z"), at("2024-04-01T00:00:00Z"), 100)
                .unwrap();
        let shown: Vec<String> = starts.iter().map(|s| show(*s)).collect();
        assert_eq!(shown, ["2024-03-29T23:00:00+00:00", "2024-03-30T23:00:00+00:00", "2024-03-31T22:00:00+00:00"]);
        let fall = bucket_starts(
            Interval::Day,
            zone,
            &offsets,
            at("2024-10-27T00:00:00+02:00"),
            at("2024-10-28T00:00:00+01:00"),
            100,
        )
        .unwrap();
        assert_eq!(fall.len(), 1);
        assert_eq!(at("2024-10-28T00:00:00+01:00") - fall[0], 25 * 3600 * MICROS_PER_SECOND);
    }

    #[test]
    fn the_repeated_hour_of_a_fall_back_is_two_buckets() {
        let zone = parse_zone("America/New_York").unwrap();
        let offsets = offsets(zone, at("2024-11-01T00:00:00Z"), at("2024-11-05T00:00:00Z"));
        let starts =
            bucket_starts(Interval::Hour, zone, &offsets, at("2024-11-03T04:30:00Z"), at("2024-11-03T08:00:00Z"), 100)
                .unwrap();
        let shown: Vec<String> = starts.iter().map(|s| show(*s)).collect();
        assert_eq!(
            shown,
            [
                "2024-11-03T04:00:00+00:00",
                "2024-11-03T05:00:00+00:00",
                "2024-11-03T06:00:00+00:00",
                "2024-11-03T07:00:00+00:00"
            ]
        );
    }

    #[test]
    fn half_hour_zones_start_hours_at_half_past_utc() {
        let zone = parse_zone("Asia/Kolkata").unwrap();
        let offsets = offsets(zone, at("2024-01-01T00:00:00Z"), at("2024-01-02T00:00:00Z"));
        assert_eq!(
            show(bucket_start(Interval::Hour, zone, &offsets, at("2024-01-01T10:10:00Z"))),
            "2024-01-01T09:30:00+00:00"
        );
    }

    #[test]
    fn a_day_that_skips_its_midnight_starts_when_the_gap_ends() {
        // Santiago springs forward at 24:00 local: 2024-09-08 has no 00:00, it starts at 01:00 (-03).
        let zone = parse_zone("America/Santiago").unwrap();
        let local = NaiveDate::from_ymd_opt(2024, 9, 8).unwrap().and_time(NaiveTime::MIN);
        assert_eq!(show(local_to_utc(zone, local)), "2024-09-08T04:00:00+00:00");
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        let zone = parse_zone("UTC").unwrap();
        let fixed = Offsets::fixed(0);
        assert_eq!(
            show(bucket_start(Interval::Week, zone, &fixed, at("2024-05-16T10:00:00Z"))),
            "2024-05-13T00:00:00+00:00"
        );
        assert_eq!(
            show(bucket_start(Interval::Month, zone, &fixed, at("2024-05-16T10:00:00Z"))),
            "2024-05-01T00:00:00+00:00"
        );
    }

    #[test]
    fn too_many_buckets_is_a_user_error() {
        let zone = parse_zone("UTC").unwrap();
        let error = bucket_starts(Interval::Minute, zone, &Offsets::fixed(0), 0, 86_400_000_000, 1000).unwrap_err();
        assert_eq!(error.kind(), crate::ErrorKind::BadInput);
    }

    #[test]
    fn unknown_zones_are_user_errors() {
        assert_eq!(parse_zone("Mars/Olympus").unwrap_err().kind(), crate::ErrorKind::BadInput);
    }
}
