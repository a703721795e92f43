//! Reading a staged [`Cell`] back: `null` is [`Cell::Null`], a string is
//! [`Cell::Text`], and `{"r": "…"}` (nothing else) is [`Cell::Raw`].

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

use super::Cell;

impl<'de> Deserialize<'de> for Cell {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Cell, D::Error> {
        deserializer.deserialize_any(CellVisitor)
    }
}

struct CellVisitor;

impl<'de> Visitor<'de> for CellVisitor {
    type Value = Cell;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"a staged cell: null, a string, or {"r": "<text>"}"#)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Cell, E> {
        Ok(Cell::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Cell, E> {
        Ok(Cell::Null)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Cell, E> {
        Ok(Cell::Text(text.to_owned()))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Cell, E> {
        Ok(Cell::Text(text))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Cell, A::Error> {
        let mut raw: Option<String> = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key != "r" {
                return Err(de::Error::unknown_field(&key, &["r"]));
            }
            if raw.is_some() {
                return Err(de::Error::duplicate_field("r"));
            }
            raw = Some(map.next_value()?);
        }
        match raw {
            Some(r) => Ok(Cell::Raw { r }),
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
