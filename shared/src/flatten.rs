//! Turning one JSON record from an API page into one row of CSV cells, and
//! deriving the record's staging key from its primary-key fields.
//!
//! Flattening rules, so the CSV says exactly what the API said:
//! - nested objects become dotted column names (`{"a":{"b":1}}` → `a.b`);
//!   a column name has at most [`MAX_DEPTH`] dotted parts, and an object
//!   that would need more is kept whole as compact JSON text;
//! - an empty object is the text `{}` (it would otherwise vanish);
//! - arrays are compact JSON text;
//! - strings are kept byte for byte ([`Cell::Text`]);
//! - numbers keep their exact source text (`12.50`, `9007199254740993`;
//!   only an exponent is normalised by serde_json, `1E3` → `1e+3`),
//!   booleans are `true`/`false` ([`Cell::Raw`]);
//! - `null` is [`Cell::Null`];
//! - two fields that would land in the same column (`"a.b"` next to
//!   `"a": {"b": …}`) are an error rather than one silently overwriting the
//!   other.
//!
//! Everything here is pure: no I/O, no clock.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

mod cell_wire;
mod from_text;
mod staged_row;

pub use from_text::FlatRecord;
pub use staged_row::StagedRow;

/// One cell. Text came from a JSON string; Raw is everything else rendered as text
/// (numbers with their exact source text, true/false, arrays and objects as compact JSON).
/// Only Text is subject to the CSV formula guard: a number like -5 is not a formula.
///
/// Serialized as `null` | `"text"` | `{"r":"123"}` so staged rows keep the
/// difference between the string `"5"` and the number `5`.
/// Read back by a visitor of its own (`cell_wire`): serde's untagged
/// reading tries each variant in turn and formats an error for every miss,
/// which made reading staged rows back the finalizer's largest cost.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum Cell {
    Null,
    Text(String),
    Raw { r: String },
}

/// A cell as the CSV writer takes it: null is no cell at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellRef<'a> {
    /// Subject to the formula guard.
    Text(&'a str),
    Raw(&'a str),
}

impl Cell {
    /// This cell as the CSV writer takes it; `None` for null.
    pub fn shown(&self) -> Option<CellRef<'_>> {
        match self {
            Cell::Null => None,
            Cell::Text(text) => Some(CellRef::Text(text)),
            Cell::Raw { r } => Some(CellRef::Raw(r)),
        }
    }
}

/// A flattened record: column name → cell. Sorted, so the inferred column
/// order is the same on every run.
pub type Row = BTreeMap<String, Cell>;

/// Objects nested deeper than this become JSON text at that level: a column
/// name never has more than `MAX_DEPTH` dotted parts. Keeps a pathological
/// record from producing thousands of columns.
pub const MAX_DEPTH: usize = 8;

