//! The fuzz targets: one per entry point of outside input, each a
//! generator and a test. A test panics when it finds a bug: a panic in the
//! library itself, or an oracle — an assertion of what must hold for every
//! input (a followed URL stays on the origin, what the CSV writer wrote
//! reads back with the fields it was given) — failing.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::mem::discriminant;
use std::time::{Duration, SystemTime};

use pagefleet_shared::csv_check::{check_csv, ExpectedCsv};
use pagefleet_shared::csv_out::CsvSink;
use pagefleet_shared::flatten::{
    flatten_record, key_value, row_key, Cell, FlatRecord, Row, MAX_DEPTH,
};
use pagefleet_shared::pagination::{
    self, chain_marks, next_link, totals, Counts, Cursor, LastRecord, LinkHeader, Next, NextUrl,
    Offset, Page, PageBody, PageNumber, PaginationSpec, Position, Records, Role,
    MAX_PAGES_PER_PARTITION,
};
use pagefleet_shared::ratelimit_headers;
use pagefleet_shared::retry::{
    backoff_ceiling, classify_status, full_jitter, parse_retry_after, Outcome, RetryBudget,
    MAX_RETRY_AFTER,
};
use pagefleet_shared::source;
use pagefleet_shared::spec::{CsvOptions, ExportSpec, RetrySpec};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};
use url::Url;

use crate::gen::{self, *};
use crate::runner::{drive, Budget, Report};

/// One target: its name (as `pagefleet-fuzz` lists it) and how to run it.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&Budget) -> Report,
}

/// Every target, in the order `make fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "spec_toml",
        run: |b| drive(toml_spec_text(), spec_toml, b),
    },
    Target {
        name: "spec_json",
        run: |b| drive(json_spec_text(), spec_json, b),
    },
    Target {
        name: "page_offset",
        run: |b| drive(page_input(offset_spec()), page, b),
    },
    Target {
        name: "page_number",
        run: |b| drive(page_input(page_number_spec()), page, b),
    },
    Target {
        name: "page_cursor",
        run: |b| drive(page_input(cursor_spec()), page, b),
    },
    Target {
        name: "page_last_record",
        run: |b| drive(page_input(last_record_spec()), page, b),
    },
    Target {
        name: "page_next_url",
        run: |b| drive(page_input(next_url_spec()), page, b),
    },
    Target {
        name: "page_link_header",
        run: |b| drive(page_input(link_header_spec()), page, b),
    },
    Target {
        name: "body_paths",
        run: |b| drive(body_paths_input(), body_paths, b),
    },
    Target {
        name: "totals",
        run: |b| drive(totals_input(), totals_target, b),
    },
    Target {
        name: "retry_after",
        run: |b| drive(retry_input(), retry, b),
    },
    Target {
        name: "ratelimit_headers",
        run: |b| drive(ratelimit_input(), ratelimit, b),
    },
    Target {
        name: "flatten",
        run: |b| drive(flatten_input(), flatten, b),
    },
    Target {
        name: "row_key",
        run: |b| drive(row_key_input(), row_key_order, b),
    },
    Target {
        name: "csv_writer",
        run: |b| drive(csv_input(), csv_writer, b),
    },
    Target {
        name: "csv_check",
        run: |b| drive(csv_check_input(), csv_checker, b),
    },
    Target {
        name: "redact",
        run: |b| drive(redact_input(), redact_target, b),
    },
];

// ---------------------------------------------------------------- redact

/// Text a source or a spec could put in a dead letter, and a secret the
/// request sent (sometimes inside the text).
pub fn redact_input() -> impl Strategy<Value = (String, String, bool)> {
    (
        prop_oneof![
            hostile_string(),
            "[ \u{a0}\u{3000}a-z=&;?\"'<(\\[{,]{0,40}".boxed(),
            any::<String>().boxed(),
        ],
        "[A-Za-z0-9]{4,24}",
        any::<bool>(),
    )
}

/// Redaction never panics, and a known secret never survives it, wherever
/// it sits in the text.
pub fn redact_target((text, secret, embed): &(String, String, bool)) {
    use pagefleet_shared::redact;
    let mut known = redact::Known::none();
    known.add(secret);
    let input = if *embed {
        format!("{text}{secret}{text}")
    } else {
        text.clone()
    };
    let shown = redact::text(&input, &known);
    assert!(
        !shown.contains(secret.as_str()),
        "{secret:?} survived in {shown:?}"
    );
    let _ = redact::excerpt(input.as_bytes(), 64, &known);
    let _ = redact::url_text(&input);
}

// ---------------------------------------------------------------- spec

/// Spec text: anything, or a valid spec mutated a field at a time and
/// then edited as text.
fn spec_text(render: fn(&Value) -> String) -> impl Strategy<Value = String> {
    prop_oneof![
        1 => hostile_string(),
        1 => (1usize..3000).prop_map(|n| format!("a = {}{}", "[".repeat(n), "]".repeat(n))),
        6 => (valid_spec(), few(mutations()), few(edits())).prop_map(move |(spec, mutations, edits)| {
            apply_edits(&render(&apply_mutations(spec, &mutations)), &edits)
        }),
    ]
}

fn json_spec_text() -> impl Strategy<Value = String> {
    spec_text(|v| v.to_string())
}

fn toml_spec_text() -> impl Strategy<Value = String> {
    spec_text(|v| match to_toml(v) {
        Some(toml::Value::Table(t)) => toml::to_string(&t).unwrap_or_else(|_| v.to_string()),
        _ => v.to_string(),
    })
}

