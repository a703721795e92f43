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
//! it says `None`: the caller takes the tree path, which has the answer,
//! errors included. The unit tests and the fuzz target `flatten` hold the
//! two paths to the same rows and keys.

use std::fmt;

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

/// A record as a staged row: its staging key and its cells, by column.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatRecord {
    key: String,
    /// Sorted by column, one cell a column: the order a [`Row`] has.
    cells: Vec<(String, Cell)>,
}

impl FlatRecord {
    /// The record as the tree path made it.
    pub fn from_row(key: String, row: Row) -> FlatRecord {
        FlatRecord {
            key,
            cells: row.into_iter().collect(),
        }
    }

    /// The record's staging key (see [`row_key`](super::row_key)).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The row's columns, sorted.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.cells.iter().map(|(column, _)| column.as_str())
    }

    /// The row as staging holds it: the same text a [`Row`] serializes to.
    pub fn staged_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(&StagedCells(&self.cells))
    }
}

/// Serializes sorted cells as a map, as a `Row` does.
struct StagedCells<'a>(&'a [(String, Cell)]);

impl serde::Serialize for StagedCells<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(column, cell)| (column, cell)))
    }
}

/// The record in `text` flattened and keyed by `primary_key`, every column
/// name at most `max_column_bytes` long; `None` when the tree path must
/// decide (see the module doc).
pub fn flatten_text(
    text: &str,
    primary_key: &[String],
    max_column_bytes: usize,
) -> Option<FlatRecord> {
    let mut walk = Walk {
        path: String::new(),
        max_column_bytes,
        cells: Vec::new(),
        objects: Vec::new(),
    };
    let mut reader = serde_json::Deserializer::from_str(text);
    (&mut reader)
        .deserialize_any(RecordVisitor(&mut walk))
        .ok()?;
    reader.end().ok()?;
    let Walk {
        mut cells,
        mut objects,
        ..
    } = walk;
    cells.sort_by(|a, b| a.0.cmp(&b.0));
    objects.sort();
    if !all_apart(&cells, &objects) {
        return None;
    }
    let key = key_of(&cells, primary_key)?;
    Some(FlatRecord { key, cells })
}

/// True when no two cells share a column and no nested object's path is
/// also a column: then every field stands where the tree path puts it.
/// (A key repeated in one object shows here too: the repeat's path is
/// seen twice.)
fn all_apart(cells: &[(String, Cell)], objects: &[String]) -> bool {
    let cells_apart = cells.windows(2).all(|pair| pair[0].0 != pair[1].0);
    let objects_apart = objects.windows(2).all(|pair| pair[0] != pair[1]);
    let crossed = objects.iter().any(|path| column_at(cells, path).is_some());
    cells_apart && objects_apart && !crossed
}

fn column_at<'c>(cells: &'c [(String, Cell)], column: &str) -> Option<&'c Cell> {
    let at = cells
        .binary_search_by(|(name, _)| name.as_str().cmp(column))
        .ok()?;
    cells.get(at).map(|(_, cell)| cell)
}

/// The staging key from the key fields' cells. A field is taken from its
/// column only when that column is the one place the tree path could find
/// it: a scalar, at most [`MAX_DEPTH`] parts deep (deeper, an ancestor is
/// kept whole and the column is not there).
fn key_of(cells: &[(String, Cell)], primary_key: &[String]) -> Option<String> {
    let mut key = String::new();
    for (i, field) in primary_key.iter().enumerate() {
        if field.split('.').count() > MAX_DEPTH {
            return None;
        }
        if i > 0 {
            key.push(KEY_SEPARATOR);
        }
        let part = match column_at(cells, field)? {
            Cell::Text(text) => KeyPart::Text(text),
            Cell::Raw { r } if r == "true" => KeyPart::Bool(true),
            Cell::Raw { r } if r == "false" => KeyPart::Bool(false),
            // Arrays and objects: the tree path names the error.
            Cell::Raw { r } if r.starts_with(['[', '{']) => return None,
            Cell::Raw { r } => KeyPart::Number(r),
            Cell::Null => return None,
        };
        push_key_part(&mut key, part);
    }
    Some(key)
}

/// What the pass has found so far.
struct Walk {
    /// The column name of the field being read.
    path: String,
    max_column_bytes: usize,
    cells: Vec<(String, Cell)>,
    /// The paths of the nested objects that became columns of their own.
    objects: Vec<String>,
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

impl Walk {
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
            let prefix = self.path.len();
            if depth > 1 {
                self.path.push('.');
            }
            self.path.push_str(&name);
            if self.path.len() > self.max_column_bytes {
                return Err(de::Error::custom(Unsure));
            }
            map.next_value_seed(FieldSeed { walk: self, depth })?;
            self.path.truncate(prefix);
            key = map.next_key()?;
        }
        Ok(())
    }

    fn put(&mut self, cell: Cell) {
        self.cells.push((self.path.clone(), cell));
    }
}

/// The record itself: an object, or the tree path decides.
struct RecordVisitor<'w>(&'w mut Walk);