/// Why a record could not be flattened or keyed. Each message names the
/// field or column, for an operator reading the job log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlattenError {
    #[error("record is {found}, not a JSON object")]
    NotAnObject { found: &'static str },
    #[error("record has no primary key field `{field}`")]
    MissingKey { field: String },
    #[error("primary key field `{field}` is {found}; a key must be a string, number or boolean")]
    BadKey { field: String, found: &'static str },
    #[error("two fields of the record flatten to the same column `{column}`")]
    ColumnCollision { column: String },
    #[error("a column name is longer than {limit} bytes (it starts {start:?}); the fleet allows {limit} (limits.max_column_name_bytes)")]
    ColumnNameTooLong { start: String, limit: usize },
}

/// Flatten one record into a row (see the module doc for the rules).
pub fn flatten_record(record: &Value) -> Result<Row, FlattenError> {
    flatten_record_within(record, usize::MAX)
}

/// [`flatten_record`], refusing a column name longer than
/// `max_column_bytes` as soon as its path grows past it: every leaf under
/// a long key repeats that key in its column name, so a record of long
/// nested keys would cost far more memory as a row than as a body.
pub fn flatten_record_within(record: &Value, max_column_bytes: usize) -> Result<Row, FlattenError> {
    let Value::Object(map) = record else {
        return Err(FlattenError::NotAnObject {
            found: kind(record),
        });
    };
    let mut row = Row::new();
    let mut path = String::new();
    flatten_into(map, &mut path, 1, max_column_bytes, &mut row)?;
    Ok(row)
}

/// `depth` is the number of dotted parts the columns written at this level
/// will have.
fn flatten_into(
    map: &Map<String, Value>,
    path: &mut String,
    depth: usize,
    max_column_bytes: usize,
    row: &mut Row,
) -> Result<(), FlattenError> {
    for (key, value) in map {
        let prefix_len = path.len();
        if depth > 1 {
            path.push('.');
        }
        path.push_str(key);
        if path.len() > max_column_bytes {
            return Err(FlattenError::ColumnNameTooLong {
                start: path.chars().take(40).collect(),
                limit: max_column_bytes,
            });
        }
        match value {
            // An empty object has no columns of its own; keep it as `{}` so
            // the CSV still shows that the field was present.
            Value::Object(inner) if !inner.is_empty() && depth < MAX_DEPTH => {
                flatten_into(inner, path, depth + 1, max_column_bytes, row)?;
            }
            other => put(row, path, cell_of(other))?,
        }
        path.truncate(prefix_len);
    }
    Ok(())
}

fn put(row: &mut Row, column: &str, cell: Cell) -> Result<(), FlattenError> {
    if row.contains_key(column) {
        return Err(FlattenError::ColumnCollision {
            column: column.to_owned(),
        });
    }
    row.insert(column.to_owned(), cell);
    Ok(())
}

fn cell_of(value: &Value) -> Cell {
    match value {
        Value::Null => Cell::Null,
        Value::String(s) => Cell::Text(s.clone()),
        // With serde_json's arbitrary_precision, a number's Display is its
        // exact source text, so 12.50 and 9007199254740993 survive.
        Value::Number(n) => Cell::Raw { r: n.to_string() },
        Value::Bool(b) => Cell::Raw { r: b.to_string() },
        // Value's Display is compact JSON.
        Value::Array(_) | Value::Object(_) => Cell::Raw {
            r: value.to_string(),
        },
    }
}

/// Find the value a dotted name points at, walking `a.b.c` through nested
/// objects.
///
/// A dotted name means the same thing here as a flattened column name: a
/// field whose own key contains a dot (`{"user.id": 7}`) is found too, so a
/// primary key can be written exactly as its column appears in the CSV.
pub fn key_value<'a>(record: &'a Value, dotted: &str) -> Option<&'a Value> {
    let map = record.as_object()?;
    if let Some(v) = map.get(dotted) {
        return Some(v);
    }
    // Try each split point: "a.b.c" → ("a", "b.c"), ("a.b", "c").
    for (i, _) in dotted.match_indices('.') {
        let (head, rest) = (&dotted[..i], &dotted[i + 1..]);
        if let Some(inner) = map.get(head) {
            if let Some(found) = key_value(inner, rest) {
                return Some(found);
            }
        }
    }
    None
}

/// Separates the parts of a compound key. Below every printable character,
/// so ("a", …) sorts before ("ab", …).
const KEY_SEPARATOR: char = '\u{1f}';
/// Escape lead for the few control characters a string key part cannot
/// carry as-is (see [`push_text_part`]).
const KEY_ESCAPE: char = '\u{1}';

/// The staging key of a record from its primary-key fields: a string whose byte order (COLLATE "C") is a
/// sensible record order: non-negative integers (any length) sort numerically (encode as 'n' + 2-digit decimal length + digits, after stripping leading zeros),
/// negative integers before them, other values as 's' + their text (strings as-is, others as compact JSON); parts of a
/// compound key joined with '\u{1f}'. Missing or null key field -> FlattenError::MissingKey { field }. Keys that are objects/arrays -> FlattenError::BadKey.
///
/// Details that keep the key unique as well as ordered:
/// - an integer of 99 digits or more writes its length as `99` followed by
///   the encoded length, so lengths of any size still sort numerically;
/// - a negative integer is `m` followed by the digit-wise complement (9 − d)
///   of its magnitude's encoding, so -10 < -2 < -1 < 0;
/// - in string parts, NUL (which Postgres text cannot hold), U+0001 and the
///   separator U+001F are written as U+0001 followed by `1`, `2` or `3`, so
///   two different compound keys never join to the same string.
pub fn row_key(record: &Value, primary_key: &[String]) -> Result<String, FlattenError> {
    let mut key = String::new();
    for (i, field) in primary_key.iter().enumerate() {
        if i > 0 {
            key.push(KEY_SEPARATOR);
        }
        match key_value(record, field) {
            None | Some(Value::Null) => {
                return Err(FlattenError::MissingKey {
                    field: field.clone(),
                })
            }
            Some(value @ (Value::Object(_) | Value::Array(_))) => {
                return Err(FlattenError::BadKey {
                    field: field.clone(),
                    found: kind(value),
                })
            }
            Some(Value::String(s)) => push_key_part(&mut key, KeyPart::Text(s)),
            Some(Value::Bool(b)) => push_key_part(&mut key, KeyPart::Bool(*b)),
            Some(Value::Number(n)) => push_key_part(&mut key, KeyPart::Number(&n.to_string())),
        }
    }
    Ok(key)
}

