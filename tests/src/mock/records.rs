//! The deterministic record set. Each record is a pure function of
//! (seed, data set size, id) and is shaped to break naive exporters: CSV
//! quoting hazards, spreadsheet formula bait, integers beyond 2^53, decimals
//! whose exact text matters, nulls next to empty strings, nested values and a
//! field that only appears in the second half of the data set.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Map, Value};

/// The smallest integer that an IEEE double cannot represent exactly.
const BIG_BASE: u64 = 9_007_199_254_740_993;

/// Number of distinct `name` shapes; every run of this many consecutive ids
/// contains each shape once, so even small data sets carry all the bait.
const NAME_KINDS: usize = 20;

const WORDS: [&str; 8] = [
    "Alice", "Bob", "Chloé", "Dmitri", "Eve", "Farah", "Gao", "Hana",
];
const REGIONS: [&str; 5] = [
    "eu-west-1",
    "us-east-1",
    "ap-southeast-2",
    "sa-east-1",
    "région-nord",
];
const TAGS: [&str; 7] = [
    "alpha",
    "beta",
    "gamma, delta",
    "\"quoted\"",
    "naïve",
    "🚀",
    "line\nbreak",
];
const NOTES: [&str; 5] = [
    "plain note",
    "with, a comma",
    "with \"quotes\"",
    "two\nlines",
    "=1+1",
];
const COLORS: [&str; 4] = ["red", "green", "blue", "ünïcode"];

/// The record with this id, exactly as the server serves it in a data set of
/// `records` records (the size matters: `late_field` appears only for ids
/// greater than `records / 2`).
pub fn record(seed: u64, records: usize, id: usize) -> Value {
    let mut rng = rng_for(seed, id);
    let mut obj = Map::new();
    obj.insert("id".into(), Value::from(id as u64));
    obj.insert("name".into(), Value::String(name(seed, id, &mut rng)));
    obj.insert("note".into(), note(id, &mut rng));
    obj.insert("amount".into(), amount(&mut rng));
    obj.insert(
        "big".into(),
        Value::from(BIG_BASE.saturating_add(id as u64)),
    );
    obj.insert("active".into(), Value::Bool(rng.random_bool(0.5)));
    obj.insert(
        "meta".into(),
        json!({
            "region": pick(&REGIONS, &mut rng),
            "score": {"value": rng.random_range(-100i64..=1000), "unit": "pts"},
        }),
    );
    let tag_count = rng.random_range(0usize..=3);
    let tags: Vec<Value> = (0..tag_count)
        .map(|_| Value::from(pick(&TAGS, &mut rng)))
        .collect();
    obj.insert("tags".into(), Value::Array(tags));
    let attrs = if rng.random_range(0u8..3) == 0 {
        json!({})
    } else {
        json!({"color": pick(&COLORS, &mut rng), "size": rng.random_range(1u32..50)})
    };
    obj.insert("attrs".into(), attrs);
    if id > records / 2 {
        obj.insert("late_field".into(), Value::String(format!("late-{id}")));
    }
    Value::Object(obj)
}

/// The whole data set, ids ascending.
pub fn all_records(seed: u64, records: usize) -> Vec<Value> {
    (1..=records).map(|id| record(seed, records, id)).collect()
}

fn rng_for(seed: u64, id: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn pick<'a>(items: &[&'a str], rng: &mut StdRng) -> &'a str {
    items
        .get(rng.random_range(0..items.len()))
        .copied()
        .unwrap_or_default()
}

fn name(seed: u64, id: usize, rng: &mut StdRng) -> String {
    let w = pick(&WORDS, rng);
    let w2 = pick(&WORDS, rng);
    // The shape rotates with the id (offset by the seed) rather than being
    // drawn, so that any NAME_KINDS consecutive ids hold every shape.
    let kind = (id + (seed % NAME_KINDS as u64) as usize) % NAME_KINDS;
    match kind {
        0 => format!("{w} {id}"),
        1 => format!("{w}, {w2}"),
        2 => format!("{w} \"the {w2}\" {id}"),
        3 => format!("{w}\r{w2}"),
        4 => format!("{w}\n{w2}"),
        5 => format!("{w}\r\n{w2}"),
        6 => format!("  {w} {id}  "),
        7 => format!("Crème brûlée é {id}"),
        8 => format!("漢字テスト {id}"),
        9 => format!("{w} 🚀 {id}"),
        10 => format!("\u{200F}שלום עולם {id} مرحبا"),
        11 => "=HYPERLINK(\"http://x\")".to_string(),
        12 => "+1".to_string(),
        13 => "-2+3".to_string(),
        14 => "@SUM(A1)".to_string(),
        15 => format!("\t{w}"),
        16 => format!("\r{w}"),
        17 => format!("\"{w}, {w2}\"\r\n={id}"),
        18 => format!("00{id}"),
        _ => String::new(),
    }
}

