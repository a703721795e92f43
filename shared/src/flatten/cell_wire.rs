//! Reading a staged [`Cell`] back: `null` is [`Cell::Null`], a string is
//! [`Cell::Text`], and `{"r": "…"}` (nothing else) is [`Cell::Raw`].
//!
//! One reader, [`StagedCell`], borrows its text from the row's JSON where
//! that text has no escapes: the finalizer reads every row of an export
//! back, and a copy a cell was most of what that cost. A [`Cell`] is a
//! `StagedCell` made owned.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

use super::{Cell, CellRef};

impl<'de> Deserialize<'de> for Cell {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Cell, D::Error> {
        Ok(StagedCell::deserialize(deserializer)?.into_owned())
    }
}

/// A staged cell, its text borrowed from the JSON it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StagedCell<'a> {
    Null,
    Text(Cow<'a, str>),
    Raw(Cow<'a, str>),
}

impl<'a> StagedCell<'a> {
    fn into_owned(self) -> Cell {
        match self {
            StagedCell::Null => Cell::Null,
            StagedCell::Text(text) => Cell::Text(text.into_owned()),
            StagedCell::Raw(r) => Cell::Raw { r: r.into_owned() },
        }
    }

    /// What the CSV writer shows: nothing for null.
    pub(super) fn shown(&self) -> Option<CellRef<'_>> {
        match self {
            StagedCell::Null => None,
            StagedCell::Text(text) => Some(CellRef::Text(text)),
            StagedCell::Raw(r) => Some(CellRef::Raw(r)),
        }
    }
}

impl<'de> Deserialize<'de> for StagedCell<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StagedCell<'de>, D::Error> {
        deserializer.deserialize_any(CellVisitor)
    }
}

/// A JSON string, borrowed when it has no escapes.
pub(super) struct Text<'a>(pub(super) Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Text<'de>, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(text)))
    }
}

struct CellVisitor;

impl<'de> Visitor<'de> for CellVisitor {
    type Value = StagedCell<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"a staged cell: null, a string, or {"r": "<text>"}"#)
    }

    fn visit_unit<E: de::Error>(self) -> Result<StagedCell<'de>, E> {
        Ok(StagedCell::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<StagedCell<'de>, E> {
        Ok(StagedCell::Null)
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<StagedCell<'de>, E> {
        Ok(StagedCell::Text(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<StagedCell<'de>, E> {
        Ok(StagedCell::Text(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<StagedCell<'de>, E> {
        Ok(StagedCell::Text(Cow::Owned(text)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StagedCell<'de>, A::Error> {
        let mut raw: Option<Cow<'de, str>> = None;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            if key.0 != "r" {
                return Err(de::Error::unknown_field(&key.0, &["r"]));
            }
            if raw.is_some() {
                return Err(de::Error::duplicate_field("r"));
            }
            raw = Some(map.next_value::<Text<'de>>()?.0);
        }
        match raw {
            Some(r) => Ok(StagedCell::Raw(r)),
            None => Err(de::Error::missing_field("r")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<Cell, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn every_cell_reads_back_as_it_was_written() {
        let cells = [
            Cell::Null,
            Cell::Text(String::new()),
            Cell::Text("5".into()),
            Cell::Text("two\nlines \"quoted\" ünïcode \\ r".into()),
            Cell::Raw { r: "5".into() },
            Cell::Raw {
                r: r#"{"r":"x"}"#.into(),
            },
        ];
        for cell in cells {
            let json = serde_json::to_string(&cell).unwrap();
            assert_eq!(read(&json).unwrap(), cell, "{json}");
        }
    }

    #[test]
    fn anything_else_is_refused_with_what_was_expected() {
        for json in [
            "5",
            "true",
            "[]",
            "{}",
            r#"{"r":5}"#,
            r#"{"x":"1"}"#,
            r#"{"r":"1","r":"2"}"#,
        ] {
            let err = read(json).unwrap_err().to_string();
            assert!(!err.is_empty(), "{json}");
        }
        let err = read("5").unwrap_err().to_string();
        assert!(err.contains(r#"{"r": "<text>"}"#), "{err}");
    }
}
