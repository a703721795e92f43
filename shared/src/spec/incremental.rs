//! `[incremental]`: an export of what changed in a window of a cursor
//! field (`updated_at`, an increasing id), and the window arithmetic.
//!
//! A run exports `(watermark − lookback, upper]`. `upper` is pinned when
//! the run starts, at now minus `lag` (a time cursor), so rows changing
//! while the run reads are not chased: they fall in the next window. The
//! watermark advances only when a run's CSV is published, to the largest
//! cursor value the run actually delivered (never the clock), or to
//! `upper` when the window held no rows; it never moves back. The window
//! is sent to the source as query parameters in the cursor's format.
//!
//! Cursor values are kept as `i64` units of their format: seconds
//! (`rfc3339`, `unix`), milliseconds (`unix_ms`), or the integer itself.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{check_path, invalid, SpecError};
use crate::model::text_enum;
use crate::pagination::lookup;

text_enum!(
    /// How a cursor value reads in a record and is written in a parameter.
    CursorFormat {
        /// RFC 3339 text (`2026-12-01T02:00:00Z`), sent in UTC.
        Rfc3339 => "rfc3339",
        /// Seconds since the epoch.
        Unix => "unix",
        /// Milliseconds since the epoch.
        UnixMs => "unix_ms",
        /// An increasing integer (an id): no upper bound, no lag.
        Integer => "integer",
    }
);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncrementalSpec {
    /// The record field (a dotted path) the window is over.
    pub cursor_field: String,
    pub format: CursorFormat,
    /// The parameter that carries the window's lower bound (exclusive).
    pub since_param: String,
    /// The parameter that carries the upper bound (inclusive); required
    /// for a time cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_param: Option<String>,
    /// The watermark of the first run, in the cursor's format.
    pub start: String,
    /// How far back of the watermark each window starts (cursor units:
    /// seconds, milliseconds or integers): rows committed late with an
    /// older cursor value are read again, never lost.
    #[serde(default)]
    pub lookback: u64,
    /// How far behind now the upper bound is pinned (seconds; time
    /// cursors only).
    #[serde(default = "default_lag_s")]
    pub lag_s: u64,
    /// The window of this run, pinned when it started; absent in a spec as
    /// written (a spec that sets it re-runs that window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
}

fn default_lag_s() -> u64 {
    60
}

/// `(from, to]` in cursor units; `to` is absent for an integer cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub from: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<i64>,
}

/// Largest lookback or lag: a year of seconds.
const MAX_SPAN: u64 = 366 * 24 * 3600;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("cursor field `{field}`: {message}")]
pub struct CursorError {
    pub field: String,
    pub message: String,
}

