//! A page's body read without building its records as one tree: the body
//! around the records as a [`Value`] (what the styles steer by, with the
//! records array left empty), and where the records array lies in the
//! body's bytes, with how many records it holds.
//!
//! A whole body parsed into a `Value` costs many times its size (a small
//! record is a map, its keys and values, each allocated); kept as text, a
//! record becomes a tree only while it is flattened, one at a time. The
//! body is read in a few passes over its bytes, none of which allocates
//! per record: the split checks the array and counts it, and
//! [`PageBody::records`] delimits each record as it is asked for (a range
//! kept a record would cost eight bytes each, more than a small record's
//! row adds).
//!
//! The records are found where [`records`](super::records) finds them: at
//! `records_path`, a dotted path through objects, or the body itself.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::de::{Deserializer as _, IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::PaginationError;
use crate::flatten::kind;

/// A 2xx body, split.
#[derive(Debug, Clone, PartialEq)]
pub struct PageBody {
    bytes: Bytes,
    rest: Value,
    /// Where the records array lies in `bytes`, checked whole; or why the
    /// records are not where the spec says.
    records: Result<RecordsArray, PaginationError>,
}

/// The records array's text (`[` to `]`) in the body, and its length.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RecordsArray {
    start: u32,
    end: u32,
    count: usize,
}

impl PageBody {
    /// Splits a body; an error only when it is not JSON. Records that are
    /// missing or not an array are the page's error, kept for
    /// [`records`](Self::records) to tell.
    pub fn parse(bytes: Bytes, records_path: Option<&str>) -> Result<PageBody, serde_json::Error> {
        let refuse = |why: String| <serde_json::Error as serde::de::Error>::custom(why);
        if u32::try_from(bytes.len()).is_err() {
            return Err(refuse(format!("{} bytes is over 4 GiB", bytes.len())));
        }
        let text = std::str::from_utf8(&bytes).map_err(|e| refuse(format!("not UTF-8: {e}")))?;
        let segments: Vec<&str> = match records_path {
            Some(path) => path.split('.').collect(),
            None => Vec::new(),
        };
        let shown = records_path.unwrap_or("(body)");
        let walked = walk(text, text, &segments)?;
        let records = match walked.found {
            Found::Records(records) => Ok(records),
            Found::NotAnArray(found) => Err(PaginationError::NotAnArray {
                path: shown.to_string(),
                found,
            }),
            Found::Nothing => Err(PaginationError::NoRecords {
                path: shown.to_string(),
            }),
        };
        Ok(PageBody {
            rest: walked.value,
            records,
            bytes,
        })
    }

    /// The body with the records array empty.
    pub fn rest(&self) -> &Value {
        &self.rest
    }

    /// Each record's JSON text, in order.
    pub fn records(&self) -> Result<RecordTexts<'_>, PaginationError> {
        let array = self.records.as_ref().map_err(Clone::clone)?;
        // The range was taken from the text these bytes hold, at a value's
        // bounds: the slice is whole UTF-8.
        let text = (self.bytes)
            .get(array.start as usize..array.end as usize)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("[]");
        Ok(RecordTexts {
            rest: text.strip_prefix('[').unwrap_or(text),
            left: array.count,
        })
    }

    /// The body's size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// The records' texts, delimited one at a time from the array's text.
#[derive(Debug, Clone)]
pub struct RecordTexts<'b> {
    /// The array's text after `[` or after the record given last.
    rest: &'b str,
    left: usize,
}

impl<'b> Iterator for RecordTexts<'b> {
    type Item = &'b str;

