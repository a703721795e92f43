//! A record flattened and keyed straight from its JSON text, in one pass
//! and without building it as a tree: how a page's records usually become
//! rows.
//!
//! The tree path ([`row_key`](super::row_key) and
//! [`flatten_record_within`](super::flatten_record_within) over a parsed
//! `Value`) is what a record *means*; this pass is only a faster way to the
//! same answer, so it answers only when it is sure. Anything unusual — a
//! key repeated in one object, two fields meeting in one column, a name
//! over the limit, a key field that is missing, null, nested deeper than
//! a column can be or not a scalar, a record that is not an object — and
//! it says no: the caller takes the tree path, which has the answer,
//! errors included, and loads it here ([`FlatRecord::load_row`]). The unit
//! tests and the fuzz target `flatten` hold the two paths to the same rows
//! and keys.
//!
//! A [`FlatRecord`] is reused from one record to the next: its column
//! names and cell texts share one buffer, so once the first record has
//! sized it a page's records allocate next to nothing each.

use std::fmt::{self, Display, Write as _};
use std::ops::Range;

use serde::de::value::SeqAccessDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize as _;
use serde_json::Value;

use super::cell_wire::Text;
use super::{cell_of, push_key_part, Cell, KeyPart, Row, KEY_SEPARATOR, MAX_DEPTH};

/// The key under which serde_json hands a visitor a number it keeps as
/// exact text (the workspace enables `arbitrary_precision`): a number
/// arrives as a one-entry map. A unit test fails if serde_json renames it.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// How serde_json's own tokens start (a number's, a raw value's): an
/// object whose first key is one of the others is left to the tree path.
const SERDE_JSON_TOKENS: &str = "$serde_json::private::";

/// One record as a staged row — its staging key, its columns and its
/// row's JSON text — in buffers kept from one record to the next.
#[derive(Debug, Default)]
pub struct FlatRecord {
    key: String,
    /// Every column name and cell text of the record, one after another.
    text: String,
    /// Sorted by column once the record is read: the order a [`Row`] has.
    cells: Vec<Span>,
    /// Where the names of the nested objects that became columns of their
    /// own are in `text`.
    objects: Vec<Range<usize>>,
    /// The column name of the field being read.
    path: String,
    staged: Vec<u8>,
}

/// A cell: its column and its text, in [`FlatRecord::text`].
#[derive(Debug, Clone)]
struct Span {
    column: Range<usize>,
    kind: Kind,
    value: Range<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Null,
    Text,
    Raw,
}