impl IncrementalSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        check_path("incremental.cursor_field", &self.cursor_field)?;
        for (field, param) in [
            ("incremental.since_param", Some(&self.since_param)),
            ("incremental.until_param", self.until_param.as_ref()),
        ] {
            if let Some(param) = param {
                if param.is_empty() || param.len() > 64 || param.chars().any(char::is_control) {
                    return Err(invalid(
                        field,
                        "must be 1-64 characters, no control characters",
                    ));
                }
            }
        }
        if self.is_time() && self.until_param.is_none() {
            return Err(invalid(
                "incremental.until_param",
                "a time cursor needs the parameter that bounds the window above",
            ));
        }
        let span = match self.format {
            CursorFormat::UnixMs => MAX_SPAN * 1000,
            _ => MAX_SPAN,
        };
        if self.lookback > span {
            return Err(invalid("incremental.lookback", "must be at most a year"));
        }
        if self.lag_s > MAX_SPAN {
            return Err(invalid("incremental.lag_s", "must be at most a year"));
        }
        self.format
            .parse(&self.start)
            .map_err(|e| invalid("incremental.start", e))?;
        if let Some(window) = &self.window {
            if window.to.is_some_and(|to| to < window.from) {
                return Err(invalid("incremental.window", "`to` is before `from`"));
            }
        }
        Ok(())
    }

    fn is_time(&self) -> bool {
        self.format != CursorFormat::Integer
    }

    /// The start watermark in cursor units.
    pub fn start_units(&self) -> Result<i64, SpecError> {
        self.format
            .parse(&self.start)
            .map_err(|e| invalid("incremental.start", e))
    }

    /// The window of a run starting at `now` from `watermark` (the start,
    /// for a first run).
    pub fn window_at(&self, watermark: i64, now: OffsetDateTime) -> Window {
        let lookback = i64::try_from(self.lookback).unwrap_or(i64::MAX);
        let from = watermark.saturating_sub(lookback);
        let to = self.is_time().then(|| {
            let lag = i64::try_from(self.lag_s).unwrap_or(i64::MAX);
            let upper = now.unix_timestamp().saturating_sub(lag);
            let upper = match self.format {
                CursorFormat::UnixMs => upper.saturating_mul(1000),
                _ => upper,
            };
            // A clock behind the watermark gives an empty window, not a
            // reversed one.
            upper.max(from)
        });
        Window { from, to }
    }

    /// The query parameters that send `window` to the source.
    pub fn params(&self, window: &Window) -> Vec<(String, String)> {
        let mut params = vec![(self.since_param.clone(), self.format.render(window.from))];
        if let (Some(param), Some(to)) = (&self.until_param, window.to) {
            params.push((param.clone(), self.format.render(to)));
        }
        params
    }

    /// The cursor value of `record`.
    pub fn cursor_of(&self, record: &Value) -> Result<i64, CursorError> {
        let err = |message: String| CursorError {
            field: self.cursor_field.clone(),
            message,
        };
        match lookup(record, &self.cursor_field) {
            None | Some(Value::Null) => Err(err("missing from the record".into())),
            Some(Value::Number(n)) if self.format != CursorFormat::Rfc3339 => n
                .as_i64()
                .ok_or_else(|| err(format!("{n} is not a whole number"))),
            Some(Value::String(s)) => self.format.parse(s).map_err(err),
            Some(other) => Err(err(format!(
                "{} is not a {} value",
                crate::flatten::kind(other),
                self.format
            ))),
        }
    }
}

impl CursorFormat {
    /// A value written in this format, in cursor units.
    pub fn parse(self, text: &str) -> Result<i64, String> {
        match self {
            CursorFormat::Rfc3339 => OffsetDateTime::parse(text, &Rfc3339)
                .map(|t| t.unix_timestamp())
                .map_err(|e| format!("{text:?} is not RFC 3339 ({e})")),
            _ => text
                .parse::<i64>()
                .map_err(|_| format!("{text:?} is not a whole number")),
        }
    }

    /// Cursor units written in this format (RFC 3339 in UTC).
    pub fn render(self, units: i64) -> String {
        match self {
            CursorFormat::Rfc3339 => OffsetDateTime::from_unix_timestamp(units)
                .ok()
                .and_then(|t| t.format(&Rfc3339).ok())
                .unwrap_or_else(|| units.to_string()),
            _ => units.to_string(),
        }
    }
}