/// JSON as TOML: numbers as TOML numbers, and nulls (which TOML cannot
/// say) left out.
fn to_toml(value: &Value) -> Option<toml::Value> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(items) => toml::Value::Array(items.iter().filter_map(to_toml).collect()),
        Value::Object(map) => toml::Value::Table(
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), to_toml(v)?)))
                .collect(),
        ),
    })
}

// A target takes a reference to what its generator makes: a `String`.
#[allow(clippy::ptr_arg)]
fn spec_toml(text: &String) {
    if let Ok(spec) = ExportSpec::from_toml(text) {
        accepted_spec(&spec);
    }
}

// A target takes a reference to what its generator makes: a `String`.
#[allow(clippy::ptr_arg)]
fn spec_json(text: &String) {
    if let Ok(spec) = ExportSpec::from_json(text) {
        accepted_spec(&spec);
    }
}

/// What must hold of every spec the parser accepts: it is valid, it
/// survives the JSON it is stored as, and its first request can be built.
fn accepted_spec(spec: &ExportSpec) {
    assert_eq!(
        spec.validate(),
        Ok(()),
        "an accepted spec does not validate"
    );
    let stored = serde_json::to_string(spec).expect("a spec serializes");
    assert_eq!(
        ExportSpec::from_json(&stored).as_ref(),
        Ok(spec),
        "an accepted spec does not survive its own JSON: {stored}"
    );
    let _ = (spec.hash(), spec.file_name());
    let first = pagination::first_position(&spec.pagination);
    let target = pagination::target(&spec.pagination, spec.page_size, &first)
        .expect("the first page has a target");
    let no_params = BTreeMap::new();
    let params = spec.partitions.iter().map(|p| &p.params);
    for params in params.chain([&no_params]) {
        if let Err(e) = source::page_url(spec, params, &target) {
            panic!("an accepted spec has no first page URL: {e}");
        }
    }
    let bucket = pagefleet_shared::rate_keys::bucket_for(spec, "tenant", None, &[], 100.0);
    assert!(
        bucket.key.starts_with("tenant:tenant:"),
        "a spec's bucket is its tenant's: {}",
        bucket.key
    );
    let b = bucket.bounds;
    assert!(
        b.floor > 0.0 && b.floor <= b.start && b.start <= b.ceiling && b.ceiling.is_finite(),
        "an accepted spec's bucket has a usable rate: {b:?}"
    );
}

// ---------------------------------------------------------------- pagination

/// A page as a style sees it, the spec's parameters included.
#[derive(Debug, Clone)]
pub struct PageInput {
    pub spec: PaginationSpec,
    pub page_size: u32,
    pub position: Position,
    pub role: Role,
    pub body: Value,
    pub records_path: Option<String>,
    pub headers: Vec<(String, String)>,
    /// The request URL (resolved against the origin).
    pub url: String,
}

fn param_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(&["page", "_page", "offset", "limit", "cursor", "per_page"][..])
            .prop_map(str::to_string),
        1 => hostile_string(),
    ]
}

fn offset_spec() -> impl Strategy<Value = PaginationSpec> {
    (param_name(), param_name(), option::of(steer_path())).prop_map(|(o, l, total)| {
        PaginationSpec::Offset(Offset {
            offset_param: o,
            limit_param: l,
            total_path: total,
        })
    })
}

fn page_number_spec() -> impl Strategy<Value = PaginationSpec> {
    let first = prop_oneof![Just(1u64), Just(0), edgy_u64()];
    (param_name(), first, option::of(steer_path())).prop_map(|(p, first, total)| {
        PaginationSpec::PageNumber(PageNumber {
            page_param: p,
            size_param: "per_page".into(),
            first_page: first,
            total_pages_path: total,
        })
    })
}

fn cursor_spec() -> impl Strategy<Value = PaginationSpec> {
    let header = prop_oneof![
        proptest::sample::select(&["x-next-cursor", "x-cursor"][..]).prop_map(str::to_string),
        hostile_string(),
    ];
    let place = prop_oneof![
        3 => steer_path().prop_map(|p| (Some(p), None)),
        3 => header.prop_map(|h| (None, Some(h))),
        1 => (optional_path(), option::of(hostile_string())),
    ];
    place.prop_map(|(path, header)| {
        PaginationSpec::Cursor(Cursor {
            cursor_param: "cursor".into(),
            cursor_path: path,
            cursor_header: header,
            size_param: "limit".into(),
        })
    })
}

fn last_record_spec() -> impl Strategy<Value = PaginationSpec> {
    let field = prop_oneof![3 => Just("id".to_string()), 1 => path()];
    (field, steer_path()).prop_map(|(field, has_more)| {
        PaginationSpec::LastRecord(LastRecord {
            param: "starting_after".into(),
            field,
            has_more_path: has_more,
            size_param: "limit".into(),
        })
    })
}

fn next_url_spec() -> impl Strategy<Value = PaginationSpec> {
    (steer_path(), option::of(steer_path())).prop_map(|(next, done)| {
        PaginationSpec::NextUrl(NextUrl {
            next_path: next,
            done_path: done,
            size_param: "limit".into(),
        })
    })
}

fn link_header_spec() -> impl Strategy<Value = PaginationSpec> {
    (option::of(param_name()), option::of(edgy_u64())).prop_map(|(param, first)| {
        PaginationSpec::LinkHeader(LinkHeader {
            size_param: "limit".into(),
            page_param: param,
            first_page: first,
        })
    })
}

