//! A staged row read back for the CSV writer: its cells borrowed from the
//! row's JSON text, found by column without building a [`Row`](super::Row).
//!
//! The finalizer reads every row of an export back; as a `Row` that cost a
//! tree and two copies a cell. Here a row is one vector of (column, cell),
//! sorted by column as a `Row` writes it, and a cell is looked up by binary
//! search, so any column order the spec names works.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};

use super::cell_wire::{StagedCell, Text};
use super::CellRef;

/// One staged row, borrowing from its JSON text.
#[derive(Debug)]
pub struct StagedRow<'a> {
    /// Sorted by column, one cell a column.
    cells: Vec<(Cow<'a, str>, StagedCell<'a>)>,
}

impl<'a> StagedRow<'a> {
    /// Reads a row as staging holds it: a JSON object of cells. A column
    /// listed twice keeps its last cell, as reading it into a `Row` would.
    pub fn parse(data: &'a str) -> Result<StagedRow<'a>, serde_json::Error> {
        let mut reader = serde_json::Deserializer::from_str(data);
        let mut cells = reader.deserialize_map(RowVisitor)?;
        reader.end()?;
        if !cells.windows(2).all(|pair| pair[0].0 < pair[1].0) {
            sort_keeping_last(&mut cells);
        }
        Ok(StagedRow { cells })
    }

    /// The cell of `column` as the CSV shows it; `None` for null or missing.
    pub fn cell(&self, column: &str) -> Option<CellRef<'_>> {
        let at = (self.cells)
            .binary_search_by(|(name, _)| name.as_ref().cmp(column))
            .ok()?;
        self.cells.get(at).and_then(|(_, cell)| cell.shown())
    }
}

/// Sorts by column; of one column's cells, the last listed stays.
fn sort_keeping_last(cells: &mut Vec<(Cow<'_, str>, StagedCell<'_>)>) {
    // Stable: one column's cells keep their order, the last one last.
    cells.sort_by(|a, b| a.0.cmp(&b.0));
    cells.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            std::mem::swap(later, kept);
        }
        same
    });
}

struct RowVisitor;

impl<'de> Visitor<'de> for RowVisitor {
    type Value = Vec<(Cow<'de, str>, StagedCell<'de>)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a staged row: an object of cells")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut cells = Vec::with_capacity(map.size_hint().unwrap_or(16));
        while let Some(column) = map.next_key::<Text<'de>>()? {
            let cell = map.next_value::<StagedCell<'de>>()?;
            cells.push((column.0, cell));
        }
        Ok(cells)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flatten::{flatten_record, Cell, Row};

    /// Every column's cell as a `Row` read back would show it.
    fn shown_by_row<'r>(row: &'r Row, columns: &[&str]) -> Vec<Option<CellRef<'r>>> {
        columns
            .iter()
            .map(|c| row.get(*c).and_then(Cell::shown))
            .collect()
    }

    #[test]
    fn a_staged_row_shows_what_the_row_it_was_written_from_shows() {
        let record = serde_json::json!({
            "id": 7, "name": "two\nlines \"q\" ü", "plain": "x", "none": null,
            "empty": "", "amount": 12.5, "on": true, "tags": ["a", "b"],
            "meta": {"region": "eu", "score": {"value": -3}}, "attrs": {}
        });
        let row = flatten_record(&record).unwrap();
        let json = serde_json::to_string(&row).unwrap();
        let staged = StagedRow::parse(&json).unwrap();
        let mut columns: Vec<&str> = row.keys().map(String::as_str).collect();
        columns.extend(["absent", "a", "zzz"]);
        columns.reverse();
        let by_staged: Vec<_> = columns.iter().map(|c| staged.cell(c)).collect();
        assert_eq!(by_staged, shown_by_row(&row, &columns));
        assert_eq!(
            staged.cell("name"),
            Some(CellRef::Text("two\nlines \"q\" ü"))
        );
        assert_eq!(staged.cell("amount"), Some(CellRef::Raw("12.5")));
        assert_eq!(staged.cell("none"), None);
        assert_eq!(staged.cell("empty"), Some(CellRef::Text("")));
    }

    #[test]
    fn text_without_escapes_is_borrowed() {
        let staged = StagedRow::parse(r#"{"a":"plain","b":{"r":"5"},"c":"esc\"aped"}"#).unwrap();
        let borrowed: Vec<bool> = (staged.cells.iter())
            .map(|(name, cell)| {
                let text = match cell {
                    StagedCell::Text(t) | StagedCell::Raw(t) => t,
                    StagedCell::Null => return false,
                };
                matches!(name, Cow::Borrowed(_)) && matches!(text, Cow::Borrowed(_))
            })
            .collect();
        assert_eq!(borrowed, [true, true, false]);
    }

    #[test]
    fn unsorted_and_repeated_columns_read_as_a_row_would() {
        let json = r#"{"b":"1","a":"x","b":"2","c":null}"#;
        let staged = StagedRow::parse(json).unwrap();
        let row: Row = serde_json::from_str(json).unwrap();
        let columns = ["a", "b", "c", "d"];
        let by_staged: Vec<_> = columns.iter().map(|c| staged.cell(c)).collect();
        assert_eq!(by_staged, shown_by_row(&row, &columns));
        assert_eq!(staged.cell("b"), Some(CellRef::Text("2")));
    }

    #[test]
    fn anything_but_an_object_of_cells_is_refused() {
        for json in [
            "[]",
            "5",
            r#"{"a":5}"#,
            r#"{"a":{"x":"1"}}"#,
            r#"{"a":"1"} x"#,
            "{",
        ] {
            assert!(StagedRow::parse(json).is_err(), "{json}");
        }
    }
}