/// The watermark after a published run of `window` that delivered cursor
/// values up to `max_seen`: the largest value seen (no further than the
/// window's upper bound: a source that ignores the bound must not carry
/// the watermark past rows it will never send again), or the upper bound
/// when the window held none; never behind `previous`.
pub fn advanced(previous: i64, window: &Window, max_seen: Option<i64>) -> i64 {
    let reached = match (max_seen, window.to) {
        (Some(seen), Some(to)) => seen.min(to),
        (Some(seen), None) => seen,
        (None, Some(to)) => to,
        (None, None) => previous,
    };
    previous.max(reached)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn updated_at() -> IncrementalSpec {
        IncrementalSpec {
            cursor_field: "updated_at".into(),
            format: CursorFormat::Rfc3339,
            since_param: "updated_since".into(),
            until_param: Some("updated_until".into()),
            start: "2026-01-01T00:00:00Z".into(),
            lookback: 300,
            lag_s: 60,
            window: None,
        }
    }

    #[test]
    fn a_window_reaches_back_by_the_lookback_and_stops_short_of_now_by_the_lag() {
        let spec = updated_at();
        let watermark = datetime!(2026-12-01 01:00 UTC).unix_timestamp();
        let window = spec.window_at(watermark, datetime!(2026-12-01 02:00 UTC));
        assert_eq!(
            window.from,
            datetime!(2026-12-01 00:55 UTC).unix_timestamp()
        );
        assert_eq!(
            window.to,
            Some(datetime!(2026-12-01 01:59 UTC).unix_timestamp())
        );
        assert_eq!(
            spec.params(&window),
            vec![
                (
                    "updated_since".to_string(),
                    "2026-12-01T00:55:00Z".to_string()
                ),
                (
                    "updated_until".to_string(),
                    "2026-12-01T01:59:00Z".to_string()
                )
            ]
        );
    }

    #[test]
    fn a_clock_behind_the_watermark_gives_an_empty_window() {
        let spec = updated_at();
        let watermark = datetime!(2026-12-01 03:00 UTC).unix_timestamp();
        let window = spec.window_at(watermark, datetime!(2026-12-01 02:00 UTC));
        assert_eq!(window.to, Some(window.from));
    }

    #[test]
    fn an_integer_cursor_has_no_upper_bound() {
        let spec = IncrementalSpec {
            format: CursorFormat::Integer,
            until_param: None,
            start: "0".into(),
            lookback: 10,
            ..updated_at()
        };
        spec.validate().unwrap();
        let window = spec.window_at(500, OffsetDateTime::now_utc());
        assert_eq!(
            window,
            Window {
                from: 490,
                to: None
            }
        );
        assert_eq!(
            spec.params(&window),
            vec![("updated_since".into(), "490".into())]
        );
    }

    #[test]
    fn cursor_values_are_read_in_their_format() {
        let spec = updated_at();
        let record = serde_json::json!({"updated_at": "2026-12-01T02:00:00+01:00"});
        assert_eq!(
            spec.cursor_of(&record),
            Ok(datetime!(2026-12-01 01:00 UTC).unix_timestamp())
        );
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"updated_at": 5}),
            serde_json::json!({"updated_at": "yesterday"}),
        ] {
            let err = spec.cursor_of(&bad).unwrap_err();
            assert_eq!(err.field, "updated_at", "{err}");
        }
        let ms = IncrementalSpec {
            format: CursorFormat::UnixMs,
            ..updated_at()
        };
        assert_eq!(
            ms.cursor_of(&serde_json::json!({"updated_at": 1500})),
            Ok(1500)
        );
        assert_eq!(
            ms.cursor_of(&serde_json::json!({"updated_at": "1500"})),
            Ok(1500)
        );
    }

    #[test]
    fn the_watermark_advances_to_what_was_seen_and_never_back() {
        let window = Window {
            from: 100,
            to: Some(200),
        };
        assert_eq!(advanced(150, &window, Some(180)), 180);
        assert_eq!(
            advanced(150, &window, None),
            200,
            "an empty window advances to its upper bound"
        );
        assert_eq!(advanced(150, &window, Some(120)), 150, "never back");
        let open = Window {
            from: 100,
            to: None,
        };
        assert_eq!(advanced(150, &open, None), 150);
        assert_eq!(advanced(150, &open, Some(900)), 900);
        // A record past the upper bound (a source that ignores it) does not
        // carry the watermark beyond the window.
        assert_eq!(advanced(150, &window, Some(10_000)), 200);
    }

    #[test]
    fn a_time_cursor_needs_an_upper_bound_parameter() {
        let spec = IncrementalSpec {
            until_param: None,
            ..updated_at()
        };
        let err = spec.validate().unwrap_err();
        assert!(err.to_string().contains("incremental.until_param"), "{err}");
        let spec = IncrementalSpec {
            start: "soon".into(),
            ..updated_at()
        };
        assert!(spec
            .validate()
            .unwrap_err()
            .to_string()
            .contains("incremental.start"));
    }
}