/// A position of the spec's style, most often its first page (where
/// fan-outs happen); now and then one of another style.
fn position_for(spec: &PaginationSpec) -> BoxedStrategy<Position> {
    let own = match spec {
        PaginationSpec::Offset(_) => prop_oneof![Just(0u64), edgy_u64()]
            .prop_map(|offset| Position::Offset { offset })
            .boxed(),
        PaginationSpec::PageNumber(p) => {
            let first = p.first_page;
            prop_oneof![
                Just(first),
                (0u64..4).prop_map(move |d| first.saturating_add(d)),
                edgy_u64()
            ]
            .prop_map(|page| Position::Page { page })
            .boxed()
        }
        PaginationSpec::Cursor(_) => option::of(hostile_string())
            .prop_map(|cursor| Position::Cursor { cursor })
            .boxed(),
        PaginationSpec::LastRecord(_) => option::of(hostile_string())
            .prop_map(|after| Position::After { after })
            .boxed(),
        PaginationSpec::NextUrl(_) | PaginationSpec::LinkHeader(_) => {
            prop_oneof![Just(None), link_url().prop_map(Some),]
                .prop_map(|url| Position::Url { url })
                .boxed()
        }
    };
    prop_oneof![9 => own, 1 => position()].boxed()
}

fn position() -> impl Strategy<Value = Position> {
    prop_oneof![
        edgy_u64().prop_map(|offset| Position::Offset { offset }),
        edgy_u64().prop_map(|page| Position::Page { page }),
        option::of(hostile_string()).prop_map(|cursor| Position::Cursor { cursor }),
        option::of(hostile_string()).prop_map(|after| Position::After { after }),
        option::of(link_url()).prop_map(|url| Position::Url { url }),
    ]
}

/// A record: mostly an object with an `id` of any kind.
fn record() -> impl Strategy<Value = Value> {
    let id = prop_oneof![
        3 => json_number(),
        3 => hostile_string().prop_map(Value::String),
        1 => json_value_within(page_key(), 3, 8),
    ];
    prop_oneof![
        4 => (id, small_object(page_key())).prop_map(|(id, mut record)| {
            if let Value::Object(map) = &mut record {
                map.insert("id".into(), id);
            }
            record
        }),
        1 => json_value_within(page_key(), 3, 8),
    ]
}

/// A value a body steers by: counts, quoted counts, URLs, flags.
fn steering_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => json_number(),
        2 => number_text().prop_map(Value::String),
        2 => link_url().prop_map(Value::String),
        1 => hostile_string().prop_map(Value::String),
        2 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
        1 => json_value_within(page_key(), 3, 8),
    ]
}

/// Puts `value` at a dotted `path`, making the objects on the way.
fn set_path(map: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            map.insert(path.to_string(), value);
        }
        Some((head, rest)) => {
            let inner = map
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !inner.is_object() {
                *inner = Value::Object(Map::new());
            }
            if let Value::Object(inner) = inner {
                set_path(inner, rest, value);
            }
        }
    }
}

/// A body and where its records are: mostly `data` next to steering
/// fields, sometimes a bare array, sometimes anything.
fn page_body() -> impl Strategy<Value = (Value, Option<String>)> {
    prop_oneof![
        5 => (vec(record(), 0..12), vec((steer_path(), steering_value()), 0..6)).prop_map(|(records, fields)| {
            let mut map = Map::new();
            for (path, value) in fields {
                set_path(&mut map, &path, value);
            }
            map.insert("data".into(), Value::Array(records));
            (Value::Object(map), Some("data".to_string()))
        }),
        1 => vec(record(), 0..12).prop_map(|records| (Value::Array(records), None)),
        1 => (json_value(page_key()), optional_path()),
    ]
}

fn page_input<S>(spec: S) -> impl Strategy<Value = PageInput>
where
    S: Strategy<Value = PaginationSpec>,
{
    let role = prop_oneof![
        8 => Just(Role::Chain),
        1 => proptest::sample::select(&[Role::Leaf, Role::Sentinel, Role::Backward][..]),
    ];
    let page_size = prop_oneof![4 => 1u32..=100, 1 => 1u32..=100_000];
    let spec = spec.prop_flat_map(|spec| {
        let position = position_for(&spec);
        (Just(spec), position)
    });
    (spec, page_size, role, page_body(), headers(), link_url()).prop_map(
        |((spec, position), page_size, role, (body, records_path), headers, url)| PageInput {
            spec,
            page_size,
            position,
            role,
            body,
            records_path,
            headers,
            url,
        },
    )
}

/// The pairs `http` accepts, as a `HeaderMap`.
fn header_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_bytes(v.as_bytes()),
        ) {
            map.append(k, v);
        }
    }
    map
}

fn origin() -> Url {
    Url::parse(gen::ORIGIN).expect("the origin parses")
}

/// `link` resolved against the origin, if it stays there.
fn on_origin(link: &str) -> Option<Url> {
    let origin = origin();
    origin
        .join(link)
        .ok()
        .filter(|u| u.origin() == origin.origin())
}

