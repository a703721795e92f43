//! The generators: proptest strategies for what reaches pagefleet from
//! outside — arbitrary text and bytes, and structure-aware inputs (JSON
//! with nesting, specs a field away from valid, header values in the forms
//! the parsers look for, URLs on and off the source's origin).
//!
//! Structure-aware generators matter because random bytes almost never get
//! past the first check of a parser; a spec with one field wrong, or a
//! `Link` header with a huge page number, reaches the code behind it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

/// The origin the pagination targets request from; generated URLs are on
/// it most of the time, and sometimes on a neighbour that must be refused.
pub const ORIGIN: &str = "http://api.test:8080/v1/items";

/// Characters that have a meaning to some parser here: CSV quoting and
/// line ends, the formula guard's leads, the staging key's separators,
/// path dots, `Link` brackets, header separators, and a few multi-byte ones.
const SPECIAL: &[char] = &[
    ',',
    '"',
    '\r',
    '\n',
    '\0',
    '=',
    '+',
    '-',
    '@',
    '\t',
    '\'',
    ';',
    '<',
    '>',
    '.',
    '/',
    '?',
    '&',
    '#',
    '%',
    '\\',
    ' ',
    '*',
    '[',
    ']',
    '{',
    '}',
    ':',
    '\u{1}',
    '\u{1f}',
    '\u{7f}',
    'é',
    '\u{feff}',
    '\u{2028}',
    '😀',
    '\u{10ffff}',
];

fn special_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::sample::select(SPECIAL),
        2 => proptest::char::range('a', 'z'),
        1 => proptest::char::range('0', '9'),
        1 => any::<char>(),
    ]
}

/// Text that is hard on parsers: mostly special characters, sometimes
/// anything at all, sometimes a number in one of its many spellings.
pub fn hostile_string() -> BoxedStrategy<String> {
    prop_oneof![
        4 => vec(special_char(), 0..24).prop_map(String::from_iter),
        2 => any::<String>(),
        2 => number_text(),
        1 => Just(String::new()),
    ]
    .boxed()
}

/// A number as a source might spell it: huge, negative, fractional, with an
/// exponent, padded, or just past a boundary.
pub fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        "-?[0-9]{15,45}",
        "-?[0-9]{1,4}\\.[0-9]{0,20}([eE][+-]?[0-9]{1,4})?",
        " ?[0-9]{1,3} ?",
        proptest::sample::select(
            &[
                "0",
                "-0",
                "1",
                "-1",
                "18446744073709551615",
                "18446744073709551616",
                "9223372036854775807",
                "9223372036854775808",
                "-9223372036854775809",
                "1e309",
                "-1e309",
                "1e-400",
                "NaN",
                "inf",
                "-inf",
                "+5",
                "0x10",
                "1_000",
                "00007",
                "4.9e-324",
                "1.7976931348623157e308",
                "",
            ][..]
        )
        .prop_map(str::to_string),
    ]
}

/// A JSON number; with serde_json's `arbitrary_precision` its exact text
/// is kept, as a source's would be.
pub fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1.0e6f64..1.0e6).prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "-?(0|[1-9][0-9]{0,45})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,4})?"
            .prop_map(|t| serde_json::from_str::<Value>(&t).unwrap_or(Value::Null)),
    ]
}

/// Keys the pagination styles and the spec look for, so generated bodies
/// hit the fields that steer paging.
pub const PAGE_KEYS: &[&str] = &[
    "data",
    "items",
    "total",
    "count",
    "meta",
    "next",
    "next_cursor",
    "cursor",
    "has_more",
    "id",
    "page",
    "pages",
    "total_pages",
    "links",
    "done",
    "results",
    "last",
    "a",
    "b",
];

pub fn page_key() -> BoxedStrategy<String> {
    prop_oneof![
        4 => proptest::sample::select(PAGE_KEYS).prop_map(str::to_string),
        1 => hostile_string(),
    ]
    .boxed()
}

