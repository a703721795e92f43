//! Measures what a worker's page pipeline costs in memory at the fleet's
//! ceilings: `PAGES` bodies at once (a worker's concurrency), each
//! at most `BODY_BYTES` long, `RECORDS` records of small nested objects
//! adding up to `VALUES` JSON values (or, with `SHAPE=wide`, records of
//! long strings up to `BODY_BYTES`), each pre-scanned, parsed,
//! flattened and serialized to staged rows as a worker does, all held until
//! every thread is done. Run under `/usr/bin/time -v` for the peak RSS:
//!
//! ```text
//! cargo build --release -p pagefleet-shared --example page_memory
//! /usr/bin/time -v target/release/examples/page_memory
//! ```

// A measuring tool run by hand: a page outside the ceilings is a wrong
// setting of the tool, and stopping loudly is the right answer to it.
#![allow(clippy::expect_used)]

use std::sync::{Arc, Barrier};

use pagefleet_shared::flatten::{flatten_record, row_key};
use pagefleet_shared::limits::FleetLimits;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The costliest page the ceilings let through: as many records as
/// `max_records_per_page` allows, each as many small objects as fit within
/// `values` in all (`{"id":N,"a":{"x":1},"b":{"x":1},…}`: a non-empty
/// object costs serde_json a whole B-tree node, ~700 bytes, however short),
/// within `bytes`.
fn nested(bytes: u64, values: u64, records: u64) -> Vec<u8> {
    let per_record = (values.saturating_sub(1) / records.max(1)).max(2);
    // The record and its `id` are 2 values; each `"k":{"x":1}` member is 2.
    let members = (per_record - 2) / 2;
    let mut body = b"[".to_vec();
    for n in 0..records {
        let mut record = format!("{{\"id\":{n}");
        for m in 0..members {
            record.push_str(&format!(",\"k{m}\":{{\"x\":1}}"));
        }
        record.push_str("},");
        if (body.len() + record.len() + 1) as u64 > bytes {
            break;
        }
        body.extend_from_slice(record.as_bytes());
    }
    if body.len() > 1 {
        body.pop();
    }
    body.push(b']');
    body
}

/// A body of records with one long text field each, up to `bytes`.
fn wide(bytes: u64) -> Vec<u8> {
    let text = "x".repeat(64 * 1024);
    let mut body = b"[".to_vec();
    let mut n = 0u64;
    loop {
        let record = format!("{{\"id\":{n},\"text\":\"{text}\"}},");
        if (body.len() + record.len() + 1) as u64 > bytes {
            break;
        }
        body.extend_from_slice(record.as_bytes());
        n += 1;
    }
    body.pop();
    body.push(b']');
    body
}

fn main() {
    let limits = FleetLimits::default();
    let pages = env("PAGES", 8) as usize;
    let bytes = env("BODY_BYTES", limits.max_body_bytes);
    let values = env("VALUES", limits.max_json_values);
    let records = env("RECORDS", limits.max_records_per_page);
    let shape = std::env::var("SHAPE").unwrap_or_else(|_| "nested".into());
    let limits = FleetLimits {
        max_body_bytes: bytes,
        max_json_values: values,
        max_records_per_page: records,
        ..limits
    };
    let body = Arc::new(match shape.as_str() {
        "wide" => wide(bytes),
        _ => nested(bytes, values, records),
    });
    let shape_of = pagefleet_shared::limits::scan(&body, limits.max_json_depth);
    eprintln!(
        "{pages} pages at once, each {} bytes, {} values ({shape})",
        body.len(),
        shape_of.values
    );
    let barrier = Arc::new(Barrier::new(pages));
    let threads: Vec<_> = (0..pages)
        .map(|_| {
            let (body, barrier) = (body.clone(), barrier.clone());
            std::thread::spawn(move || {
                // Each page has its own copy of the body, as each fetch does.
                let body = body.to_vec();
                limits.check_body(&body).expect("within the ceilings");
                let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
                let records = value.as_array().expect("an array");
                limits
                    .check_records(records.len())
                    .expect("within the ceilings");
                let key = vec!["id".to_string()];
                let rows: Vec<(String, String)> = records
                    .iter()
                    .map(|r| {
                        let row = flatten_record(r).expect("an object");
                        (
                            row_key(r, &key).expect("a key"),
                            serde_json::to_string(&row).expect("json"),
                        )
                    })
                    .collect();
                // Everything stays alive until every page has built its rows.
                barrier.wait();
                (body.len(), value.as_array().map(Vec::len), rows.len())
            })
        })
        .collect();
    for t in threads {
        let (bytes, records, rows) = t.join().expect("a page thread");
        assert_eq!(records, Some(rows));
        let _ = bytes;
    }
}
