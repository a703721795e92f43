//! A page's rows as a landing carries them: each record's staging key and
//! row JSON, packed into one buffer, and the order they merge in.
//!
//! Packed, a page of many small records costs its text and five bytes a
//! row rather than two allocations a row; merged, the rows go to Postgres
//! as `text[]` parameters written straight from the buffer, a chunk of
//! rows a statement, so no page is copied whole again into parameters.

use std::error::Error;

use bytes::BytesMut;
use postgres_protocol::types::{array_to_sql, text_to_sql, ArrayDimension};
use tokio_postgres::types::{to_sql_checked, IsNull, Kind, ToSql, Type};

/// The rows of one page, in page order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PageRows {
    /// Each row as its key, a NUL, and its JSON, one after another.
    text: String,
    /// Where each row ends in `text`. A key holds no NUL (`row_key`
    /// escapes it), so the first NUL of a row ends its key: four bytes a
    /// row, where an end for the key as well cost eight.
    ends: Vec<u32>,
}

/// Why a row could not be packed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CannotPack {
    /// A page whose rows' text is over 4 GiB (nor would it fit a landing).
    #[error("the page's rows come to more than 4 GiB of text")]
    TooLarge,
    /// Staging keys never hold one (see `flatten::row_key`).
    #[error("a staging key holds a NUL character")]
    NulInKey,
}

/// Ends a row's key in the buffer.
const KEY_END: char = '\0';

impl PageRows {
    /// Room for `rows` rows of about `bytes` bytes of text in all.
    pub fn with_capacity(rows: usize, bytes: usize) -> PageRows {
        PageRows {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(rows),
        }
    }

    pub fn push(&mut self, key: &str, row: &str) -> Result<(), CannotPack> {
        if key.contains(KEY_END) {
            return Err(CannotPack::NulInKey);
        }
        let start = self.text.len();
        self.text.push_str(key);
        self.text.push(KEY_END);
        self.text.push_str(row);
        match u32::try_from(self.text.len()) {
            Ok(end) => {
                self.ends.push(end);
                Ok(())
            }
            Err(_) => {
                self.text.truncate(start);
                Err(CannotPack::TooLarge)
            }
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The key and the row JSON of row `i`.
    pub fn get(&self, i: usize) -> Option<(&str, &str)> {
        let end = *self.ends.get(i)?;
        let start = match i.checked_sub(1) {
            Some(before) => self.ends.get(before).copied().unwrap_or(0),
            None => 0,
        };
        self.text
            .get(start as usize..end as usize)?
            .split_once(KEY_END)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.iter().map(|(key, _)| key)
    }

    fn key(&self, i: u32) -> &str {
        self.get(i as usize).map_or("", |(key, _)| key)
    }

    /// One row per key, the last occurrence within the page winning (`ON
    /// CONFLICT` cannot touch one key twice in a statement), in key order:
    /// two landings that overlap lock their rows in the same order and
    /// cannot deadlock.
    pub fn merge_order(&self) -> MergeOrder<'_> {
        let count = u32::try_from(self.len()).unwrap_or(u32::MAX);
        let mut order: Vec<u32> = (0..count).collect();
        // Rows of one key stay in page order, the last one last; unstable
        // with the row as the tie-break, so no scratch copy of the order.
        order.sort_unstable_by(|&a, &b| self.key(a).cmp(self.key(b)).then(a.cmp(&b)));
        let all = order.len();
        // Of a run of one key, the kept slot takes the later row.
        order.dedup_by(|later, kept| {
            let same = self.key(*later) == self.key(*kept);
            if same {
                *kept = *later;
            }
            same
        });
        MergeOrder {
            in_page_duplicates: (all - order.len()) as u64,
            order,
            rows: self,
        }
    }
}

/// The rows to merge, in merge order (see [`PageRows::merge_order`]).
#[derive(Debug)]
pub struct MergeOrder<'a> {
    rows: &'a PageRows,
    order: Vec<u32>,
    /// Earlier occurrences of a key within the page, dropped (and counted
    /// as replaced).
    pub in_page_duplicates: u64,
}

impl<'a> MergeOrder<'a> {
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Each row's key and JSON, in merge order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        let rows = self.rows;
        (self.order.iter()).filter_map(move |&i| rows.get(i as usize))
    }

    /// The rows in chunks of at most `size`, each as its keys and its row
    /// JSON, ready to bind as `text[]` parameters.
    pub fn chunks(&self, size: usize) -> impl Iterator<Item = (TextArray<'_>, TextArray<'_>)> {
        self.order.chunks(size.max(1)).map(|chunk| {
            let array = |part| TextArray {
                rows: self.rows,
                order: chunk,
                part,
            };
            (array(Part::Key), array(Part::Row))
        })
    }

    #[cfg(test)]
    fn keys(&self) -> Vec<&str> {
        self.order.iter().map(|&i| self.rows.key(i)).collect()
    }
}