/// Any JSON value up to a dozen levels deep (deeper than the flattener's
/// column limit) with keys from `key`.
pub fn json_value<K>(key: K) -> impl Strategy<Value = Value>
where
    K: Strategy<Value = String> + Clone + 'static,
{
    json_value_within(key, 12, 96)
}

/// A JSON value at most `depth` levels deep, of about `size` nodes.
pub fn json_value_within<K>(key: K, depth: u32, size: u32) -> impl Strategy<Value = Value>
where
    K: Strategy<Value = String> + Clone + 'static,
{
    let leaf = prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        2 => json_number(),
        3 => hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, size, 6, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((key.clone(), inner), 0..6).prop_map(|pairs| Value::Object(Map::from_iter(pairs))),
        ]
    })
}

/// A JSON object: what a record (or a response body) usually is.
pub fn json_object<K>(key: K) -> impl Strategy<Value = Value>
where
    K: Strategy<Value = String> + Clone + 'static,
{
    vec((key.clone(), json_value(key)), 0..8).prop_map(|pairs| Value::Object(Map::from_iter(pairs)))
}

/// A small JSON object, a few levels deep: a record among many on a page.
pub fn small_object<K>(key: K) -> impl Strategy<Value = Value>
where
    K: Strategy<Value = String> + Clone + 'static,
{
    vec((key.clone(), json_value_within(key, 3, 8)), 0..4)
        .prop_map(|pairs| Value::Object(Map::from_iter(pairs)))
}

/// A URL or URL reference as a source might put it in a body or a `Link`
/// header: on the origin with page parameters, relative, on another host,
/// or not a URL at all.
pub fn link_url() -> impl Strategy<Value = String> {
    let base = proptest::sample::select(
        &[
            "http://api.test:8080/v1/items",
            "http://api.test:8080/v1/other",
            "/v1/items",
            "",
            "http://api.test/v1/items",
            "https://api.test:8080/v1/items",
            "http://evil.test:8080/v1/items",
            "//evil.test/v1/items",
            "HTTP://API.TEST:8080/v1/items",
            "http://api.test:8080/v1/items/../../x",
            "javascript:alert(1)",
            "http://[::1]:8080/",
            "http://user:pw@api.test:8080/v1/items",
        ][..],
    );
    let param = proptest::sample::select(
        &[
            "page", "_page", "per_page", "limit", "_limit", "offset", "cursor", "q",
        ][..],
    );
    let value = prop_oneof![3 => number_text(), 1 => hostile_string()];
    prop_oneof![
        4 => (base, vec((param, value), 0..4)).prop_map(|(base, query)| {
            let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if query.is_empty() {
                base.to_string()
            } else {
                format!("{base}?{}", query.join("&"))
            }
        }),
        1 => hostile_string(),
    ]
}

/// One value of a `Link` header: several links, each with relations the
/// styles look for (or not), parameters and noise.
pub fn link_header_value() -> impl Strategy<Value = String> {
    let rel = proptest::sample::select(
        &[
            "rel=\"next\"",
            "rel=\"last\"",
            "rel=\"first\"",
            "rel=\"prev\"",
            "rel=\"next last\"",
            "REL=NEXT",
            "rel=last",
            "rel=\"\"",
            "rel",
            "title=\"next\"",
        ][..],
    );
    let link = (link_url(), vec(rel, 0..3)).prop_map(|(url, rels)| {
        let mut text = format!("<{url}>");
        for rel in rels {
            text.push_str("; ");
            text.push_str(rel);
        }
        text
    });
    prop_oneof![
        4 => vec(link, 0..4).prop_map(|links| links.join(", ")),
        1 => hostile_string(),
    ]
}

/// A time from the epoch to the last second HTTP dates can name (9999).
pub fn system_time() -> impl Strategy<Value = SystemTime> {
    prop_oneof![(1_600_000_000u64..1_900_000_000), (0u64..=253_402_300_799),]
        .prop_map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
}

