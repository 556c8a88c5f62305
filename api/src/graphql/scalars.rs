//! The `DateTime` scalar: RFC 3339 in, any offset accepted; RFC 3339 in UTC with `Z` out.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use chrono::{SecondsFormat, Utc};

/// An instant: RFC 3339 (`2026-11-29T12:00:00Z`, any offset accepted), returned in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateTime(pub chrono::DateTime<Utc>);

impl DateTime {
    pub fn from_micros(micros: i64) -> DateTime {
        DateTime(chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default())
    }

    pub fn micros(self) -> i64 {
        self.0.timestamp_micros()
    }
}

impl std::fmt::Display for DateTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

/// An RFC 3339 date-time; UTC (`Z`) on output.
#[Scalar(name = "DateTime")]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        let Value::String(text) = &value else {
            return Err(InputValueError::expected_type(value));
        };
        chrono::DateTime::parse_from_rfc3339(text).map(|t| DateTime(t.with_timezone(&Utc))).map_err(|_| {
            InputValueError::custom(format!("`{text}` is not an RFC 3339 date-time like 2026-11-29T12:00:00Z"))
        })
    }

    fn to_value(&self) -> Value {
        Value::String(self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_times_come_out_in_utc_with_z_and_only_the_digits_needed() {
        assert_eq!(DateTime::from_micros(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(DateTime::from_micros(1_500_000).to_string(), "1970-01-01T00:00:01.500Z");
        let parsed = <DateTime as ScalarType>::parse(Value::String("2026-11-29T13:00:00+01:00".into())).unwrap();
        assert_eq!(parsed.to_string(), "2026-11-29T12:00:00Z");
        assert!(<DateTime as ScalarType>::parse(Value::String("yesterday".into())).is_err());
    }
}