/// One page through its style, as a worker reads it: the records, the
/// target, what comes next and the counts it states.
fn page(input: &PageInput) {
    let spec = &input.spec;
    // Only a validated spec reaches a worker.
    if spec.style().validate().is_err() {
        return;
    }
    let origin = origin();
    // A request URL is on the origin: a URL position is one a style
    // followed (and checked), any other is the spec's own request.
    let url = match &input.position {
        Position::Url { url: Some(u) } => on_origin(u),
        _ => on_origin(&input.url),
    }
    .unwrap_or_else(|| origin.clone());
    let headers = header_map(&input.headers);
    let records = match pagination::records(&input.body, input.records_path.as_deref()) {
        Ok(records) => records,
        // The page is dead-lettered before its style sees it.
        Err(e) => return drop(e.to_string()),
    };
    let page = Page {
        body: &input.body,
        headers: &headers,
        records: Records::of(records),
        url: &url,
        origin: &origin,
    };
    let _ = pagination::target(spec, input.page_size, &input.position);
    let stated = pagination::stated(spec, &page);
    if let Ok(stated) = &stated {
        let _ = totals::first_of(stated, Counts::Records);
        let _ = totals::first_of(stated, Counts::Pages);
    }
    match pagination::next(spec, input.page_size, &input.position, input.role, &page) {
        Err(e) => drop(e.to_string()),
        Ok(next) => {
            let keys: Vec<String> = records.iter().map(|r| r.to_string()).collect();
            let _ = chain_marks(&next, keys.iter().map(String::as_str));
            check_next(input, &origin, &next);
        }
    }
}

/// What every next position must be: of the style, a target the style
/// can request, on the source's origin, and somewhere else than here.
fn check_next(input: &PageInput, origin: &Url, next: &Next) {
    let style = input.spec.style();
    let positions: Vec<&Position> = match next {
        Next::Done => return,
        Next::Chain(p) => vec![p],
        Next::FanOut(all) => {
            assert!(
                all.len() as u64 <= MAX_PAGES_PER_PARTITION,
                "a fan-out of {} pages passed the limit",
                all.len()
            );
            // The ends are where arithmetic breaks; the middle is more of the same.
            all.iter().take(3).chain(all.iter().rev().take(3)).collect()
        }
    };
    assert_eq!(input.role, Role::Chain, "only a chain page leads on");
    let first = style.first();
    for p in positions {
        assert_eq!(
            discriminant(p),
            discriminant(&first),
            "{p:?} is not a position of the {} style",
            style.name()
        );
        assert!(
            style.target(input.page_size, p).is_ok(),
            "the style refuses its own next position {p:?}"
        );
        assert!(
            !same_position(p, &input.position),
            "the page leads to itself: {p:?}"
        );
        if let Position::Url { url } = p {
            let Some(url) = url else {
                panic!("a next position is the first page again")
            };
            let parsed = Url::parse(url).unwrap_or_else(|e| panic!("next URL {url:?}: {e}"));
            assert_eq!(
                parsed.origin(),
                origin.origin(),
                "next URL {url:?} leaves the origin"
            );
        }
    }
}

/// Positions equal, URLs compared as URLs (a generated one may not be
/// spelled as the parser would).
fn same_position(a: &Position, b: &Position) -> bool {
    match (a, b) {
        (Position::Url { url: Some(a) }, Position::Url { url: Some(b) }) => {
            match (Url::parse(a), Url::parse(b)) {
                (Ok(a), Ok(b)) => a == b,
                _ => a == b,
            }
        }
        _ => a == b,
    }
}

fn body_paths_input() -> impl Strategy<Value = (Value, String)> {
    (page_body().prop_map(|(body, _)| body), path())
}

/// The records and the typed fields at a dotted path.
fn body_paths((body, path): &(Value, String)) {
    let found = pagination::lookup(body, path);
    match pagination::records(body, Some(path)) {
        Ok(records) => assert!(
            matches!(found, Some(Value::Array(items)) if items.len() == records.len()),
            "records at {path:?} are not the array there"
        ),
        Err(e) => drop(e.to_string()),
    }
    let _ = pagination::records(body, None).map_err(|e| e.to_string());
    split_like_the_tree(body, Some(path));
    split_like_the_tree(body, None);
    for counts in [Counts::Records, Counts::Pages] {
        if let Ok(Some(statement)) = totals::body_count(body, path, counts) {
            assert_eq!(statement.origin, format!("body {path}"));
        }
    }
}

/// The worker splits a body without building its records as a tree
/// ([`PageBody`]): it must find the records the tree finds, and keep the
/// rest of the body as it was.
fn split_like_the_tree(body: &Value, path: Option<&str>) {
    let Ok(bytes) = serde_json::to_vec(body) else {
        return;
    };
    let split = PageBody::parse(bytes.into(), path).expect("a serialized body is JSON");
    let found = (pagination::records(body, path), split.records());
    match found {
        (Ok(tree), Ok(texts)) => {
            let texts: Vec<Value> = texts
                .map(|t| serde_json::from_str(t).expect("a record's text is JSON"))
                .collect();
            assert_eq!(texts, tree, "records at {path:?}");
        }
        (Err(tree), Err(split)) => assert_eq!(tree, split, "at {path:?}"),
        (tree, split) => panic!(
            "at {path:?} the tree found {:?}, the split {:?}",
            tree.map(<[Value]>::len),
            split.map(|t| t.len())
        ),
    };
}

type TotalsInput = (Vec<(String, String)>, String, String, u64);

fn totals_input() -> impl Strategy<Value = TotalsInput> {
    (headers(), link_url(), param_name(), edgy_u64())
}