/// An HTTP date (IMF-fixdate), sometimes in an obsolete form or garbled.
pub fn http_date() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => system_time().prop_map(httpdate::fmt_http_date),
        1 => system_time().prop_map(|t| httpdate::fmt_http_date(t).replace("GMT", "UTC")),
        1 => Just("Sunday, 06-Nov-94 08:49:37 GMT".to_string()),
        1 => Just("Sun Nov  6 08:49:37 1994".to_string()),
        1 => hostile_string(),
    ]
}

/// The headers that the parsers read, with values in their own forms, and
/// anything else now and then. Kept as text pairs so a shrunk input prints
/// readably; [`crate::targets`] turns them into a `HeaderMap`, skipping
/// pairs `http` would refuse anyway.
pub fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    vec(header(), 0..6)
}

fn header() -> impl Strategy<Value = (String, String)> {
    let counted = proptest::sample::select(
        &[
            "x-total-count",
            "x-total",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "ratelimit-limit",
            "ratelimit-remaining",
            "ratelimit-reset",
        ][..],
    );
    let cursor = proptest::sample::select(&["x-next-cursor", "x-cursor"][..]);
    let named = |name: &'static str| Just(name.to_string());
    prop_oneof![
        3 => (named("link"), link_header_value()),
        2 => (counted.prop_map(str::to_string), number_text()),
        1 => (named("content-range"), content_range()),
        2 => (named("ratelimit"), ratelimit_combined()),
        1 => (named("retry-after"), prop_oneof![number_text(), http_date()]),
        1 => (named("date"), http_date()),
        1 => (cursor.prop_map(str::to_string), hostile_string()),
        1 => ("[a-z-]{1,12}", hostile_string()),
    ]
}

fn content_range() -> impl Strategy<Value = String> {
    let unit = proptest::sample::select(&["items", "bytes", "records", "", "ITEMS"][..]);
    let total = prop_oneof![number_text(), Just("*".to_string())];
    prop_oneof![
        3 => (unit, number_text(), number_text(), total)
            .prop_map(|(u, a, b, t)| format!("{u} {a}-{b}/{t}")),
        1 => hostile_string(),
    ]
}

/// `RateLimit: limit=100, remaining=5, reset=3` and the structured
/// `"default";r=5;t=3` form, with unknown keys and odd numbers.
fn ratelimit_combined() -> impl Strategy<Value = String> {
    let key = proptest::sample::select(
        &[
            "limit",
            "remaining",
            "reset",
            "q",
            "r",
            "t",
            "LIMIT",
            "x",
            "\"default\"",
            "",
        ][..],
    );
    let sep = proptest::sample::select(&[", ", ";", ",", " ; "][..]);
    prop_oneof![
        4 => (vec((key, number_text()), 0..5), sep).prop_map(|(parts, sep)| {
            let parts: Vec<String> = parts.iter().map(|(k, v)| format!("{k}={v}")).collect();
            parts.join(sep)
        }),
        1 => hostile_string(),
    ]
}

/// A `u64` near the places where arithmetic on it breaks.
pub fn edgy_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..50,
        1 => any::<u64>(),
        1 => (0u64..50).prop_map(|d| u64::MAX - d),
        1 => (0u64..50).prop_map(|d| (1u64 << 32).wrapping_sub(25).wrapping_add(d)),
        1 => Just(1_000_000u64),
    ]
}

/// A dotted path as a spec names one: mostly the keys bodies have.
pub fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => vec(proptest::sample::select(PAGE_KEYS), 1..3).prop_map(|parts| parts.join(".")),
        1 => hostile_string(),
    ]
}

pub fn optional_path() -> impl Strategy<Value = Option<String>> {
    option::of(path())
}

/// The paths a style steers by, shared by the generated specs and bodies so
/// the one finds the other; any path now and then.
pub fn steer_path() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => proptest::sample::select(
            &["total", "next", "next_cursor", "has_more", "meta.total", "done", "total_pages"][..]
        )
        .prop_map(str::to_string),
        1 => path(),
    ]
}

