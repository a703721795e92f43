//! Timestamps as the worker writes them into attempts and manifests.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `t` as RFC 3339 text (`2024-05-01T12:00:00.123Z`).
///
/// RFC 3339 cannot express years outside 0000–9999 or offsets with
/// seconds, and formatting fails only for those. The times given here are
/// the clock's now and times Postgres stored in UTC, which have neither;
/// should one turn up anyway, `time`'s own display form keeps the instant
/// readable instead of writing an empty string.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_as_rfc3339() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn an_offset_rfc3339_cannot_express_still_gives_the_instant() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000)
            .unwrap()
            .to_offset(time::macros::offset!(+0:00:30));
        let text = rfc3339(t);
        assert!(text.starts_with("2023-11-14 22:13:50"), "{text}");
    }
}