#[derive(Debug, Clone, Copy)]
enum Part {
    Key,
    Row,
}

/// One part (keys or row JSON) of some rows, bound as a `text[]`: written
/// into the statement's parameters straight from the page's buffer.
#[derive(Debug)]
pub struct TextArray<'a> {
    rows: &'a PageRows,
    order: &'a [u32],
    part: Part,
}

impl<'a> TextArray<'a> {
    fn texts(&self) -> impl Iterator<Item = &'a str> + 'a {
        let (rows, part) = (self.rows, self.part);
        (self.order.iter()).filter_map(move |&i| match (rows.get(i as usize), part) {
            (Some((key, _)), Part::Key) => Some(key),
            (Some((_, row)), Part::Row) => Some(row),
            (None, _) => None,
        })
    }
}

impl ToSql for TextArray<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let Kind::Array(member) = ty.kind() else {
            return Err(format!("a page's rows bind as text[], not {ty}").into());
        };
        let dimension = ArrayDimension {
            len: i32::try_from(self.order.len())?,
            lower_bound: 1,
        };
        let text = |value: &str, out: &mut BytesMut| {
            text_to_sql(value, out);
            Ok(postgres_protocol::IsNull::No)
        };
        array_to_sql(Some(dimension), member.oid(), self.texts(), text, out)?;
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Array(member) if *member == Type::TEXT)
    }

    to_sql_checked!();
}

/// Rows from (key, row JSON) pairs (tests).
#[cfg(test)]
pub(crate) fn rows(pairs: &[(&str, &str)]) -> PageRows {
    let mut rows = PageRows::default();
    for (key, row) in pairs {
        rows.push(key, row).unwrap();
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_back_as_pushed() {
        let pairs = [("b", r#"{"id":1}"#), ("", "{}"), ("ünï", r#"{"x":"é"}"#)];
        let rows = rows(&pairs);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows.iter().collect::<Vec<_>>(), pairs);
        assert_eq!(rows.get(3), None);
        assert!(PageRows::default().is_empty());
    }

    #[test]
    fn a_key_never_holds_the_nul_that_ends_it_but_a_row_may() {
        let mut rows = PageRows::default();
        assert_eq!(rows.push("a\0b", "{}"), Err(CannotPack::NulInKey));
        assert!(rows.is_empty());
        rows.push("k", "x\0y").unwrap();
        assert_eq!(rows.get(0), Some(("k", "x\0y")));
    }

    #[test]
    fn the_last_occurrence_of_a_key_wins_and_keys_come_sorted() {
        let rows = rows(&[("b", "1"), ("a", "2"), ("b", "3"), ("c", "4"), ("b", "5")]);
        let order = rows.merge_order();
        assert_eq!(order.keys(), ["a", "b", "c"]);
        assert_eq!(order.in_page_duplicates, 2);
        let (keys, data) = order.chunks(10).next().unwrap();
        assert_eq!(keys.texts().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(data.texts().collect::<Vec<_>>(), ["2", "5", "4"]);
        assert_eq!(PageRows::default().merge_order().in_page_duplicates, 0);
    }

    #[test]
    fn chunks_cover_every_row_once_in_order() {
        let keys: Vec<String> = (0..25).map(|i| format!("k{i:02}")).collect();
        let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "{}")).collect();
        let rows = rows(&pairs);
        let order = rows.merge_order();
        let chunked: Vec<Vec<&str>> = (order.chunks(10))
            .map(|(k, _)| k.texts().collect())
            .collect();
        assert_eq!(
            chunked.iter().map(Vec::len).collect::<Vec<_>>(),
            [10, 10, 5]
        );
        assert_eq!(
            chunked.concat(),
            keys.iter().map(String::as_str).collect::<Vec<_>>()
        );
    }

    #[test]
    fn binds_only_as_text_arrays_and_encodes_like_a_slice() {
        let rows = rows(&[("a", "1"), ("b", "22")]);
        let order = rows.merge_order();
        let (keys, _) = order.chunks(10).next().unwrap();
        assert!(<TextArray as ToSql>::accepts(&Type::TEXT_ARRAY));
        assert!(!<TextArray as ToSql>::accepts(&Type::INT4_ARRAY));
        assert!(!<TextArray as ToSql>::accepts(&Type::TEXT));
        let (mut ours, mut slice) = (BytesMut::new(), BytesMut::new());
        keys.to_sql(&Type::TEXT_ARRAY, &mut ours).unwrap();
        ["a", "b"]
            .as_slice()
            .to_sql(&Type::TEXT_ARRAY, &mut slice)
            .unwrap();
        assert_eq!(ours, slice);
    }
}