/// Mostly nothing: a valid input edited or mutated at most a little.
pub fn few<T: std::fmt::Debug + Clone + 'static>(
    some: impl Strategy<Value = Vec<T>> + 'static,
) -> impl Strategy<Value = Vec<T>> {
    prop_oneof![2 => Just(Vec::new()), 3 => some]
}

/// Byte-level edits of a text, for mutating something valid into something
/// almost valid.
#[derive(Debug, Clone)]
pub enum Edit {
    Insert(usize, String),
    Delete(usize, usize),
    Duplicate(usize, usize),
}

pub fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        3 => (any::<usize>(), hostile_string()).prop_map(|(at, s)| Edit::Insert(at, s)),
        2 => (any::<usize>(), 1usize..8).prop_map(|(at, n)| Edit::Delete(at, n)),
        1 => (any::<usize>(), 1usize..40).prop_map(|(at, n)| Edit::Duplicate(at, n)),
    ];
    vec(edit, 0..4)
}

/// `text` with `edits` applied, each position taken modulo the length and
/// moved back to a character boundary.
pub fn apply_edits(text: &str, edits: &[Edit]) -> String {
    let mut text = text.to_string();
    let boundary = |text: &str, at: usize| {
        let mut at = at % (text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        at
    };
    for edit in edits {
        match edit {
            Edit::Insert(at, s) => {
                let at = boundary(&text, *at);
                text.insert_str(at, s);
            }
            Edit::Delete(at, n) | Edit::Duplicate(at, n) => {
                let start = boundary(&text, *at);
                let end = boundary(&text, start.saturating_add(*n).min(text.len()));
                let piece = text[start..end].to_string();
                if matches!(edit, Edit::Delete(..)) {
                    text.replace_range(start..end, "");
                } else {
                    text.insert_str(end, &piece);
                }
            }
        }
    }
    text
}

/// Byte-level edits of bytes: the same, without the boundaries, so invalid
/// UTF-8 comes out too.
pub fn apply_byte_edits(bytes: &[u8], edits: &[(usize, Vec<u8>, usize)]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for (at, insert, delete) in edits {
        let at = at % (out.len() + 1);
        let end = at.saturating_add(*delete).min(out.len());
        out.splice(at..end, insert.iter().copied());
    }
    out
}

/// Bytes that mean something to a CSV reader, and some that break UTF-8.
pub fn csv_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => proptest::sample::select(&[b'"', b',', b'\r', b'\n', b';', b'\t', b'a', b'\''][..]),
        1 => proptest::sample::select(&[0xC3u8, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80, 0xFF, 0x80][..]),
        1 => any::<u8>(),
    ];
    vec(byte, 0..12)
}