/// The counts headers state, and the `Link` header's relations.
fn totals_target((headers, url, param, first_page): &TotalsInput) {
    let map = header_map(headers);
    let records = totals::header_records(&map);
    for statement in &records {
        assert_eq!(statement.counts, Counts::Records);
    }
    let url = on_origin(url).unwrap_or_else(origin);
    let body = Value::Array(Vec::new());
    let page = Page {
        body: &body,
        headers: &map,
        records: Records::of(&[]),
        url: &url,
        origin: &url,
    };
    if let Some(pages) = totals::link_last_page(&page, param, *first_page) {
        assert!(pages.value >= 1, "a last link states {} pages", pages.value);
    }
    let _ = totals::first_of(&records, Counts::Records);
    for (_, value) in headers {
        let _ = next_link(value);
    }
}

// ---------------------------------------------------------------- retry, rate limits

#[derive(Debug, Clone)]
pub struct RetryInput {
    value: String,
    now: SystemTime,
    date: Option<String>,
    status: u16,
    attempt: u32,
    base_ms: u64,
    cap_ms: u64,
    spec: RetrySpec,
    failed_attempts: u32,
    failing_for_ms: u64,
    outcomes: Vec<Option<Option<u64>>>,
}

fn retry_input() -> impl Strategy<Value = RetryInput> {
    let value = prop_oneof![number_text(), http_date(), hostile_string()];
    // Within the bounds a spec is validated to.
    let spec = (
        1u32..=1000,
        0u64..=86_400_000,
        1u64..=600_000,
        0u64..=600_000,
        0.001f64..=10.0,
    )
        .prop_map(
            |(max_attempts, max_elapsed_ms, base_ms, extra, budget_ratio)| RetrySpec {
                max_attempts,
                max_elapsed_ms,
                base_ms,
                cap_ms: (base_ms + extra).min(600_000).max(base_ms),
                budget_ratio,
            },
        );
    let outcomes = vec(option::of(option::of(0u64..2_000_000)), 0..8);
    (
        (value, system_time(), option::of(http_date()), any::<u16>()),
        (any::<u32>(), edgy_u64(), edgy_u64()),
        (spec, 0u32..=1000, edgy_u64(), outcomes),
    )
        .prop_map(
            |(
                (value, now, date, status),
                (attempt, base_ms, cap_ms),
                (spec, failed, failing, outcomes),
            )| {
                RetryInput {
                    value,
                    now,
                    date,
                    status,
                    attempt,
                    base_ms,
                    cap_ms,
                    spec,
                    failed_attempts: failed,
                    failing_for_ms: failing,
                    outcomes,
                }
            },
        )
}

/// `Retry-After`, the backoff arithmetic, and a task's retry budget.
fn retry(input: &RetryInput) {
    if let Some(wait) = parse_retry_after(&input.value, input.now, input.date.as_deref()) {
        assert!(
            !wait.is_zero() && wait <= MAX_RETRY_AFTER,
            "Retry-After {:?} gave {wait:?}",
            input.value
        );
    }
    let _ = classify_status(input.status);
    let (base, cap) = (
        Duration::from_millis(input.base_ms),
        Duration::from_millis(input.cap_ms),
    );
    let ceiling = backoff_ceiling(input.attempt, base, cap);
    assert!(
        ceiling <= cap,
        "a backoff ceiling {ceiling:?} above the cap {cap:?}"
    );
    let jitter = full_jitter(input.attempt, base, cap);
    assert!(
        jitter <= ceiling,
        "a jittered backoff {jitter:?} above its ceiling {ceiling:?}"
    );
    let failing_for = Duration::from_millis(input.failing_for_ms);
    let mut budget = RetryBudget::resume(&input.spec, input.failed_attempts, failing_for);
    let _ = budget.peek_backoff();
    for outcome in &input.outcomes {
        let outcome = match outcome {
            None => Outcome::Transient { reason: "t".into() },
            Some(wait) => Outcome::RateLimited {
                retry_after: wait.map(Duration::from_millis),
            },
        };
        if let Some(delay) = budget.next_delay(&outcome) {
            assert!(
                delay <= Duration::from_millis(input.spec.max_elapsed_ms),
                "a delay of {delay:?} past the budget's {} ms",
                input.spec.max_elapsed_ms
            );
        }
    }
    let _ = budget.failed_attempts();
}

fn ratelimit_input() -> impl Strategy<Value = (Vec<(String, String)>, SystemTime)> {
    (headers(), system_time())
}

/// What a source says about its own budget.
fn ratelimit((headers, now): &(Vec<(String, String)>, SystemTime)) {
    if let Some(budget) = ratelimit_headers::parse(&header_map(headers), *now) {
        if let Some(reset) = budget.reset {
            assert!(
                reset <= MAX_RETRY_AFTER,
                "a reset of {reset:?} is past the cap"
            );
        }
    }
}

// ---------------------------------------------------------------- flatten, keys

fn flat_key() -> BoxedStrategy<String> {
    prop_oneof![
        3 => proptest::sample::select(PAGE_KEYS).prop_map(str::to_string),
        2 => hostile_string(),
    ]
    .boxed()
}

/// A record (usually an object, keys of every kind), the fields of a
/// primary key, and the CSV options it is written with.
pub fn flatten_input() -> impl Strategy<Value = (Value, Vec<String>, CsvOptions)> {
    let record = prop_oneof![
        6 => json_object(flat_key()),
        1 => json_value(flat_key()),
    ];
    (record, vec(path(), 1..3), csv_options())
}