fn note(id: usize, rng: &mut StdRng) -> Value {
    match rng.random_range(0u8..4) {
        0 => Value::Null,
        1 => Value::String(String::new()),
        _ => Value::String(format!("{} #{id}", pick(&NOTES, rng))),
    }
}

/// Amounts are built from text so that the served literal is exactly what
/// was written (`12.50` stays `12.50`; serde_json keeps the text because the
/// workspace enables `arbitrary_precision`).
fn amount(rng: &mut StdRng) -> Value {
    let whole = rng.random_range(0u32..10_000);
    let cents = rng.random_range(0u32..100);
    let text = match rng.random_range(0u8..5) {
        0 => format!("{whole}"),
        1 => format!("-{}", whole + 1),
        2 => format!("{whole}.{cents:02}"),
        3 => format!("-{whole}.{cents:02}"),
        _ => format!("{whole}.{}0", cents % 10),
    };
    // The text is always a valid JSON number; the fallback only keeps a
    // formatting mistake from ever panicking a request handler.
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(seed: u64, n: usize) -> Vec<String> {
        all_records(seed, n)
            .iter()
            .filter_map(|r| r.get("name").and_then(Value::as_str).map(str::to_string))
            .collect()
    }

    #[test]
    fn records_are_deterministic() {
        assert_eq!(all_records(7, 50), all_records(7, 50));
        let a = serde_json::to_string(&all_records(7, 50)).unwrap();
        let b = serde_json::to_string(&all_records(7, 50)).unwrap();
        assert_eq!(a, b);
        assert_ne!(all_records(7, 50), all_records(8, 50));
        assert_eq!(record(7, 50, 33), all_records(7, 50)[32]);
    }

    #[test]
    fn names_carry_all_the_bait() {
        for seed in [0u64, 1, 42, 12345] {
            let names = names(seed, 200);
            let has = |f: &dyn Fn(&str) -> bool| names.iter().any(|n| f(n));
            assert!(has(&|n| n.contains(',')));
            assert!(has(&|n| n.contains('"')));
            assert!(has(&|n| n.contains("\r\n")));
            assert!(has(&|n| n.contains('\n') && !n.contains('\r')));
            assert!(has(&|n| n.contains('\r') && !n.contains('\n')));
            assert!(has(&|n| n.starts_with(' ') && n.ends_with(' ')));
            assert!(has(&|n| n.contains('é')));
            assert!(has(&|n| n.contains("漢字")));
            assert!(has(&|n| n.contains('🚀')));
            assert!(has(&|n| n.contains("שלום")));
            assert!(has(&|n| n == "=HYPERLINK(\"http://x\")"));
            assert!(has(&|n| n == "+1"));
            assert!(has(&|n| n == "-2+3"));
            assert!(has(&|n| n == "@SUM(A1)"));
            assert!(has(&|n| n.starts_with('\t')));
            assert!(has(&|n| n.starts_with('\r')));
            assert!(has(&|n| n.is_empty()));
        }
    }

    #[test]
    fn values_are_hostile() {
        let n = 200;
        let recs = all_records(3, n);
        let text: Vec<String> = recs
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        assert!(recs.iter().any(|r| r["note"].is_null()));
        assert!(recs.iter().any(|r| r["note"] == ""));
        assert!(recs
            .iter()
            .any(|r| r["note"].as_str().is_some_and(|s| !s.is_empty())));
        assert!(recs
            .iter()
            .any(|r| r["tags"].as_array().is_some_and(Vec::is_empty)));
        assert!(recs
            .iter()
            .any(|r| r["tags"].as_array().is_some_and(|t| !t.is_empty())));
        assert!(recs.iter().any(|r| r["attrs"] == json!({})));
        assert!(recs.iter().any(|r| r["active"] == true));
        assert!(recs.iter().any(|r| r["active"] == false));
        assert!(text.iter().any(|t| t.contains("\"amount\":-")));
        // A decimal with a trailing zero keeps its exact text.
        assert!(text
            .iter()
            .any(|t| t.split("\"amount\":").nth(1).is_some_and(|a| {
                let lit: String = a.chars().take_while(|c| *c != ',').collect();
                lit.contains('.') && lit.ends_with('0')
            })));
        // `big` is an exact integer literal above 2^53.
        let first = &text[0];
        assert!(first.contains("\"big\":9007199254740994"), "{first}");
        assert_eq!(recs[0]["meta"]["score"]["unit"], "pts");
        // late_field only in the second half.
        for r in &recs {
            let id = r["id"].as_u64().unwrap() as usize;
            assert_eq!(r.get("late_field").is_some(), id > n / 2, "id {id}");
        }
    }
}
