//! Names for runs: placeholders in `output.dir` and `output.file`, filled
//! when a run starts, so nightly runs do not overwrite each other
//! (`dir = "orders/{date}"`, `file = "orders-{window_start}.csv"`).
//!
//! `{date}` is the run's start date (UTC, `2026-12-01`); `{window_start}`
//! and `{window_end}` the incremental window's bounds (`20261201T020000Z`
//! for a time cursor, the number for an integer cursor; `{window_end}` is
//! `open` without an upper bound). Every value is digits, letters and `-`,
//! so a filled name stays one plain path under the tenant's directory.

use time::OffsetDateTime;

use super::incremental::{CursorFormat, IncrementalSpec, Window};
use super::{invalid, SpecError};

const PLACEHOLDERS: [&str; 3] = ["date", "window_start", "window_end"];

/// Checks that `text` names only known placeholders, and the window ones
/// only when the export is incremental.
pub fn check_template(field: &str, text: &str, incremental: bool) -> Result<(), SpecError> {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| invalid(field, "a `{` without its `}`"))?;
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(invalid(
                field,
                format!("unknown placeholder {{{name}}} (known: {{date}}, {{window_start}}, {{window_end}})"),
            ));
        }
        if name.starts_with("window") && !incremental {
            return Err(invalid(
                field,
                format!("{{{name}}} needs an [incremental] section"),
            ));
        }
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(invalid(field, "a `}` without its `{`"));
    }
    Ok(())
}

/// `text` with its placeholders filled for a run started at `now`.
pub fn fill(
    text: &str,
    now: OffsetDateTime,
    incremental: Option<(&IncrementalSpec, &Window)>,
) -> String {
    let date = format!(
        "{:04}-{:02}-{:02}",
        now.year(),
        u8::from(now.month()),
        now.day()
    );
    let mut filled = text.replace("{date}", &date);
    if let Some((spec, window)) = incremental {
        filled = filled.replace("{window_start}", &bound(spec, window.from));
        let end = window
            .to
            .map_or_else(|| "open".to_string(), |to| bound(spec, to));
        filled = filled.replace("{window_end}", &end);
    }
    filled
}

fn bound(spec: &IncrementalSpec, units: i64) -> String {
    match spec.format {
        CursorFormat::Rfc3339 | CursorFormat::Unix => OffsetDateTime::from_unix_timestamp(units)
            .map(compact)
            .unwrap_or_else(|_| units.to_string()),
        CursorFormat::UnixMs => OffsetDateTime::from_unix_timestamp(units.div_euclid(1000))
            .map(compact)
            .unwrap_or_else(|_| units.to_string()),
        CursorFormat::Integer => units.to_string(),
    }
}

fn compact(t: OffsetDateTime) -> String {
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn placeholders_are_filled_per_run() {
        let spec = IncrementalSpec {
            cursor_field: "updated_at".into(),
            format: CursorFormat::Rfc3339,
            since_param: "since".into(),
            until_param: Some("until".into()),
            start: "2026-01-01T00:00:00Z".into(),
            lookback: 0,
            lag_s: 0,
            window: None,
        };
        let window = Window {
            from: datetime!(2026-11-30 02:00 UTC).unix_timestamp(),
            to: Some(datetime!(2026-12-01 02:00 UTC).unix_timestamp()),
        };
        let now = datetime!(2026-12-01 02:01 UTC);
        assert_eq!(
            fill(
                "orders/{date}/orders-{window_start}.csv",
                now,
                Some((&spec, &window))
            ),
            "orders/2026-12-01/orders-20261130T020000Z.csv"
        );
        assert_eq!(
            fill("{window_end}", now, Some((&spec, &window))),
            "20261201T020000Z"
        );
        assert_eq!(fill("plain.csv", now, None), "plain.csv");
    }

    #[test]
    fn only_known_placeholders_are_accepted() {
        assert!(check_template("output.file", "a-{date}.csv", false).is_ok());
        assert!(check_template("output.file", "a-{window_start}.csv", true).is_ok());
        for (text, incremental) in [
            ("a-{window_start}.csv", false),
            ("a-{user}.csv", true),
            ("a-{date.csv", true),
            ("a-date}.csv", true),
        ] {
            let err = check_template("output.file", text, incremental).unwrap_err();
            assert!(err.to_string().contains("output.file"), "{text}: {err}");
        }
    }
}