/// A record flattened, keyed, written and read back: what the flattener
/// promises (columns at most `MAX_DEPTH` parts deep, and, when no key has
/// a dot, exactly the record again), and what the writer promises.
pub fn flatten((record, primary_key, options): &(Value, Vec<String>, CsvOptions)) {
    for field in primary_key {
        let _ = key_value(record, field);
    }
    let _ = row_key(record, primary_key).map_err(|e| e.to_string());
    one_pass_agrees_with_the_tree(record, primary_key);
    the_body_scan_counts_what_a_parser_builds(record);
    // Keyed by a field the record has, too: random paths seldom name one.
    for field in record
        .as_object()
        .into_iter()
        .flat_map(|map| map.keys().take(3))
    {
        one_pass_agrees_with_the_tree(record, std::slice::from_ref(field));
    }
    let row = match flatten_record(record) {
        Ok(row) => row,
        Err(e) => {
            assert!(
                !record.is_object() || has_dotted_key(record),
                "a record without dotted keys does not flatten: {e}"
            );
            return;
        }
    };
    if !has_dotted_key(record) {
        for column in row.keys() {
            assert!(
                column.split('.').count() <= MAX_DEPTH,
                "column {column:?} is deeper than {MAX_DEPTH}"
            );
        }
        assert_eq!(
            &unflatten(&row),
            record,
            "the row does not say what the record said"
        );
    }
    let columns: Vec<String> = row.keys().cloned().collect();
    write_and_read_back(options, &columns, &[row]);
}

/// The one-pass flattener, given the record's text (compact, pretty, and
/// with its first key repeated before it), either leaves it to the tree
/// path or gives exactly the tree path's row and key.
fn one_pass_agrees_with_the_tree(record: &Value, primary_key: &[String]) {
    let tree = match (row_key(record, primary_key), flatten_record(record)) {
        (Ok(key), Ok(row)) => serde_json::to_string(&row).ok().map(|staged| (key, staged)),
        _ => None,
    };
    let compact = serde_json::to_string(record).unwrap_or_default();
    let pretty = serde_json::to_string_pretty(record).unwrap_or_default();
    let mut texts = vec![compact.clone(), pretty];
    if let Some(first) = record.as_object().and_then(|map| map.keys().next()) {
        // Read as a tree, the repeat loses to the field after it.
        let first = serde_json::to_string(first).unwrap_or_default();
        texts.push(format!(
            "{{{first}:[0],{}",
            compact.get(1..).unwrap_or_default()
        ));
    }
    // One holder for all of them, as a page uses it.
    let mut flat = FlatRecord::default();
    for text in &texts {
        if flat.flatten_text(text, primary_key, usize::MAX) {
            let fast = (flat.key().to_owned(), flat.staged_json().to_owned());
            assert_eq!(
                Some(&fast),
                tree.as_ref(),
                "one pass and tree differ on {text}"
            );
        }
    }
}

/// The pre-scan of a body's bytes (`limits::scan`, which skips strings a
/// quote or backslash at a time) counts the record's values and nesting
/// exactly, compact or pretty.
fn the_body_scan_counts_what_a_parser_builds(record: &Value) {
    fn values(v: &Value) -> u64 {
        1 + match v {
            Value::Array(items) => items.iter().map(values).sum(),
            Value::Object(map) => map.values().map(values).sum(),
            _ => 0,
        }
    }
    fn depth(v: &Value) -> u32 {
        match v {
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    let texts = [
        serde_json::to_string(record),
        serde_json::to_string_pretty(record),
    ];
    for text in texts.iter().flatten() {
        let shape = pagefleet_shared::limits::scan(text.as_bytes(), u32::MAX);
        assert_eq!(shape.values, values(record), "values counted in {text}");
        assert_eq!(shape.depth, depth(record), "depth measured in {text}");
    }
}

fn has_dotted_key(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.contains('.') || has_dotted_key(v)),
        Value::Array(items) => items.iter().any(has_dotted_key),
        _ => false,
    }
}

/// The record a row of dot-free keys came from: cells at their dotted
/// paths, raw cells parsed back as the JSON they are.
pub fn unflatten(row: &Row) -> Value {
    let mut out = Map::new();
    for (column, cell) in row {
        let value = match cell {
            Cell::Null => Value::Null,
            Cell::Text(t) => Value::String(t.clone()),
            Cell::Raw { r } => serde_json::from_str(r)
                .unwrap_or_else(|e| panic!("raw cell {r:?} is not the JSON it came from: {e}")),
        };
        let parts: Vec<&str> = column.split('.').collect();
        let mut map = &mut out;
        for part in &parts[..parts.len() - 1] {
            let inner = map
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            map = match inner {
                Value::Object(m) => m,
                _ => panic!("column {column:?} runs through a value"),
            };
        }
        map.insert(parts[parts.len() - 1].to_string(), value);
    }
    Value::Object(out)
}

/// A key part: a string, or an integer as JSON text of any length.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyPart {
    Text(String),
    Integer(String),
}

fn key_part() -> impl Strategy<Value = KeyPart> {
    prop_oneof![
        hostile_string().prop_map(KeyPart::Text),
        "-?(0|[1-9][0-9]{0,120})".prop_map(KeyPart::Integer),
        proptest::sample::select(&["0", "-0", "1", "-1", "9", "10", "-10", "99"][..])
            .prop_map(|s| KeyPart::Integer(s.to_string())),
    ]
}

fn row_key_input() -> impl Strategy<Value = (Vec<KeyPart>, Vec<KeyPart>)> {
    (1usize..4).prop_flat_map(|n| (vec(key_part(), n), vec(key_part(), n)))
}

