//! Last-record style (Stripe's): `?starting_after=<field of the last
//! record>` while the body's `has_more_path` is true.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::body::{flag, lookup};
use super::{Next, Page, PaginationError, PaginationStyle, Position, Target, UnderDrift};
use crate::flatten::kind;
use crate::spec::{check_path, SpecError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastRecord {
    #[serde(default = "param")]
    pub param: String,
    /// The record field whose value of the last record is sent as `param`.
    #[serde(default = "field")]
    pub field: String,
    #[serde(default = "has_more_path")]
    pub has_more_path: String,
    #[serde(default = "super::limit_param")]
    pub size_param: String,
}

fn param() -> String {
    "starting_after".into()
}
fn field() -> String {
    "id".into()
}
fn has_more_path() -> String {
    "has_more".into()
}
impl PaginationStyle for LastRecord {
    fn first(&self) -> Position {
        Position::After { after: None }
    }

    fn target(&self, page_size: u32, position: &Position) -> Result<Target, PaginationError> {
        let Position::After { after } = position else {
            return Err(self.wrong_position(position));
        };
Ok(Target::keyed(
            &self.size_param,
            page_size,
            &self.param,
            after,
        ))
    }

    fn next(
        &self,
        _page_size: u32,
        position: &Position,
        page: &Page<'_>,
    ) -> Result<Next, PaginationError> {
        let Position::After { after } = position else {
            return Err(self.wrong_position(position));
        };
        // Read first, so a broken flag is reported even on an empty page.
        let has_more = flag(page.body, &self.has_more_path)?;
        let Some(last) = page.records.last() else {
            return Ok(Next::Done);
        };
        if !has_more {
            return Ok(Next::Done);
        }
        let key = record_key(last, &self.field)?;
        if after.as_deref() == Some(key.as_str()) {
            return Err(PaginationError::CursorLoop);
        }
        Ok(Next::Chain(Position::After { after: Some(key) }))
    }

    fn under_drift(&self) -> UnderDrift {
        UnderDrift::Immune
    }

    fn validate(&self) -> Result<(), SpecError> {
        check_path("pagination.field", &self.field)?;
        check_path("pagination.has_more_path", &self.has_more_path)
    }
}

/// The key to continue after: the record's `field`, a string or a number.
fn record_key(record: &Value, field: &str) -> Result<String, PaginationError> {
    match lookup(record, field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        other => Err(PaginationError::BadField {
            path: format!("last record.{field}"),
            found: other.map(kind).unwrap_or("missing"),
            expected: "a string or number",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{first_position, target, PaginationSpec, Role};
    use super::*;
    use serde_json::json;

    #[test]
    fn last_record_style() {
        let spec = PaginationSpec::LastRecord(LastRecord {
            param: "starting_after".into(),
            field: "id".into(),
            has_more_path: "has_more".into(),
            size_param: "limit".into(),
        });
        let first = first_position(&spec);
        let n = run_data(
            &spec,
            &first,
            Role::Chain,
            json!({"data": items(10), "has_more": true}),
        )
        .unwrap();
        let pos = Position::After {
            after: Some("10".into()),
        };
        assert_eq!(n, Next::Chain(pos.clone()));
        assert_eq!(
            target(&spec, 10, &pos).unwrap(),
            Target::Query(vec![
                ("limit".into(), "10".into()),
                ("starting_after".into(), "10".into())
            ])
        );
        let end = run_data(
            &spec,
            &pos,
            Role::Chain,
            json!({"data": items(2), "has_more": false}),
        )
        .unwrap();
        assert_eq!(end, Next::Done);
        let bad = run_data(
            &spec,
            &first,
            Role::Chain,
            json!({"data": [{"x": 1}], "has_more": true}),
        )
        .unwrap_err();
        assert!(matches!(bad, PaginationError::BadField { .. }), "{bad}");
    }

    #[test]
    fn record_keys_are_strings_or_numbers() {
        assert_eq!(record_key(&json!({"id": "cus_1"}), "id"), Ok("cus_1".into()));
        assert_eq!(record_key(&json!({"a": {"id": 7}}), "a.id"), Ok("7".into()));
        assert_eq!(
            record_key(&json!({"x": 1}), "id"),
            Err(PaginationError::BadField {
                path: "last record.id".into(),
                found: "missing",
                expected: "a string or number",
            })
        );
        assert!(matches!(
            record_key(&json!({"id": true}), "id"),
            Err(PaginationError::BadField {
                found: "a boolean",
                ..
            })
        ));
    }

    #[test]
    fn the_same_last_key_twice_is_a_loop() {
        let spec = last_record();
        let at = Position::After {
            after: Some("2".into()),
        };
        let body = json!({"data": items(2), "has_more": true});
        let looped = run(&spec, &at, Role::Chain, body, &[], Some("data"));
        assert_eq!(looped, Err(PaginationError::CursorLoop));
    }

    #[test]
    fn a_broken_flag_is_reported_even_on_an_empty_page() {
        let spec = last_record();
        let body = json!({"data": [], "has_more": "yes"});
        let err = run(&spec, &spec.style().first(), Role::Chain, body, &[], Some("data"));
        assert!(
            matches!(err, Err(PaginationError::BadField { ref path, .. }) if path == "has_more"),
            "{err:?}"
        );
        let body = json!({"data": [], "has_more": true});
        let empty = run(&spec, &spec.style().first(), Role::Chain, body, &[], Some("data"));
        assert_eq!(empty, Ok(Next::Done));
    }
}