/// A cell borrowed from a [`FlatRecord`]; serializes as [`Cell`] does.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(untagged)]
enum CellText<'a> {
    Null,
    Text(&'a str),
    Raw { r: &'a str },
}

impl FlatRecord {
    /// Reads the record in `text`, flattened and keyed by `primary_key`,
    /// every column name at most `max_column_bytes` long. False when the
    /// tree path must decide (see the module doc); what is held then is
    /// not to be read.
    pub fn flatten_text(
        &mut self,
        text: &str,
        primary_key: &[String],
        max_column_bytes: usize,
    ) -> bool {
        self.clear();
        let mut reader = serde_json::Deserializer::from_str(text);
        let walk = Walk {
            record: self,
            max_column_bytes,
        };
        if (&mut reader).deserialize_any(RecordVisitor(walk)).is_err() || reader.end().is_err() {
            return false;
        }
        self.sort();
        self.all_apart() && self.key_from_cells(primary_key) && self.write_staged().is_ok()
    }

    /// Holds the record as the tree path made it.
    pub fn load_row(&mut self, key: &str, row: &Row) -> Result<(), serde_json::Error> {
        self.clear();
        self.key.push_str(key);
        for (column, cell) in row {
            self.path.push_str(column);
            match cell {
                Cell::Null => self.put(Kind::Null, ""),
                Cell::Text(text) => self.put(Kind::Text, text),
                Cell::Raw { r } => self.put(Kind::Raw, r),
            }
            self.path.clear();
        }
        self.write_staged()
    }

    /// The record's staging key (see [`row_key`](super::row_key)).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The row's columns, sorted.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.cells.iter().map(|span| self.name(&span.column))
    }

    /// The row as staging holds it: the text a [`Row`] serializes to.
    pub fn staged_json(&self) -> &str {
        // Written by serde_json from `&str`s: always UTF-8.
        std::str::from_utf8(&self.staged).unwrap_or_default()
    }

    fn clear(&mut self) {
        self.key.clear();
        self.text.clear();
        self.cells.clear();
        self.objects.clear();
        self.path.clear();
        self.staged.clear();
    }

    fn name(&self, range: &Range<usize>) -> &str {
        self.text.get(range.clone()).unwrap_or_default()
    }

    /// A cell at the column being read.
    fn put(&mut self, kind: Kind, value: &str) {
        self.put_with(kind, |text| text.push_str(value));
    }

    /// A cell at the column being read, its text written by `write`.
    fn put_with(&mut self, kind: Kind, write: impl FnOnce(&mut String)) {
        let start = self.text.len();
        self.text.push_str(&self.path);
        let column = start..self.text.len();
        write(&mut self.text);
        let value = column.end..self.text.len();
        self.cells.push(Span {
            column,
            kind,
            value,
        });
    }

    /// The column being read is a nested object with columns of its own.
    fn enter_object(&mut self) {
        let start = self.text.len();
        self.text.push_str(&self.path);
        self.objects.push(start..self.text.len());
    }

    fn sort(&mut self) {
        let text = &self.text;
        let name = |range: &Range<usize>| text.get(range.clone()).unwrap_or_default();
        (self.cells).sort_unstable_by(|a, b| name(&a.column).cmp(name(&b.column)));
        (self.objects).sort_unstable_by(|a, b| name(a).cmp(name(b)));
    }

    fn cell(&self, span: &Span) -> CellText<'_> {
        let value = self.name(&span.value);
        match span.kind {
            Kind::Null => CellText::Null,
            Kind::Text => CellText::Text(value),
            Kind::Raw => CellText::Raw { r: value },
        }
    }

    fn write_staged(&mut self) -> Result<(), serde_json::Error> {
        let mut staged = std::mem::take(&mut self.staged);
        staged.clear();
        let written = serde_json::to_writer(&mut staged, &StagedCells(self));
        self.staged = staged;
        written
    }

    /// True when no two cells share a column and no nested object's path
    /// is also a column: then every field stands where the tree path puts
    /// it. (A key repeated in one object shows here too: the repeat's
    /// path is seen twice.)
    fn all_apart(&self) -> bool {
        let cells_apart = (self.cells.windows(2))
            .all(|pair| self.name(&pair[0].column) != self.name(&pair[1].column));
        let objects_apart =
            (self.objects.windows(2)).all(|pair| self.name(&pair[0]) != self.name(&pair[1]));
        let crossed = (self.objects.iter()).any(|path| self.column_at(self.name(path)).is_some());
        cells_apart && objects_apart && !crossed
    }

    fn column_at(&self, column: &str) -> Option<&Span> {
        let at = (self.cells)
            .binary_search_by(|span| self.name(&span.column).cmp(column))
            .ok()?;
        self.cells.get(at)
    }

    /// The staging key from the key fields' cells; false when the tree
    /// path must find it.
    fn key_from_cells(&mut self, primary_key: &[String]) -> bool {
        let mut key = std::mem::take(&mut self.key);
        key.clear();
        let found = self.push_key(&mut key, primary_key).is_some();
        self.key = key;
        found
    }

    /// A field is taken from its column only when that column is the one
    /// place the tree path could find it: a scalar, at most [`MAX_DEPTH`]
    /// parts deep (deeper, an ancestor is kept whole and the column is not
    /// there).
    fn push_key(&self, key: &mut String, primary_key: &[String]) -> Option<()> {
        for (i, field) in primary_key.iter().enumerate() {
            if field.split('.').count() > MAX_DEPTH {
                return None;
            }
            if i > 0 {
                key.push(KEY_SEPARATOR);
            }
            let part = match self.cell(self.column_at(field)?) {
                CellText::Text(text) => KeyPart::Text(text),
                CellText::Raw { r: "true" } => KeyPart::Bool(true),
                CellText::Raw { r: "false" } => KeyPart::Bool(false),
                // Arrays and objects: the tree path names the error.
                CellText::Raw { r } if r.starts_with(['[', '{']) => return None,
                CellText::Raw { r } => KeyPart::Number(r),
                CellText::Null => return None,
            };
            push_key_part(key, part);
        }
        Some(())
    }
}