/// A compound key's record, fields `k0`, `k1`, ….
fn keyed(parts: &[KeyPart]) -> (Value, Vec<String>) {
    let mut map = Map::new();
    let mut fields = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let value = match part {
            KeyPart::Text(t) => Value::String(t.clone()),
            KeyPart::Integer(n) => serde_json::from_str(n).expect("an integer is JSON"),
        };
        map.insert(format!("k{i}"), value);
        fields.push(format!("k{i}"));
    }
    (Value::Object(map), fields)
}

/// An integer as (sign, magnitude without leading zeros); -0 is 0.
fn integer(text: &str) -> (bool, &str) {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text),
    };
    let digits = digits.trim_start_matches('0');
    (negative && !digits.is_empty(), digits)
}

fn integer_order(a: &str, b: &str) -> std::cmp::Ordering {
    let ((na, da), (nb, db)) = (integer(a), integer(b));
    let magnitude = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
    match (na, nb) {
        (false, false) => magnitude,
        (true, true) => magnitude.reverse(),
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
    }
}

/// The staging key: two keys are equal exactly when their parts are, and
/// a key of one integer sorts (bytewise, as Postgres `COLLATE "C"` does)
/// as the integer does.
fn row_key_order((a, b): &(Vec<KeyPart>, Vec<KeyPart>)) {
    let ((ra, fa), (rb, fb)) = (keyed(a), keyed(b));
    let ka = row_key(&ra, &fa).expect("a record of strings and integers has a key");
    let kb = row_key(&rb, &fb).expect("a record of strings and integers has a key");
    let same = a.iter().zip(b).all(|pair| match pair {
        (KeyPart::Text(x), KeyPart::Text(y)) => x == y,
        (KeyPart::Integer(x), KeyPart::Integer(y)) => integer(x) == integer(y),
        _ => false,
    });
    assert_eq!(ka == kb, same, "keys {ka:?} and {kb:?} of {a:?} and {b:?}");
    if let ([KeyPart::Integer(x)], [KeyPart::Integer(y)]) = (&a[..], &b[..]) {
        assert_eq!(
            ka.as_bytes().cmp(kb.as_bytes()),
            integer_order(x, y),
            "keys {ka:?} and {kb:?} sort unlike {x} and {y}"
        );
    }
}

// ---------------------------------------------------------------- CSV

/// What the writer is given: options, columns (sometimes repeated, or
/// none) and rows with a cell, or none, for each column.
#[derive(Debug, Clone)]
pub struct CsvInput {
    pub options: CsvOptions,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<Cell>>>,
}

/// Options a spec can hold: every delimiter validation lets through.
pub fn csv_options() -> impl Strategy<Value = CsvOptions> {
    let delimiter = prop_oneof![
        4 => proptest::sample::select(&[',', ';', '\t', '|'][..]),
        1 => (0u8..128).prop_map(|b| match char::from(b) {
            '"' | '\r' | '\n' => ',',
            c => c,
        }),
    ];
    (delimiter, any::<bool>(), any::<bool>()).prop_map(|(delimiter, header, formula_guard)| {
        CsvOptions {
            delimiter,
            header,
            formula_guard,
        }
    })
}

pub fn cell() -> impl Strategy<Value = Option<Cell>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Cell::Null)),
        4 => hostile_string().prop_map(|t| Some(Cell::Text(t))),
        2 => prop_oneof![number_text(), hostile_string()].prop_map(|r| Some(Cell::Raw { r })),
    ]
}

pub fn csv_input() -> impl Strategy<Value = CsvInput> {
    (csv_options(), vec(hostile_string(), 0..6)).prop_flat_map(|(options, columns)| {
        let n = columns.len();
        (Just(options), Just(columns), vec(vec(cell(), n), 0..6)).prop_map(
            |(options, columns, rows)| CsvInput {
                options,
                columns,
                rows,
            },
        )
    })
}

fn rows_of(input: &CsvInput) -> Vec<Row> {
    input
        .rows
        .iter()
        .map(|cells| {
            let mut row = Row::new();
            for (column, cell) in input.columns.iter().zip(cells) {
                if let Some(cell) = cell {
                    row.entry(column.clone()).or_insert_with(|| cell.clone());
                }
            }
            row
        })
        .collect()
}

/// What the writer writes, read back by the strict checker and by the
/// `csv` crate: the same number of records, and in every field exactly
/// the text given (null and a missing cell are empty; text cells and
/// header names carry the formula guard's `'` when it is on and they
/// start like a formula, and nothing else changes).
pub fn csv_writer(input: &CsvInput) {
    write_and_read_back(&input.options, &input.columns, &rows_of(input));
}