/// A spec that validates, as JSON, in every style, with its optional
/// sections sometimes present: the starting point the spec targets mutate.
pub fn valid_spec() -> impl Strategy<Value = Value> {
    let pagination = prop_oneof![
        (option::of(path()), option::of("[a-z_]{1,8}"))
            .prop_map(|(total, param)| serde_json::json!({
                "style": "offset", "total_path": total, "offset_param": param.unwrap_or("offset".into()),
            })),
        (0u64..3, option::of(path())).prop_map(|(first, total)| serde_json::json!({
            "style": "page_number", "first_page": first, "total_pages_path": total,
        })),
        Just(serde_json::json!({"style": "cursor", "cursor_path": "next_cursor"})),
        Just(serde_json::json!({"style": "cursor", "cursor_header": "x-next-cursor"})),
        Just(serde_json::json!({"style": "last_record", "field": "id"})),
        Just(serde_json::json!({"style": "next_url", "next_path": "next", "done_path": "done"})),
        (option::of(0u64..3)).prop_map(|first| match first {
            Some(first) => serde_json::json!({"style": "link_header", "page_param": "page", "first_page": first}),
            None => serde_json::json!({"style": "link_header"}),
        }),
    ];
    let partitions = vec(
        btree_map("[a-z]{1,6}", hostile_string(), 1..3)
            .prop_map(|params| serde_json::json!({ "params": params })),
        0..3,
    );
    let delimiter = proptest::sample::select(&[",", ";", "\t", "|", " ", "'", "="][..]);
    (
        "[a-z][a-z0-9_-]{0,15}",
        pagination,
        proptest::sample::select(&["/items", "", "/v1/a b", "/x?y=1"][..]),
        partitions,
        (0.001f64..100_000.0, 1u32..10_000),
        option::of(vec("[a-z][a-z._]{0,8}", 1..4)),
        delimiter,
        any::<bool>(),
        option::of(path()),
    )
        .prop_map(
            |(
                name,
                pagination,
                path,
                partitions,
                (rate, burst),
                columns,
                delimiter,
                header,
                total,
            )| {
                let mut spec = serde_json::json!({
                    "name": name,
                    "source": {
                        "base_url": "http://api.test:8080/v1",
                        "path": path,
                        "records_path": "data",
                        "auth": {"type": "bearer", "secret": {"env": "TOKEN"}},
                    },
                    "pagination": pagination,
                    "primary_key": ["id"],
                    "page_size": 100,
                    "partitions": partitions,
                    "rate_limit": {"rate": rate, "burst": burst},
                    "csv": {"delimiter": delimiter, "header": header},
                    "output": {"dir": "out"},
                });
                if let Some(columns) = columns {
                    spec["columns"] = Value::from(columns);
                }
                if let Some(total) = total {
                    spec["verify"] = serde_json::json!({"total_path": total});
                }
                spec
            },
        )
}

/// A change to a JSON document: at the place `at` picks (each step an
/// index into an object's keys or an array's items), replace the value,
/// drop it, or add an unknown field.
#[derive(Debug, Clone)]
pub enum Mutation {
    Replace(Vec<usize>, Value),
    Remove(Vec<usize>),
    Add(Vec<usize>, String, Value),
}

pub fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let at = || vec(any::<usize>(), 1..4);
    let value = || {
        prop_oneof![
            3 => json_value(hostile_string()),
            1 => json_number(),
            1 => link_url().prop_map(Value::String),
        ]
    };
    let mutation = prop_oneof![
        3 => (at(), value()).prop_map(|(at, v)| Mutation::Replace(at, v)),
        1 => at().prop_map(Mutation::Remove),
        1 => (at(), hostile_string(), value()).prop_map(|(at, k, v)| Mutation::Add(at, k, v)),
    ];
    vec(mutation, 0..3)
}

pub fn apply_mutations(mut value: Value, mutations: &[Mutation]) -> Value {
    for mutation in mutations {
        let at = match mutation {
            Mutation::Replace(at, _) | Mutation::Remove(at) | Mutation::Add(at, _, _) => at,
        };
        mutate_at(&mut value, at, mutation);
    }
    value
}

fn mutate_at(value: &mut Value, at: &[usize], mutation: &Mutation) {
    let Some((&step, rest)) = at.split_first() else {
        return;
    };
    match value {
        Value::Object(map) if !map.is_empty() => {
            let Some(key) = map.keys().nth(step % map.len()).cloned() else {
                return;
            };
            let descend = rest.is_empty()
                || !matches!(map.get(&key), Some(Value::Object(_) | Value::Array(_)));
            if descend {
                match mutation {
                    Mutation::Replace(_, v) => {
                        map.insert(key, v.clone());
                    }
                    Mutation::Remove(_) => {
                        map.remove(&key);
                    }
                    Mutation::Add(_, k, v) => {
                        map.insert(k.clone(), v.clone());
                    }
                }
            } else if let Some(inner) = map.get_mut(&key) {
                mutate_at(inner, rest, mutation);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let i = step % items.len();
            if rest.is_empty() {
                if let Mutation::Replace(_, v) = mutation {
                    items[i] = v.clone();
                } else {
                    items.remove(i);
                }
            } else {
                mutate_at(&mut items[i], rest, mutation);
            }
        }
        _ => {}
    }
}