    fn next(&mut self) -> Option<&'b str> {
        self.left = self.left.checked_sub(1)?;
        let at = self.rest.trim_start();
        let at = at.strip_prefix(',').unwrap_or(at);
        let mut reader = serde_json::Deserializer::from_str(at);
        // The array was read whole when the body was split, so every
        // record it counted is there; were one not, it shows as `null`
        // (a record without its key: the page is refused), never as a
        // record silently missing.
        let Ok(raw) = <&RawValue as serde::Deserialize>::deserialize(&mut reader) else {
            self.rest = "";
            return Some("null");
        };
        let text = raw.get();
        let end = offset_in(at, text) + text.len();
        self.rest = at.get(end..).unwrap_or("");
        Some(text)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for RecordTexts<'_> {}

/// Where a slice of `whole` starts in it.
fn offset_in(whole: &str, part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

/// Where a slice of the body's text lies in it (the body is under 4 GiB).
fn range_in(body: &str, part: &str) -> (u32, u32) {
    let start = offset_in(body, part);
    let end = start + part.len();
    (
        u32::try_from(start).unwrap_or(u32::MAX),
        u32::try_from(end).unwrap_or(u32::MAX),
    )
}

enum Found {
    Records(RecordsArray),
    NotAnArray(&'static str),
    Nothing,
}

struct Walked {
    value: Value,
    found: Found,
}

/// The records array's elements, read through (so the array is JSON
/// whole) and counted.
struct CountRecords;

impl<'de> Visitor<'de> for CountRecords {
    type Value = usize;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut count = 0usize;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            count += 1;
        }
        Ok(count)
    }
}

/// Reads `text` (one JSON value) toward the records at `segments`: every
/// object on the way is read one level at a time, its other members into
/// `Value`s; the records array's elements are only delimited.
fn walk(body: &str, text: &str, segments: &[&str]) -> Result<Walked, serde_json::Error> {
    let first = text.trim_start().as_bytes().first().copied();
    match (segments.split_first(), first) {
        (None, Some(b'[')) => {
            let mut reader = serde_json::Deserializer::from_str(text);
            let count = reader.deserialize_seq(CountRecords)?;
            reader.end()?;
            let (start, end) = range_in(body, text.trim());
            Ok(Walked {
                value: Value::Array(Vec::new()),
                found: Found::Records(RecordsArray { start, end, count }),
            })
        }
        (None, _) => {
            let value: Value = serde_json::from_str(text)?;
            let found = Found::NotAnArray(kind(&value));
            Ok(Walked { value, found })
        }
        (Some((key, rest)), Some(b'{')) => {
            let members: BTreeMap<String, &RawValue> = serde_json::from_str(text)?;
            let mut found = Found::Nothing;
            let mut object = Map::new();
            for (name, raw) in members {
                let value = if name == *key {
                    let walked = walk(body, raw.get(), rest)?;
                    found = walked.found;
                    walked.value
                } else {
                    serde_json::from_str(raw.get())?
                };
                object.insert(name, value);
            }
            Ok(Walked {
                value: Value::Object(object),
                found,
            })
        }
        (Some(_), _) => Ok(Walked {
            value: serde_json::from_str(text)?,
            found: Found::Nothing,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pagination::records;

    fn split(body: &str, path: Option<&str>) -> PageBody {
        PageBody::parse(Bytes::copy_from_slice(body.as_bytes()), path).unwrap()
    }

    fn texts(body: &PageBody) -> Vec<String> {
        body.records().unwrap().map(str::to_string).collect()
    }

    #[test]
    fn records_are_found_where_the_whole_tree_finds_them() {
        let bodies = [
            (
                r#"{"data": {"items": [{"id": 1}, {"id": 2, "x": "a\"b"}]}, "total": 2}"#,
                Some("data.items"),
            ),
            (r#"[{"id": 1}, {"id": 2}] "#, None),
            ("[ {\"a\": \"x,]\"} ,\n 2 ,\t[3, [4]] , \"[\" ]", None),
            (r#" {"data": [], "next": null}"#, Some("data")),
            (
                r#"{"data": [1, "two", [3], {"four": 4}, null]}"#,
                Some("data"),
            ),
        ];
        for (text, path) in bodies {
            let tree: Value = serde_json::from_str(text).unwrap();
            let whole: Vec<Value> = records(&tree, path).unwrap().to_vec();
            let body = split(text, path);
            let each: Vec<Value> = (texts(&body).iter())
                .map(|t| serde_json::from_str(t).unwrap())
                .collect();
            assert_eq!(each, whole, "{text}");
            assert_eq!(body.records().unwrap().len(), whole.len(), "{text}");
        }
    }

    #[test]
    fn the_rest_is_the_body_with_the_records_emptied() {
        let body = split(
            r#"{"data": {"items": [{"id": 1}], "total": "7"}, "cursor": {"next": "b"}, "n": 12.50}"#,
            Some("data.items"),
        );
        let expected: Value = serde_json::from_str(
            r#"{"data": {"items": [], "total": "7"}, "cursor": {"next": "b"}, "n": 12.50}"#,
        )
        .unwrap();
        assert_eq!(body.rest(), &expected);
        assert_eq!(
            body.rest()["n"].to_string(),
            "12.50",
            "numbers keep their text"
        );
    }

    #[test]
    fn missing_or_misplaced_records_are_the_pages_error_as_before() {
        let cases = [
            (r#"{"data": {"items": 5}}"#, Some("data.items")),
            (r#"{"data": [1]}"#, Some("nope")),
            (r#"{"data": [1]}"#, Some("data.items")),
            (r#"{"data": null}"#, Some("data")),
            (r#"{"data": [1]}"#, None),
            (r#""text""#, Some("data")),
        ];
        for (text, path) in cases {
            let tree: Value = serde_json::from_str(text).unwrap();
            let whole = records(&tree, path).unwrap_err();
            let split = split(text, path).records().err().unwrap();
            assert_eq!(split.to_string(), whole.to_string(), "{text}");
            assert_eq!(split_rest(text, path), tree, "{text}: nothing else changes");
        }
    }

    fn split_rest(text: &str, path: Option<&str>) -> Value {
        split(text, path).rest().clone()
    }

    #[test]
    fn a_body_that_is_not_json_is_refused_whole() {
        for text in [
            r#"{"data": [1, 2"#,
            r#"{"data": [1]} x"#,
            "",
            "[1,]",
            "\u{fe}",
        ] {
            let parsed = PageBody::parse(Bytes::copy_from_slice(text.as_bytes()), Some("data"));
            assert!(parsed.is_err(), "{text:?}");
        }
        let invalid_utf8 = Bytes::from_static(b"[\"\xff\"]");
        assert!(PageBody::parse(invalid_utf8, None).is_err());
    }

    #[test]
    fn a_repeated_member_counts_as_its_last_as_in_a_tree() {
        let text = r#"{"data": [1], "data": [2, 3]}"#;
        let body = split(text, Some("data"));
        assert_eq!(texts(&body), ["2", "3"]);
    }
}