/// Serializes the sorted cells as a map, as a `Row` does.
struct StagedCells<'a>(&'a FlatRecord);

impl serde::Serialize for StagedCells<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let record = self.0;
        let cells =
            (record.cells.iter()).map(|span| (record.name(&span.column), record.cell(span)));
        serializer.collect_map(cells)
    }
}

/// The pass over one record, writing into its [`FlatRecord`].
struct Walk<'r> {
    record: &'r mut FlatRecord,
    max_column_bytes: usize,
}

/// Why the pass stopped: the tree path decides. Never shown; the tree
/// path's error is the one a user sees.
#[derive(Debug)]
struct Unsure;

impl fmt::Display for Unsure {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("left to the tree path")
    }
}

impl Walk<'_> {
    /// Reads the fields of an object whose columns have `depth` parts; the
    /// object's first key was read already.
    fn fields<'de, A: MapAccess<'de>>(
        &mut self,
        first: Text<'de>,
        depth: usize,
        map: &mut A,
    ) -> Result<(), A::Error> {
        let mut key = Some(first);
        while let Some(Text(name)) = key {
            let path = &mut self.record.path;
            let prefix = path.len();
            if depth > 1 {
                path.push('.');
            }
            path.push_str(&name);
            if path.len() > self.max_column_bytes {
                return Err(de::Error::custom(Unsure));
            }
            map.next_value_seed(FieldSeed { walk: self, depth })?;
            self.record.path.truncate(prefix);
            key = map.next_key()?;
        }
        Ok(())
    }

    fn put_shown(&mut self, kind: Kind, value: impl Display) {
        // Writing to a String does not fail.
        self.record.put_with(kind, |text| {
            let _ = write!(text, "{value}");
        });
    }

    fn put_tree(&mut self, value: &Value) {
        match cell_of(value) {
            Cell::Null => self.record.put(Kind::Null, ""),
            Cell::Text(text) => self.record.put(Kind::Text, &text),
            Cell::Raw { r } => self.record.put(Kind::Raw, &r),
        }
    }
}

/// The record itself: an object, or the tree path decides.
struct RecordVisitor<'r>(Walk<'r>);

impl<'de> Visitor<'de> for RecordVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a record object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        match map.next_key::<Text<'de>>()? {
            None => Ok(()),
            // A number, not an object.
            Some(Text(first)) if first.starts_with(SERDE_JSON_TOKENS) => {
                Err(de::Error::custom(Unsure))
            }
            Some(first) => self.0.fields(first, 1, &mut map),
        }
    }
}

/// One field's value, at the column `walk.record.path` of `depth` parts.
struct FieldSeed<'w, 'r> {
    walk: &'w mut Walk<'r>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.depth >= MAX_DEPTH {
            // Kept whole whatever it is: the tree path's own rule, on a tree.
            let value = Value::deserialize(deserializer)?;
            self.walk.put_tree(&value);
            return Ok(());
        }
        deserializer.deserialize_any(FieldVisitor(self))
    }
}

struct FieldVisitor<'w, 'r>(FieldSeed<'w, 'r>);