/// Writes `rows` under `columns` and checks the file reads back as it
/// must; returns the file.
pub fn write_and_read_back(options: &CsvOptions, columns: &[String], rows: &[Row]) -> Vec<u8> {
    let mut sink = CsvSink::new(Vec::new(), options);
    if options.header {
        sink.write_header(columns).expect("writing to memory");
    }
    for row in rows {
        sink.write_row(columns, row).expect("writing to memory");
    }
    let summary = sink.finish().expect("writing to memory");
    let file = summary.inner;
    assert_eq!(summary.rows, rows.len() as u64);
    assert_eq!(summary.bytes, file.len() as u64);

    let expected = ExpectedCsv {
        options,
        columns,
        max_record_bytes: u64::MAX,
    };
    let check = check_csv(&file[..], &expected)
        .unwrap_or_else(|e| panic!("the checker refuses what the writer wrote: {e}"));
    assert_eq!(
        check.records,
        rows.len() as u64,
        "records the checker counted"
    );
    assert_eq!(check.sha256, summary.sha256, "the checker's digest");
    assert_eq!(check.header, options.header);

    let mut want: Vec<Vec<String>> = Vec::new();
    if options.header {
        want.push(
            columns
                .iter()
                .map(|c| guarded(c, options.formula_guard))
                .collect(),
        );
    }
    for row in rows {
        want.push(
            columns
                .iter()
                .map(|c| match row.get(c) {
                    None | Some(Cell::Null) => String::new(),
                    Some(Cell::Text(t)) => guarded(t, options.formula_guard),
                    Some(Cell::Raw { r }) => r.clone(),
                })
                .collect(),
        );
    }
    // A record of no fields is written as `""`, which any reader sees as
    // one empty field.
    if columns.is_empty() {
        for record in &mut want {
            record.push(String::new());
        }
    }
    assert_eq!(read_with_csv_crate(&file, options.delimiter), want);
    file
}

/// The formula guard as the writer documents it, spelled out here rather
/// than borrowed from the writer, so the property checks the transform:
/// text starting with `=`, `+`, `-`, `@`, TAB or CR gets a leading `'`.
fn guarded(text: &str, formula_guard: bool) -> String {
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if formula_guard && formula {
        format!("'{text}")
    } else {
        text.to_string()
    }
}

/// Every record of `file` as the `csv` crate reads it.
fn read_with_csv_crate(file: &[u8], delimiter: char) -> Vec<Vec<String>> {
    let delimiter = u8::try_from(delimiter).expect("a validated delimiter is ASCII");
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .from_reader(file);
    reader
        .byte_records()
        .map(|record| {
            let record = record.unwrap_or_else(|e| panic!("the csv crate refuses the file: {e}"));
            record
                .iter()
                .map(|f| String::from_utf8(f.to_vec()).expect("fields are UTF-8"))
                .collect()
        })
        .collect()
}

/// A file for the checker: one the writer wrote, then edited at the
/// byte level (or not), read back in chunks of the given sizes (0: an
/// interrupted read), with a record limit.
#[derive(Debug, Clone)]
pub struct CheckInput {
    pub written: CsvInput,
    pub edits: Vec<(usize, Vec<u8>, usize)>,
    pub chunks: Vec<usize>,
    pub max_record_bytes: u64,
}

fn csv_check_input() -> impl Strategy<Value = CheckInput> {
    let edits = vec((any::<usize>(), gen::csv_bytes(), 0usize..4), 0..4);
    let chunks = vec(prop_oneof![4 => 0usize..8, 1 => 1usize..100_000], 1..6);
    let limit = prop_oneof![3 => Just(u64::MAX), 1 => 1u64..300];
    (csv_input(), edits, chunks, limit).prop_map(|(written, edits, chunks, max_record_bytes)| {
        CheckInput {
            written,
            edits,
            chunks,
            max_record_bytes,
        }
    })
}

/// Reads its data in pieces of the given sizes, in turn; a size of 0 is an
/// interrupted read (never twice in a row, so every read makes progress).
struct Chunked<'a> {
    data: &'a [u8],
    sizes: &'a [usize],
    turn: usize,
    interrupted: bool,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.sizes[self.turn % self.sizes.len()];
        self.turn += 1;
        if size == 0 && !self.interrupted && !self.data.is_empty() {
            self.interrupted = true;
            return Err(io::ErrorKind::Interrupted.into());
        }
        self.interrupted = false;
        let n = size.max(1).min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// The strict checker on almost-valid files: how it reads them does not
/// depend on how the reads are cut, an unedited file passes, and a file it
/// passes is one the `csv` crate reads the same number of records and
/// fields from.
fn csv_checker(input: &CheckInput) {
    let written = &input.written;
    let mut sink = CsvSink::new(Vec::new(), &written.options);
    if written.options.header {
        sink.write_header(&written.columns)
            .expect("writing to memory");
    }
    for row in rows_of(written) {
        sink.write_row(&written.columns, &row)
            .expect("writing to memory");
    }
    let file = sink.finish().expect("writing to memory").inner;
    let data = gen::apply_byte_edits(&file, &input.edits);
    let expected = ExpectedCsv {
        options: &written.options,
        columns: &written.columns,
        max_record_bytes: input.max_record_bytes,
    };
    let verdict = |r: Result<_, pagefleet_shared::csv_check::CsvCheckError>| match r {
        Ok(check) => Ok(check),
        Err(e) => Err(e.to_string()),
    };
    let whole = verdict(check_csv(&data[..], &expected));
    let chunked = verdict(check_csv(
        Chunked {
            data: &data,
            sizes: &input.chunks,
            turn: 0,
            interrupted: false,
        },
        &expected,
    ));
    assert_eq!(
        whole, chunked,
        "the verdict depends on how the reads are cut"
    );
    if data == file && input.max_record_bytes == u64::MAX {
        assert!(
            whole.is_ok(),
            "the checker refuses an unedited file: {whole:?}"
        );
    }
    if let Ok(check) = whole {
        assert_eq!(check.bytes, data.len() as u64);
        let records = read_with_csv_crate(&data, written.options.delimiter);
        let header = u64::from(check.header);
        assert_eq!(records.len() as u64, check.records + header, "records");
        let fields = check.fields_per_row.max(1);
        assert!(
            records.iter().all(|r| r.len() == fields),
            "a record without {fields} fields passed"
        );
    }
}