/// One scalar field of a key, as [`push_key_part`] writes it.
#[derive(Debug, Clone, Copy)]
enum KeyPart<'a> {
    Text(&'a str),
    Bool(bool),
    /// A number's exact text.
    Number(&'a str),
}

/// Appends one key field (see [`row_key`]).
fn push_key_part(key: &mut String, part: KeyPart) {
    match part {
        KeyPart::Text(text) => {
            key.push('s');
            push_text_part(key, text);
        }
        KeyPart::Bool(b) => {
            key.push('s');
            key.push_str(if b { "true" } else { "false" });
        }
        KeyPart::Number(text) => {
            if !push_integer_part(key, text) {
                key.push('s');
                push_text_part(key, text);
            }
        }
    }
}

/// Appends the integer part of a key if `text` is a plain decimal integer
/// (`-?[0-9]+`); returns false (appending nothing) otherwise.
fn push_integer_part(key: &mut String, text: &str) -> bool {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let trimmed = digits.trim_start_matches('0');
    let magnitude = if trimmed.is_empty() { "0" } else { trimmed };
    let mut encoded = String::with_capacity(magnitude.len() + 4);
    encode_magnitude(&mut encoded, magnitude);
    // -0 is 0.
    if negative && magnitude != "0" {
        key.push('m');
        // The encoding is prefix-free, so complementing every digit exactly
        // reverses its order: bigger magnitudes come first.
        key.extend(encoded.bytes().map(|b| char::from(b'9' - (b - b'0'))));
    } else {
        key.push('n');
        key.push_str(&encoded);
    }
    true
}

/// Length-prefixed digits: `2` → `012`, `10` → `0210`. Lengths that do not
/// fit two digits are written as `99` + the encoded length, which still
/// sorts after every two-digit length and numerically among themselves.
fn encode_magnitude(out: &mut String, digits: &str) {
    let len = digits.len();
    if len < 99 {
        out.push(char::from(b'0' + (len / 10) as u8));
        out.push(char::from(b'0' + (len % 10) as u8));
    } else {
        out.push_str("99");
        encode_magnitude(out, &len.to_string());
    }
    out.push_str(digits);
}

fn push_text_part(key: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\u{0}' => key.extend([KEY_ESCAPE, '1']),
            KEY_ESCAPE => key.extend([KEY_ESCAPE, '2']),
            KEY_SEPARATOR => key.extend([KEY_ESCAPE, '3']),
            c => key.push(c),
        }
    }
}

