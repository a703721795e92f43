//! Reading a response body: the records of a page, and the typed fields a
//! style steers by (a total, a cursor, a `has_more` flag) at dotted paths.
//!
//! Every field is optional in the same way — absent and `null` mean "not
//! said" — and a field of the wrong type is an error naming its path, never
//! a silent end of the export.

use serde_json::Value;

use super::PaginationError;
use crate::flatten::kind;

/// The records of a page: the array at `records_path`, or the body itself.
pub fn records<'a>(
    body: &'a Value,
    records_path: Option<&str>,
) -> Result<&'a [Value], PaginationError> {
    let (value, path) = match records_path {
        Some(path) => (
            lookup(body, path).ok_or_else(|| PaginationError::NoRecords {
                path: path.to_string(),
            })?,
            path,
        ),
        None => (body, "(body)"),
    };
    match value {
        Value::Array(items) => Ok(items),
        other => Err(PaginationError::NotAnArray {
            path: path.to_string(),
            found: kind(other),
        }),
    }
}

/// Walks a dotted path through objects.
pub fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

/// A count at `path`: a non-negative integer, or a string holding one
/// (some APIs quote their totals).
pub(super) fn optional_u64(body: &Value, path: &str) -> Result<Option<u64>, PaginationError> {
    match lookup(body, path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(Value::String(s)) if s.parse::<u64>().is_ok() => Ok(s.parse().ok()),
        Some(other) => Err(bad_field(path, other, "a non-negative integer")),
    }
}

/// A string at `path`; a number is taken as its decimal text.
pub(super) fn optional_string(body: &Value, path: &str) -> Result<Option<String>, PaginationError> {
    match lookup(body, path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(bad_field(path, other, "a string")),
    }
}

/// A flag at `path`; absent or `null` is false.
pub(super) fn flag(body: &Value, path: &str) -> Result<bool, PaginationError> {
    match lookup(body, path) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(bad_field(path, other, "a boolean")),
    }
}

pub(super) fn bad_field(path: &str, found: &Value, expected: &'static str) -> PaginationError {
    PaginationError::BadField {
        path: path.to_string(),
        found: kind(found),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_are_found_or_named() {
        let body = json!({"data": {"items": [1, 2]}});
        assert_eq!(records(&body, Some("data.items")).unwrap().len(), 2);
        assert_eq!(
            records(&body, Some("nope")),
            Err(PaginationError::NoRecords {
                path: "nope".into()
            })
        );
        assert!(matches!(
            records(&body, Some("data")),
            Err(PaginationError::NotAnArray { .. })
        ));
        assert!(matches!(
            records(&body, None),
            Err(PaginationError::NotAnArray { .. })
        ));
        assert_eq!(records(&json!([]), None).unwrap().len(), 0);
    }

    #[test]
    fn lookup_walks_objects_only() {
        let body = json!({"a": {"b": {"c": 1}}, "list": [{"x": 1}]});
        assert_eq!(lookup(&body, "a.b.c"), Some(&json!(1)));
        assert_eq!(lookup(&body, "a.x"), None);
        assert_eq!(lookup(&body, "list.x"), None);
    }

    #[test]
    fn counts_accept_integers_and_quoted_integers() {
        let body = json!({"n": 7, "s": "8", "null": null, "neg": -1, "f": 1.5, "word": "many"});
        assert_eq!(optional_u64(&body, "n"), Ok(Some(7)));
        assert_eq!(optional_u64(&body, "s"), Ok(Some(8)));
        assert_eq!(optional_u64(&body, "null"), Ok(None));
        assert_eq!(optional_u64(&body, "absent"), Ok(None));
        for bad in ["neg", "f", "word"] {
            assert_eq!(
                optional_u64(&body, bad),
                Err(PaginationError::BadField {
                    path: bad.into(),
                    found: kind(&body[bad]),
                    expected: "a non-negative integer",
                })
            );
        }
    }

    #[test]
    fn strings_accept_numbers_and_refuse_the_rest() {
        let body = json!({"s": "abc", "n": 42, "null": null, "obj": {}});
        assert_eq!(optional_string(&body, "s"), Ok(Some("abc".into())));
        assert_eq!(optional_string(&body, "n"), Ok(Some("42".into())));
        assert_eq!(optional_string(&body, "null"), Ok(None));
        assert_eq!(optional_string(&body, "absent"), Ok(None));
        assert!(matches!(
            optional_string(&body, "obj"),
            Err(PaginationError::BadField {
                expected: "a string",
                ..
            })
        ));
    }

    #[test]
    fn flags_default_to_false() {
        let body = json!({"t": true, "f": false, "null": null, "s": "true"});
        assert_eq!(flag(&body, "t"), Ok(true));
        assert_eq!(flag(&body, "f"), Ok(false));
        assert_eq!(flag(&body, "null"), Ok(false));
        assert_eq!(flag(&body, "absent"), Ok(false));
        assert!(matches!(
            flag(&body, "s"),
            Err(PaginationError::BadField {
                expected: "a boolean",
                ..
            })
        ));
    }
}