impl<'de> Visitor<'de> for RecordVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a record object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        match map.next_key::<Text<'de>>()? {
            None => Ok(()),
            // A number, not an object.
            Some(Text(first)) if first.starts_with("$serde_json::private::") => {
                Err(de::Error::custom(Unsure))
            }
            Some(first) => self.0.fields(first, 1, &mut map),
        }
    }
}

/// One field's value, at the column `walk.path` of `depth` parts.
struct FieldSeed<'w> {
    walk: &'w mut Walk,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.depth >= MAX_DEPTH {
            // Kept whole whatever it is: the tree path's own rule, on a tree.
            let value = Value::deserialize(deserializer)?;
            self.walk.put(cell_of(&value));
            return Ok(());
        }
        deserializer.deserialize_any(FieldVisitor(self))
    }
}

struct FieldVisitor<'w>(FieldSeed<'w>);

impl<'de> Visitor<'de> for FieldVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.walk.put(Cell::Null);
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<(), E> {
        self.0.walk.put(Cell::Raw { r: b.to_string() });
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<(), E> {
        self.0.walk.put(Cell::Raw { r: n.to_string() });
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<(), E> {
        self.0.walk.put(Cell::Raw { r: n.to_string() });
        Ok(())
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<(), E> {
        self.0.walk.put(Cell::Text(text.to_owned()));
        Ok(())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        self.0.walk.put(Cell::Text(text.to_owned()));
        Ok(())
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<(), E> {
        self.0.walk.put(Cell::Text(text));
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        // An array is one cell of compact JSON, as the tree path writes it.
        let array = Value::deserialize(SeqAccessDeserializer::new(seq))?;
        self.0.walk.put(cell_of(&array));
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let FieldSeed { walk, depth } = self.0;
        match map.next_key::<Text<'de>>()? {
            // An empty object has no columns: it is the text `{}`.
            None => walk.put(Cell::Raw { r: "{}".into() }),
            Some(Text(first)) if first == NUMBER_TOKEN => {
                let text: String = map.next_value()?;
                let number: serde_json::Number = text.parse().map_err(de::Error::custom)?;
                walk.put(Cell::Raw {
                    r: number.to_string(),
                });
            }
            Some(Text(first)) if first.starts_with("$serde_json::private::") => {
                return Err(de::Error::custom(Unsure));
            }
            Some(first) => {
                walk.objects.push(walk.path.clone());
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

    /// The tree path's answer for `text`, as a `FlatRecord`.
    fn by_tree(text: &str, primary_key: &[String], max: usize) -> Option<FlatRecord> {
        let record: Value = serde_json::from_str(text).ok()?;
        let key = row_key(&record, primary_key).ok()?;
        let row = flatten_record_within(&record, max).ok()?;
        Some(FlatRecord::from_row(key, row))
    }

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// The pass agrees with the tree path or leaves the record to it.
    fn agrees(text: &str, primary_key: &[&str]) -> Option<FlatRecord> {
        let primary_key = keys(primary_key);
        let fast = flatten_text(text, &primary_key, 256);
        if let Some(fast) = &fast {
            assert_eq!(
                Some(fast),
                by_tree(text, &primary_key, 256).as_ref(),
                "{text}"
            );
            let row = flatten_record_within(&serde_json::from_str(text).unwrap(), 256).unwrap();
            assert_eq!(
                fast.staged_json().unwrap(),
                serde_json::to_string(&row).unwrap()
            );
        }
        fast
    }

    #[test]
    fn a_plain_record_takes_the_pass_and_keeps_its_exact_text() {
        let text = r#"{"id": 7, "name": "a \"q\" \u00e9", "amount": 12.50, "big": 9007199254740993,
            "neg": -3, "exp": 1E3, "ok": true, "none": null, "tags": ["x", {"b": 1, "a": 2}],
            "meta": {"score": {"unit": "pts", "value": -1}, "region": "eu"}, "empty": {}}"#;
        let flat = agrees(text, &["id"]).expect("a plain record needs no tree");
        let cell = |c: &str| column_at(&flat.cells, c).cloned();
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
    fn anything_unusual_is_left_to_the_tree() {
        let unsure = [
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
        for (text, why) in unsure {
            assert_eq!(
                flatten_text(text, &keys(&["id"]), 256),
                None,
                "{why}: {text}"
            );
        }
        let long = format!(r#"{{"id": 1, "{}": 1}}"#, "k".repeat(300));
        assert_eq!(
            flatten_text(&long, &keys(&["id"]), 256),
            None,
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
        assert_eq!(flatten_text(&nested, &[deep_key], 256), None);
    }

    #[test]
    fn numbers_reach_the_pass_under_serde_jsons_token() {
        // Were the token renamed, a decimal would turn into a nested object
        // here instead of one cell.
        let flat = flatten_text(r#"{"id": 1, "n": 0.5}"#, &keys(&["id"]), 256).unwrap();
        assert_eq!(flat.columns().collect::<Vec<_>>(), ["id", "n"]);
    }
}