impl<'de> Visitor<'de> for FieldVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.walk.record.put(Kind::Null, "");
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<(), E> {
        self.0.walk.put_shown(Kind::Raw, b);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<(), E> {
        self.0.walk.put_shown(Kind::Raw, n);
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<(), E> {
        self.0.walk.put_shown(Kind::Raw, n);
        Ok(())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        self.0.walk.record.put(Kind::Text, text);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        // An array is one cell of compact JSON, as the tree path writes it.
        let array = Value::deserialize(SeqAccessDeserializer::new(seq))?;
        self.0.walk.put_tree(&array);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let FieldSeed { walk, depth } = self.0;
        match map.next_key::<Text<'de>>()? {
            // An empty object has no columns: it is the text `{}`.
            None => walk.record.put(Kind::Raw, "{}"),
            Some(Text(first)) if first == NUMBER_TOKEN => {
                let text: Text<'de> = map.next_value()?;
                let number: serde_json::Number = text.0.parse().map_err(de::Error::custom)?;
                walk.put_shown(Kind::Raw, number);
            }
            Some(Text(first)) if first.starts_with(SERDE_JSON_TOKENS) => {
                return Err(de::Error::custom(Unsure));
            }
            Some(first) => {
                walk.record.enter_object();
                walk.fields(first, depth + 1, &mut map)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{flatten_record_within, row_key};
    use super::*;

    /// (key, staged JSON) by the one pass, when it is sure.
    fn by_pass(
        record: &mut FlatRecord,
        text: &str,
        primary_key: &[String],
    ) -> Option<(String, String)> {
        let sure = record.flatten_text(text, primary_key, 256);
        sure.then(|| (record.key().to_owned(), record.staged_json().to_owned()))
    }

    /// (key, staged JSON) by the tree path.
    fn by_tree(text: &str, primary_key: &[String]) -> Option<(String, String)> {
        let record: Value = serde_json::from_str(text).ok()?;
        let key = row_key(&record, primary_key).ok()?;
        let row = flatten_record_within(&record, 256).ok()?;
        Some((key, serde_json::to_string(&row).ok()?))
    }

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// The pass agrees with the tree path or leaves the record to it; the
    /// row it staged, when it was sure.
    fn agrees(text: &str, primary_key: &[&str]) -> Option<Row> {
        let primary_key = keys(primary_key);
        let fast = by_pass(&mut FlatRecord::default(), text, &primary_key)?;
        assert_eq!(Some(&fast), by_tree(text, &primary_key).as_ref(), "{text}");
        Some(serde_json::from_str(&fast.1).unwrap())
    }

    fn unsure(text: &str) -> bool {
        by_pass(&mut FlatRecord::default(), text, &keys(&["id"])).is_none()
    }

    #[test]
    fn a_plain_record_takes_the_pass_and_keeps_its_exact_text() {
        let text = r#"{"id": 7, "name": "a \"q\" \u00e9", "amount": 12.50, "big": 9007199254740993,
            "neg": -3, "exp": 1E3, "ok": true, "none": null, "tags": ["x", {"b": 1, "a": 2}],
            "meta": {"score": {"unit": "pts", "value": -1}, "region": "eu"}, "empty": {}}"#;
        let row = agrees(text, &["id"]).expect("a plain record needs no tree");
        let cell = |c: &str| row.get(c).cloned();
        assert_eq!(cell("name"), Some(Cell::Text("a \"q\" é".into())));
        assert_eq!(cell("amount"), Some(Cell::Raw { r: "12.50".into() }));
        assert_eq!(cell("exp"), Some(Cell::Raw { r: "1e+3".into() }));
        assert_eq!(
            cell("big"),
            Some(Cell::Raw {
                r: "9007199254740993".into()
            })
        );
        assert_eq!(
            cell("tags"),
            Some(Cell::Raw {
                r: r#"["x",{"a":2,"b":1}]"#.into()
            })
        );
        assert_eq!(cell("meta.score.unit"), Some(Cell::Text("pts".into())));
        assert_eq!(cell("empty"), Some(Cell::Raw { r: "{}".into() }));
        assert_eq!(cell("none"), Some(Cell::Null));
    }

    #[test]
    fn keys_of_every_scalar_kind_match_the_tree() {
        for id in [
            r#""x\u0000y""#,
            "true",
            "-12",
            "0",
            "-0",
            "2E5",
            "1.5",
            "123456789012345678901234567890",
        ] {
            agrees(&format!(r#"{{"id": {id}, "v": 1}}"#), &["id"]).expect(id);
        }
        agrees(r#"{"a": {"b": 5}, "c": "x"}"#, &["a.b", "c"]).expect("a nested, compound key");
        agrees(r#"{"a.b": 5}"#, &["a.b"]).expect("a dotted key");
    }

    #[test]
    fn one_record_holder_serves_a_page_of_records() {
        let primary_key = keys(&["id"]);
        let texts = [
            r#"{"id": 1, "a": {"b": "long text here"}, "t": [1, 2]}"#,
            r#"{"id": 1, "id": 2}"#,
            r#"{"id": 2}"#,
            r#"{"id": "x", "z": null}"#,
        ];
        let mut record = FlatRecord::default();
        for text in texts.iter().chain(texts.iter().rev()) {
            let fast = by_pass(&mut record, text, &primary_key);
            let alone = by_pass(&mut FlatRecord::default(), text, &primary_key);
            assert_eq!(
                fast, alone,
                "what the record before left behind shows in {text}"
            );
        }
    }

    #[test]
    fn a_row_loaded_from_the_tree_reads_as_the_tree_wrote_it() {
        let text = r#"{"id": 1, "a.b": 1, "a": {"c": [2]}, "n": null}"#;
        let record: Value = serde_json::from_str(text).unwrap();
        let row = flatten_record_within(&record, 256).unwrap();
        let mut flat = FlatRecord::default();
        flat.load_row("k", &row).unwrap();
        assert_eq!(flat.key(), "k");
        assert_eq!(flat.staged_json(), serde_json::to_string(&row).unwrap());
        assert_eq!(
            flat.columns().collect::<Vec<_>>(),
            ["a.b", "a.c", "id", "n"]
        );
    }

    #[test]
    fn anything_unusual_is_left_to_the_tree() {
        let cases = [
            (r#"{"id": 1, "id": 2}"#, "a repeated key"),
            (
                r#"{"id": 1, "a": {"x": 1}, "a": {"y": 2}}"#,
                "a repeated object",
            ),
            (
                r#"{"id": 1, "a": {"x": 1}, "a": 2}"#,
                "an object repeated as a scalar",
            ),
            (
                r#"{"id": 1, "a.b": 1, "a": {"b": 2}}"#,
                "two fields in one column",
            ),
            (r#"{"id": {"x": 1}}"#, "an object key"),
            (r#"{"id": [1]}"#, "an array key"),
            (r#"{"id": {}}"#, "an empty object key"),
            (r#"{"id": null}"#, "a null key"),
            (r#"{"v": 1}"#, "a missing key"),
            (
                r#"{"id.x": 1, "id": {"y": 2}, "id": 3}"#,
                "a key beside an object of its name",
            ),
            ("[1]", "not an object"),
            ("12.5", "a number"),
            (
                r#"{"$serde_json::private::Number": "1"}"#,
                "serde_json's own token",
            ),
            (r#"{"id": 1} x"#, "trailing text"),
        ];
        for (text, why) in cases {
            assert!(unsure(text), "{why}: {text}");
        }
        assert!(
            unsure(&format!(r#"{{"id": 1, "{}": 1}}"#, "k".repeat(300))),
            "a long name"
        );
    }

    #[test]
    fn objects_past_the_depth_limit_are_kept_whole_as_the_tree_keeps_them() {
        let mut text = r#"{"z": 1, "b": 2}"#.to_string();
        for level in 0..MAX_DEPTH + 2 {
            text = format!(r#"{{"k{level}": {text}, "s{level}": "v"}}"#);
        }
        let text = format!(r#"{{"id": 1, "deep": {text}}}"#);
        agrees(&text, &["id"]).expect("depth alone needs no tree");
        let deep_key = ["a"; MAX_DEPTH + 1].join(".");
        let nested =
            (0..MAX_DEPTH + 1).fold("1".to_string(), |inner, _| format!(r#"{{"a": {inner}}}"#));
        let mut record = FlatRecord::default();
        assert!(!record.flatten_text(&nested, &[deep_key], 256));
    }

    #[test]
    fn numbers_reach_the_pass_under_serde_jsons_token() {
        // Were the token renamed, a decimal would turn into a nested object
        // here instead of one cell.
        let mut record = FlatRecord::default();
        assert!(record.flatten_text(r#"{"id": 1, "n": 0.5}"#, &keys(&["id"]), 256));
        assert_eq!(record.columns().collect::<Vec<_>>(), ["id", "n"]);
    }
}