/// How a JSON value is described in an error message.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_nested_key_is_refused_before_its_leaves_repeat_it() {
        let long = "k".repeat(300);
        let record = serde_json::json!({ "id": 1, long.clone(): { "a": 1, "b": 2 } });
        assert!(flatten_record(&record).is_ok());
        match flatten_record_within(&record, 256) {
            Err(FlattenError::ColumnNameTooLong { start, limit }) => {
                assert_eq!(limit, 256);
                assert_eq!(start, "k".repeat(40));
            }
            other => panic!("{other:?}"),
        }
        let short = serde_json::json!({ "id": 1, "a": { "b": 2 } });
        assert_eq!(flatten_record_within(&short, 3).unwrap().len(), 2);
    }
    use serde_json::json;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn raw(s: &str) -> Cell {
        Cell::Raw { r: s.to_owned() }
    }

    fn text(s: &str) -> Cell {
        Cell::Text(s.to_owned())
    }

    fn pk(fields: &[&str]) -> Vec<String> {
        fields.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cell_serializes_as_null_string_or_raw_object() {
        assert_eq!(serde_json::to_string(&Cell::Null).unwrap(), "null");
        assert_eq!(serde_json::to_string(&text("5")).unwrap(), r#""5""#);
        assert_eq!(serde_json::to_string(&raw("5")).unwrap(), r#"{"r":"5"}"#);
    }

    #[test]
    fn cell_round_trips_through_serde_json() {
        let cells = vec![
            Cell::Null,
            text(""),
            text("null"),
            text("a,\"b\"\r\nc ✓ 🚀"),
            raw("12.50"),
            raw("9007199254740993"),
            raw("true"),
            raw(r#"[1,{"a":null}]"#),
            raw(""),
        ];
        for cell in &cells {
            let json = serde_json::to_string(cell).unwrap();
            let back: Cell = serde_json::from_str(&json).unwrap();
            assert_eq!(&back, cell, "via {json}");
        }
        // A whole row, as it is staged.
        let row: Row = cells
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("c{i}"), c.clone()))
            .collect();
        let json = serde_json::to_string(&row).unwrap();
        let back: Row = serde_json::from_str(&json).unwrap();
        assert_eq!(back, row);
    }

    #[test]
    fn scalars_map_to_their_cells() {
        let row = flatten_record(&parse(
            r#"{"s":"x\r\ny","e":"","n":null,"f":12.50,"big":9007199254740993,
                "neg":-5,"exp":1E+3,"t":true,"no":false,"u":"žluť 🚀"}"#,
        ))
        .unwrap();
        assert_eq!(row["s"], text("x\r\ny"));
        assert_eq!(row["e"], text(""));
        assert_eq!(row["n"], Cell::Null);
        assert_eq!(row["f"], raw("12.50"));
        assert_eq!(row["big"], raw("9007199254740993"));
        assert_eq!(row["neg"], raw("-5"));
        // serde_json keeps a number's digits but writes exponents as `e+N`.
        assert_eq!(row["exp"], raw("1e+3"));
        assert_eq!(row["t"], raw("true"));
        assert_eq!(row["no"], raw("false"));
        assert_eq!(row["u"], text("žluť 🚀"));
        assert_eq!(row.len(), 10);
    }

    #[test]
    fn nested_objects_become_dotted_columns() {
        let row = flatten_record(&json!({
            "id": 1,
            "user": {"name": "Ann", "address": {"city": "Brno", "zip": null}},
            "meta": {}
        }))
        .unwrap();
        let columns: Vec<&str> = row.keys().map(String::as_str).collect();
        assert_eq!(
            columns,
            [
                "id",
                "meta",
                "user.address.city",
                "user.address.zip",
                "user.name"
            ]
        );
        assert_eq!(row["user.address.city"], text("Brno"));
        assert_eq!(row["user.address.zip"], Cell::Null);
        assert_eq!(row["meta"], raw("{}"));
    }

    #[test]
    fn arrays_are_compact_json() {
        let row = flatten_record(&parse(
            r#"{"tags": [ "a", "b,c" ], "objs": [ {"x": 1.10} , null ], "empty": []}"#,
        ))
        .unwrap();
        assert_eq!(row["tags"], raw(r#"["a","b,c"]"#));
        assert_eq!(row["objs"], raw(r#"[{"x":1.10},null]"#));
        assert_eq!(row["empty"], raw("[]"));
    }

    #[test]
    fn objects_deeper_than_max_depth_are_json_text() {
        // Ten levels: a.b.c.d.e.f.g.h.i.j = 1
        let record = parse(r#"{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":{"j":1}}}}}}}}}}"#);
        let row = flatten_record(&record).unwrap();
        assert_eq!(row.len(), 1);
        assert_eq!(row["a.b.c.d.e.f.g.h"], raw(r#"{"i":{"j":1}}"#));
        assert_eq!("a.b.c.d.e.f.g.h".split('.').count(), MAX_DEPTH);

        // Exactly MAX_DEPTH parts still flattens to a scalar.
        let record = parse(r#"{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":2}}}}}}}}"#);
        let row = flatten_record(&record).unwrap();
        assert_eq!(row["a.b.c.d.e.f.g.h"], raw("2"));
    }

    #[test]
    fn colliding_paths_are_an_error() {
        let err = flatten_record(&json!({"a.b": 1, "a": {"b": 2}})).unwrap_err();
        assert_eq!(
            err,
            FlattenError::ColumnCollision {
                column: "a.b".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "two fields of the record flatten to the same column `a.b`"
        );
        // Deeper, and with the object side first in key order.
        let err = flatten_record(&json!({"x": {"y.z": 1, "y": {"z": 2}}})).unwrap_err();
        assert_eq!(
            err,
            FlattenError::ColumnCollision {
                column: "x.y.z".into()
            }
        );
        // A literal dotted key alone is fine.
        let row = flatten_record(&json!({"a.b": 1, "a": {"c": 2}})).unwrap();
        assert_eq!(row.len(), 2);
    }

    #[test]
    fn non_objects_are_rejected() {
        for (value, found) in [
            (json!([1]), "an array"),
            (json!("x"), "a string"),
            (json!(1), "a number"),
            (json!(null), "null"),
            (json!(true), "a boolean"),
        ] {
            let err = flatten_record(&value).unwrap_err();
            assert_eq!(err, FlattenError::NotAnObject { found });
            assert_eq!(
                err.to_string(),
                format!("record is {found}, not a JSON object")
            );
        }
        assert_eq!(flatten_record(&json!({})).unwrap(), Row::new());
    }

    #[test]
    fn key_value_walks_objects() {
        let record = json!({"a": {"b": {"c": 3}}, "x": 1, "user.id": 7, "arr": [1]});
        assert_eq!(key_value(&record, "a.b.c"), Some(&json!(3)));
        assert_eq!(key_value(&record, "a.b"), Some(&json!({"c": 3})));
        assert_eq!(key_value(&record, "x"), Some(&json!(1)));
        assert_eq!(key_value(&record, "user.id"), Some(&json!(7)));
        assert_eq!(key_value(&record, "a.b.c.d"), None);
        assert_eq!(key_value(&record, "x.y"), None);
        assert_eq!(key_value(&record, "arr.0"), None);
        assert_eq!(key_value(&record, "missing"), None);
        assert_eq!(key_value(&json!([1]), "0"), None);
        // Mixed: a literal dotted key inside a nested object.
        let record = json!({"a": {"b.c": 5}});
        assert_eq!(key_value(&record, "a.b.c"), Some(&json!(5)));
    }

    fn key_of(value: Value) -> String {
        row_key(&json!({ "id": value }), &pk(&["id"])).unwrap()
    }

    fn key_of_text(number: &str) -> String {
        row_key(&parse(&format!(r#"{{"id":{number}}}"#)), &pk(&["id"])).unwrap()
    }

    #[test]
    fn integer_keys_encode_length_then_digits() {
        assert_eq!(key_of(json!(2)), "n012");
        assert_eq!(key_of(json!(10)), "n0210");
        assert_eq!(key_of(json!(100)), "n03100");
        assert_eq!(key_of(json!(0)), "n010");
        assert_eq!(key_of_text("-0"), "n010");
        assert_eq!(key_of(json!(-1)), "m988");
        assert_eq!(key_of(json!("abc")), "sabc");
        assert_eq!(key_of(json!("42")), "s42");
        assert_eq!(key_of(json!(true)), "strue");
        assert_eq!(key_of_text("1.50"), "s1.50");
        assert_eq!(key_of_text("1e3"), "s1e+3");
        assert_eq!(
            key_of_text("123456789012345678901234567890"),
            "n30123456789012345678901234567890"
        );
    }

    #[test]
    fn leading_zeros_are_stripped() {
        let mut key = String::new();
        assert!(push_integer_part(&mut key, "007"));
        assert_eq!(key, "n017");
        key.clear();
        assert!(push_integer_part(&mut key, "-000"));
        assert_eq!(key, "n010");
        key.clear();
        assert!(!push_integer_part(&mut key, "-"));
        assert!(!push_integer_part(&mut key, ""));
        assert!(!push_integer_part(&mut key, "1.0"));
        assert_eq!(key, "");
    }

    #[test]
    fn key_byte_order_is_numeric_order() {
        let long = |digits: usize, first: char| {
            let mut s = String::from(first);
            s.push_str(&"0".repeat(digits - 1));
            s
        };
        // Ascending numeric order, including lengths past two digits.
        let numbers: Vec<String> = vec![
            format!("-{}", long(120, '9')),
            format!("-{}", long(120, '1')),
            format!("-{}", long(99, '1')),
            format!("-{}", long(98, '9')),
            "-100".into(),
            "-10".into(),
            "-9".into(),
            "-2".into(),
            "-1".into(),
            "0".into(),
            "1".into(),
            "2".into(),
            "9".into(),
            "10".into(),
            "11".into(),
            "99".into(),
            "100".into(),
            "9007199254740993".into(),
            "18446744073709551616".into(),
            long(98, '9'),
            long(99, '1'),
            long(99, '2'),
            long(100, '1'),
            long(1000, '1'),
        ];
        let keys: Vec<String> = numbers.iter().map(|n| key_of_text(n)).collect();
        for (i, pair) in keys.windows(2).enumerate() {
            assert!(
                pair[0].as_bytes() < pair[1].as_bytes(),
                "{} must sort before {}: {:?} vs {:?}",
                numbers[i],
                numbers[i + 1],
                pair[0],
                pair[1]
            );
        }
        // Integers come before other values.
        let last_int = keys.last().unwrap();
        assert!(last_int.as_str() < key_of(json!("0")).as_str());
        assert!(last_int.as_str() < key_of(json!(false)).as_str());
        assert!(last_int.as_str() < key_of_text("0.5").as_str());
    }

    #[test]
    fn compound_keys_join_parts_and_sort_part_by_part() {
        let key_pk = pk(&["org", "seq"]);
        let k =
            |org: Value, seq: Value| row_key(&json!({"org": org, "seq": seq}), &key_pk).unwrap();
        assert_eq!(k(json!("a"), json!(2)), "sa\u{1f}n012");
        let ordered = [
            k(json!("a"), json!(2)),
            k(json!("a"), json!(10)),
            k(json!("ab"), json!(1)),
            k(json!("b"), json!(-5)),
            k(json!("b"), json!(0)),
        ];
        for pair in ordered.windows(2) {
            assert!(pair[0] < pair[1], "{:?} < {:?}", pair[0], pair[1]);
        }
        // Nested fields by dotted name.
        let record = json!({"user": {"id": 3}, "n": "x"});
        assert_eq!(
            row_key(&record, &pk(&["user.id", "n"])).unwrap(),
            "n013\u{1f}sx"
        );
    }

    #[test]
    fn control_characters_cannot_forge_a_compound_key() {
        let key_pk = pk(&["a", "b"]);
        let one = row_key(&json!({"a": "x\u{1f}sy", "b": "z"}), &key_pk).unwrap();
        let two = row_key(&json!({"a": "x", "b": "y\u{1f}sz"}), &key_pk).unwrap();
        assert_ne!(one, two);
        let with_nul = key_of(json!("a\u{0}b"));
        assert!(!with_nul.contains('\u{0}'));
        assert_ne!(with_nul, key_of(json!("a\u{1}1b")));
        assert_eq!(key_of(json!("a\u{1}1b")), "sa\u{1}21b");
    }

    #[test]
    fn missing_and_bad_keys_are_errors() {
        let id = pk(&["id"]);
        let err = row_key(&json!({"name": "x"}), &id).unwrap_err();
        assert_eq!(err, FlattenError::MissingKey { field: "id".into() });
        assert_eq!(err.to_string(), "record has no primary key field `id`");
        assert_eq!(
            row_key(&json!({"id": null}), &id).unwrap_err(),
            FlattenError::MissingKey { field: "id".into() }
        );
        assert_eq!(
            row_key(&json!({"a": {"b": null}}), &pk(&["a.b"])).unwrap_err(),
            FlattenError::MissingKey {
                field: "a.b".into()
            }
        );
        let err = row_key(&json!({"id": {"x": 1}}), &id).unwrap_err();
        assert_eq!(
            err,
            FlattenError::BadKey {
                field: "id".into(),
                found: "an object"
            }
        );
        assert_eq!(
            err.to_string(),
            "primary key field `id` is an object; a key must be a string, number or boolean"
        );
        assert_eq!(
            row_key(&json!({"id": [1]}), &id).unwrap_err(),
            FlattenError::BadKey {
                field: "id".into(),
                found: "an array"
            }
        );
        // The second field of a compound key is checked too.
        assert_eq!(
            row_key(&json!({"id": 1}), &pk(&["id", "rev"])).unwrap_err(),
            FlattenError::MissingKey {
                field: "rev".into()
            }
        );
        assert_eq!(
            row_key(&json!([1]), &id).unwrap_err(),
            FlattenError::MissingKey { field: "id".into() }
        );
    }
}
