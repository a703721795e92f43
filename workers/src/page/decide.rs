//! The pure decisions of a page task: what an answer means, whether the task
//! may go, what follows a failed attempt, and how a task that ran out of
//! retries is dead-lettered.
//!
//! Nothing here waits, talks to a service or records a metric; `page.rs`
//! does that around these functions. Keeping them apart is what lets the
//! retry rules be tested without a source, Redis or Postgres.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use pagefleet_shared::guard::Gate;
use pagefleet_shared::limits::{Breach, FleetLimits};
use pagefleet_shared::model::DeadLetterClass;
use pagefleet_shared::pagination::{PageBody, Role};
use pagefleet_shared::retry::{
    classify_status, parse_retry_after, Outcome, RetryBudget, StatusClass,
};
use pagefleet_shared::store::PageWork;

/// The shortest sleep between two looks at an open breaker: a zero wait
/// would spin.
const MIN_GATE_WAIT: Duration = Duration::from_millis(10);

/// The parts of an HTTP answer the decisions look at.
#[derive(Debug, Clone)]
pub struct Answer<'a> {
    pub status: u16,
    pub body: Bytes,
    /// Where the spec says the records are.
    pub records_path: Option<&'a str>,
    /// The `Retry-After` header, when present and text.
    pub retry_after: Option<&'a str>,
    /// The `Date` header, when present and text.
    pub date: Option<&'a str>,
    /// The request URL as logs may show it (no secrets).
    pub shown_url: &'a str,
    /// The fleet's ceilings, which a 2xx body must fit before it is parsed.
    pub limits: &'a FleetLimits,
}

/// What an answer came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A 2xx with a JSON body: land it.
    Land(PageBody),
    /// Anything else, as the retry rules see it (never `Outcome::Success`).
    Failed(Outcome),
    /// A 2xx whose body is over a ceiling of the fleet: refused unparsed,
    /// for good.
    OverLimit(Breach),
}

/// Classifies an answer. A 2xx whose body is not JSON is transient: a
/// truncated or garbled body may well come whole the next time. A 2xx
/// body is measured against the fleet's ceilings first, from its bytes:
/// parsing it is what would cost the memory.
pub fn judge(answer: &Answer<'_>, now: SystemTime) -> Verdict {
    let status = answer.status;
    let url = answer.shown_url;
    match classify_status(status) {
        StatusClass::Success => {
            if let Err(breach) = answer.limits.check_body(&answer.body) {
                return Verdict::OverLimit(breach);
            }
            match PageBody::parse(answer.body.clone(), answer.records_path) {
                Ok(body) => Verdict::Land(body),
                Err(e) => Verdict::Failed(Outcome::Transient {
                    reason: format!("HTTP {status} from {url} with a body that is not JSON ({e})"),
                }),
            }
        }
        StatusClass::RateLimited => Verdict::Failed(Outcome::RateLimited {
            retry_after: answer
                .retry_after
                .and_then(|v| parse_retry_after(v, now, answer.date)),
        }),
        StatusClass::Transient => Verdict::Failed(Outcome::Transient {
            reason: format!("HTTP {status} from {url}"),
        }),
        StatusClass::Permanent => Verdict::Failed(Outcome::Permanent {
            reason: format!("HTTP {status} from {url}"),
        }),
    }
}

/// How many claims of one task may end with their worker lost (killed, out
/// of memory) before the task is dead-lettered instead of fetched again: a
/// page that kills whoever fetches it must not take the fleet down one
/// worker at a time, forever.
pub const MAX_LOST_CLAIMS: u32 = 3;

/// Why a task is dead-lettered unfetched, when its workers were lost too
/// often.
pub fn lost_too_often(work: &PageWork) -> Option<String> {
    (work.lost_claims >= MAX_LOST_CLAIMS).then(|| {
        format!(
            "page {} of partition {}: the workers that claimed it were lost {} times before \
             an outcome (killed, out of memory?); it is not fetched again, so it cannot take \
             down more",
            work.page_no, work.partition_no, work.lost_claims
        )
    })
}

/// Why a page over one of the fleet's ceilings is dead-lettered: the page,
/// then what it measured against which ceiling.
pub fn over_limit(work: &PageWork, breach: &dyn std::fmt::Display) -> String {
    format!(
        "page {} of partition {} {breach}",
        work.page_no, work.partition_no
    )
}

/// Whether a failed answer is the end of the data: a sentinel page (the one
/// past the stated end) answered 404 or 416, as many sources answer a page
/// past their last.
pub fn past_the_end(role: Role, status: Option<u16>) -> bool {
    role == Role::Sentinel && matches!(status, Some(404 | 416))
}

/// The outcome of a request that got no answer (refused, timed out, a body
/// over the limit).
pub fn transport_failure(transient: bool, reason: String) -> Outcome {
    if transient {
        Outcome::Transient { reason }
    } else {
        Outcome::Permanent { reason }
    }
}

/// How an attempt with this status is recorded in the task's history.
pub fn attempt_label(status: u16) -> &'static str {
    match classify_status(status) {
        StatusClass::Success => "success",
        StatusClass::RateLimited => "rate_limited",
        StatusClass::Transient => "transient",
        StatusClass::Permanent => "permanent",
    }
}

/// Whether an answer tells the breaker the source is up: an answer of any
/// class but "transient" does, the successes included.
pub fn source_is_up(status: u16) -> bool {
    classify_status(status) != StatusClass::Transient
}

/// What the breaker and the retry budget allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send now (the breaker is closed, or this is its probe).
    Go,
    /// Look again after this long.
    Wait(Duration),
    /// Too long to hold the task: park it for this long.
    Park(Duration),
}

/// Decides on the breaker's answer. Waits longer than `park_after` free the
/// worker instead of holding the task.
pub fn admission(gate: &Gate, park_after: Duration) -> Admission {
    match *gate {
        Gate::Go | Gate::Probe => Admission::Go,
        Gate::Open(wait) | Gate::NoBudget(wait) if wait > park_after => Admission::Park(wait),
        Gate::Open(wait) | Gate::NoBudget(wait) => Admission::Wait(wait.max(MIN_GATE_WAIT)),
    }
}

/// The `breaker_state` gauge for a gate: 0 closed, 1 half-open, 2 open.
/// A spent retry budget leaves the breaker closed.
pub fn breaker_gauge(gate: &Gate) -> i64 {
    match gate {
        Gate::Go | Gate::NoBudget(_) => 0,
        Gate::Probe => 1,
        Gate::Open(_) => 2,
    }
}

/// What follows a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct AfterFailure {
    /// A 429 asks for quiet: the whole fleet pauses this source for this
    /// long, whether or not this task tries again.
    pub pause_source: Option<Duration>,
    pub next: Next,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Sleep this long, then try again (a transient failure's backoff).
    RetryAfter(Duration),
    /// Try again at once: the source pause set for the 429 is the wait
    /// (the limiter holds every worker's next token until it ends).
    RetryWhenUnpaused,
    DeadLetter {
        class: DeadLetterClass,
        reason: String,
    },
}

/// Decides what follows a failed attempt and spends the retry budget on
/// it. A permanent failure dead-letters at once without touching the budget.
/// `base` is the spec's base backoff, the pause of a 429 the budget has no
/// wait for.
pub fn after_failure(outcome: &Outcome, budget: &mut RetryBudget, base: Duration) -> AfterFailure {
    if let Outcome::Permanent { reason } = outcome {
        return AfterFailure {
            pause_source: None,
            next: Next::DeadLetter {
                class: DeadLetterClass::Permanent,
                reason: reason.clone(),
            },
        };
    }
    let delay = budget.next_delay(outcome);
    let pause_source = match outcome {
        Outcome::RateLimited { retry_after } => Some(delay.or(*retry_after).unwrap_or(base)),
        _ => None,
    };
    let next = match (delay, outcome) {
        (None, _) => {
            let (class, reason) = exhausted(outcome);
            Next::DeadLetter { class, reason }
        }
        (Some(_), Outcome::RateLimited { .. }) => Next::RetryWhenUnpaused,
        (Some(delay), _) => Next::RetryAfter(delay),
    };
    AfterFailure { pause_source, next }
}

/// The dead-letter class and reason of a task whose retry budget ran out
/// on this outcome.
pub fn exhausted(outcome: &Outcome) -> (DeadLetterClass, String) {
    match outcome {
        Outcome::RateLimited { .. } => (
            DeadLetterClass::RateLimited,
            "still rate-limited after the retry cap".to_string(),
        ),
        Outcome::Transient { reason } => (
            DeadLetterClass::Exhausted,
            format!("retries exhausted; last: {reason}"),
        ),
        _ => (DeadLetterClass::Exhausted, "retries exhausted".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagefleet_shared::spec::RetrySpec;

    const URL: &str = "https://api.example.com/orders?page=2";

    fn answer(status: u16, body: &'static str) -> Answer<'static> {
        Answer {
            status,
            body: Bytes::from_static(body.as_bytes()),
            records_path: None,
            retry_after: None,
            date: None,
            shown_url: URL,
            limits: &FleetLimits::DEFAULT,
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Backoff of base 1 ms, cap 1 ms: full jitter draws from [0, 1 ms),
    /// always zero, so the delays are exact.
    fn budget(max_attempts: u32, max_elapsed_ms: u64) -> RetryBudget {
        RetryBudget::new(&RetrySpec {
            max_attempts,
            max_elapsed_ms,
            base_ms: 1,
            cap_ms: 1,
            ..RetrySpec::default()
        })
    }

    fn transient(reason: &str) -> Outcome {
        Outcome::Transient {
            reason: reason.to_string(),
        }
    }

    const BASE: Duration = Duration::from_millis(250);

    #[test]
    fn only_a_sentinel_page_may_be_past_the_end() {
        assert!(past_the_end(Role::Sentinel, Some(404)));
        assert!(past_the_end(Role::Sentinel, Some(416)));
        assert!(!past_the_end(Role::Sentinel, Some(500)));
        assert!(!past_the_end(Role::Sentinel, None));
        assert!(
            !past_the_end(Role::Leaf, Some(404)),
            "a 404 inside the data is an error"
        );
        assert!(!past_the_end(Role::Chain, Some(404)));
    }

    #[test]
    fn a_2xx_over_a_ceiling_is_refused_before_it_is_parsed() {
        let limits = FleetLimits {
            max_json_values: 4,
            max_json_depth: 3,
            ..FleetLimits::DEFAULT
        };
        let judged = |body: &'static str| {
            let answer = Answer {
                limits: &limits,
                ..answer(200, body)
            };
            judge(&answer, at(0))
        };
        // Four values: the array, two records, one field.
        assert!(matches!(judged(r#"[{"id":1},{}]"#), Verdict::Land(_)));
        let Verdict::OverLimit(breach) = judged(r#"[{"id":1},{"id":2}]"#) else {
            panic!("five values are over four");
        };
        assert_eq!(breach.field, "max_json_values");
        // Not even valid JSON: refused for its size, not retried for its syntax.
        let Verdict::OverLimit(breach) = judged("[[[[") else {
            panic!("four levels are over three");
        };
        assert_eq!(breach.field, "max_json_depth");
        // A non-2xx body is not parsed at all, so not measured either.
        let failed = judge(
            &Answer {
                limits: &limits,
                ..answer(503, "[[[[[[1,2,3,4,5]]]]]]")
            },
            at(0),
        );
        assert!(matches!(failed, Verdict::Failed(Outcome::Transient { .. })));
    }

    #[test]
    fn a_2xx_with_json_lands_with_its_body() {
        let body = r#"{"data":[{"id":1}]}"#;
        let with_path = Answer {
            records_path: Some("data"),
            ..answer(200, body)
        };
        let Verdict::Land(page) = judge(&with_path, at(0)) else {
            panic!("a 2xx with JSON lands");
        };
        assert_eq!(page.records().unwrap().collect::<Vec<_>>(), [r#"{"id":1}"#]);
        assert_eq!(page.rest(), &serde_json::json!({"data": []}));
        // Any 2xx, not only 200.
        let Verdict::Land(page) = judge(&answer(203, "[]"), at(0)) else {
            panic!("a 203 with JSON lands");
        };
        assert_eq!(page.records().unwrap().len(), 0);
    }

    #[test]
    fn a_2xx_without_json_is_transient_and_says_so() {
        let Verdict::Failed(Outcome::Transient { reason }) =
            judge(&answer(200, "<html>oops</html>"), at(0))
        else {
            panic!("a body that is not JSON must be retried");
        };
        assert!(
            reason.starts_with(&format!(
                "HTTP 200 from {URL} with a body that is not JSON ("
            )),
            "{reason}"
        );
    }

    #[test]
    fn server_errors_and_timeouts_are_transient_with_the_status_and_url() {
        for status in [408, 500, 503] {
            assert_eq!(
                judge(&answer(status, "{}"), at(0)),
                Verdict::Failed(transient(&format!("HTTP {status} from {URL}"))),
                "{status}"
            );
        }
    }

    #[test]
    fn client_errors_are_permanent_even_with_a_json_body() {
        for status in [400, 401, 403, 404, 422] {
            assert_eq!(
                judge(&answer(status, r#"{"error":"no"}"#), at(0)),
                Verdict::Failed(Outcome::Permanent {
                    reason: format!("HTTP {status} from {URL}")
                }),
                "{status}"
            );
        }
    }

    #[test]
    fn a_429_carries_its_retry_after_measured_against_the_date_header() {
        let mut limited = answer(429, "");
        limited.retry_after = Some("7");
        assert_eq!(
            judge(&limited, at(1_700_000_000)),
            Verdict::Failed(Outcome::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            })
        );
        // An HTTP date 5 s after the source's own clock, which is an hour
        // behind ours: 5 s, not "in the past".
        limited.retry_after = Some("Tue, 14 Nov 2023 22:13:25 GMT"); // 1_700_000_005
        limited.date = Some("Tue, 14 Nov 2023 22:13:20 GMT"); // 1_700_000_000
        assert_eq!(
            judge(&limited, at(1_700_003_600)),
            Verdict::Failed(Outcome::RateLimited {
                retry_after: Some(Duration::from_secs(5))
            })
        );
    }

    #[test]
    fn a_429_without_a_usable_retry_after_has_none() {
        let mut limited = answer(429, "");
        assert_eq!(
            judge(&limited, at(0)),
            Verdict::Failed(Outcome::RateLimited { retry_after: None })
        );
        limited.retry_after = Some("0");
        assert_eq!(
            judge(&limited, at(0)),
            Verdict::Failed(Outcome::RateLimited { retry_after: None })
        );
    }

    #[test]
    fn transport_failures_follow_the_error_kind() {
        assert_eq!(
            transport_failure(true, "connection refused".into()),
            transient("connection refused")
        );
        assert_eq!(
            transport_failure(false, "body over 10 bytes".into()),
            Outcome::Permanent {
                reason: "body over 10 bytes".into()
            }
        );
    }

    #[test]
    fn attempts_are_labelled_by_status_class() {
        assert_eq!(attempt_label(204), "success");
        assert_eq!(attempt_label(429), "rate_limited");
        assert_eq!(attempt_label(502), "transient");
        assert_eq!(attempt_label(404), "permanent");
    }

    #[test]
    fn only_transient_answers_count_against_the_source() {
        assert!(source_is_up(200));
        assert!(source_is_up(429), "a busy source is up");
        assert!(source_is_up(404), "a refusal is an answer");
        assert!(!source_is_up(503));
        assert!(!source_is_up(408));
    }

    #[test]
    fn admission_goes_waits_or_parks() {
        let park_after = Duration::from_secs(5);
        assert_eq!(admission(&Gate::Go, park_after), Admission::Go);
        assert_eq!(admission(&Gate::Probe, park_after), Admission::Go);
        let two = Duration::from_secs(2);
        assert_eq!(
            admission(&Gate::Open(two), park_after),
            Admission::Wait(two)
        );
        assert_eq!(
            admission(&Gate::NoBudget(two), park_after),
            Admission::Wait(two)
        );
        // Exactly the threshold still waits; past it the task parks.
        assert_eq!(
            admission(&Gate::Open(park_after), park_after),
            Admission::Wait(park_after)
        );
        let six = Duration::from_secs(6);
        assert_eq!(
            admission(&Gate::Open(six), park_after),
            Admission::Park(six)
        );
        assert_eq!(
            admission(&Gate::NoBudget(six), park_after),
            Admission::Park(six)
        );
    }

    #[test]
    fn admission_never_spins_on_a_zero_wait() {
        assert_eq!(
            admission(&Gate::Open(Duration::ZERO), Duration::from_secs(5)),
            Admission::Wait(MIN_GATE_WAIT)
        );
    }

    #[test]
    fn the_breaker_gauge_reads_closed_half_open_open() {
        let d = Duration::from_secs(1);
        assert_eq!(breaker_gauge(&Gate::Go), 0);
        assert_eq!(breaker_gauge(&Gate::NoBudget(d)), 0);
        assert_eq!(breaker_gauge(&Gate::Probe), 1);
        assert_eq!(breaker_gauge(&Gate::Open(d)), 2);
    }

    #[test]
    fn a_permanent_failure_dead_letters_without_spending_the_budget() {
        let mut b = budget(1, 60_000);
        let after = after_failure(
            &Outcome::Permanent {
                reason: "HTTP 404 from x".into(),
            },
            &mut b,
            BASE,
        );
        assert_eq!(
            after,
            AfterFailure {
                pause_source: None,
                next: Next::DeadLetter {
                    class: DeadLetterClass::Permanent,
                    reason: "HTTP 404 from x".into()
                }
            }
        );
        // The budget is untouched: no attempt was counted.
        assert_eq!(b.failed_attempts(), 0);
    }

    #[test]
    fn transient_failures_back_off_then_exhaust() {
        let mut b = budget(3, 60_000);
        let fail = transient("HTTP 503 from x");
        for _ in 0..2 {
            assert_eq!(
                after_failure(&fail, &mut b, BASE),
                AfterFailure {
                    pause_source: None,
                    next: Next::RetryAfter(Duration::ZERO)
                }
            );
        }
        assert_eq!(
            after_failure(&fail, &mut b, BASE),
            AfterFailure {
                pause_source: None,
                next: Next::DeadLetter {
                    class: DeadLetterClass::Exhausted,
                    reason: "retries exhausted; last: HTTP 503 from x".into()
                }
            }
        );
        assert_eq!(b.failed_attempts(), 3);
    }

    #[test]
    fn a_resumed_budget_counts_the_failures_before_parking() {
        let spec = RetrySpec {
            max_attempts: 3,
            max_elapsed_ms: 60_000,
            base_ms: 1,
            cap_ms: 1,
            ..RetrySpec::default()
        };
        let mut b = RetryBudget::resume(&spec, 2, Duration::from_secs(1));
        assert!(matches!(
            after_failure(&transient("t"), &mut b, BASE).next,
            Next::DeadLetter {
                class: DeadLetterClass::Exhausted,
                ..
            }
        ));
    }

    #[test]
    fn a_429_pauses_the_source_for_its_retry_after() {
        let mut b = budget(3, 60_000);
        let wait = Duration::from_secs(2);
        assert_eq!(
            after_failure(
                &Outcome::RateLimited {
                    retry_after: Some(wait)
                },
                &mut b,
                BASE
            ),
            AfterFailure {
                pause_source: Some(wait),
                next: Next::RetryWhenUnpaused
            }
        );
        assert_eq!(b.failed_attempts(), 0, "429s do not use up attempts");
    }

    #[test]
    fn a_429_without_retry_after_pauses_for_the_backoff() {
        let mut b = budget(3, 60_000);
        assert_eq!(
            after_failure(&Outcome::RateLimited { retry_after: None }, &mut b, BASE),
            AfterFailure {
                // The budget's backoff (zero with a 1 ms cap), not the base.
                pause_source: Some(Duration::ZERO),
                next: Next::RetryWhenUnpaused
            }
        );
    }

    #[test]
    fn an_exhausted_429_still_pauses_the_source_then_dead_letters() {
        // A 5 s wait does not fit a 1 s budget: no retry, but the source
        // asked for quiet and gets it, for the wait it named.
        let mut b = budget(3, 1_000);
        let wait = Duration::from_secs(5);
        assert_eq!(
            after_failure(
                &Outcome::RateLimited {
                    retry_after: Some(wait)
                },
                &mut b,
                BASE
            ),
            AfterFailure {
                pause_source: Some(wait),
                next: Next::DeadLetter {
                    class: DeadLetterClass::RateLimited,
                    reason: "still rate-limited after the retry cap".into()
                }
            }
        );
    }

    #[test]
    fn an_exhausted_429_without_retry_after_pauses_for_the_base_backoff() {
        let mut b = budget(3, 60_000);
        let limited = Outcome::RateLimited { retry_after: None };
        // A source that never stops throttling: 50 retries, then the cap.
        for _ in 0..50 {
            assert_eq!(
                after_failure(&limited, &mut b, BASE).next,
                Next::RetryWhenUnpaused
            );
        }
        assert_eq!(
            after_failure(&limited, &mut b, BASE),
            AfterFailure {
                pause_source: Some(BASE),
                next: Next::DeadLetter {
                    class: DeadLetterClass::RateLimited,
                    reason: "still rate-limited after the retry cap".into()
                }
            }
        );
    }

    #[test]
    fn exhaustion_names_the_class_and_the_last_reason() {
        assert_eq!(
            exhausted(&Outcome::RateLimited { retry_after: None }),
            (
                DeadLetterClass::RateLimited,
                "still rate-limited after the retry cap".to_string()
            )
        );
        assert_eq!(
            exhausted(&transient("timed out")),
            (
                DeadLetterClass::Exhausted,
                "retries exhausted; last: timed out".to_string()
            )
        );
        assert_eq!(
            exhausted(&Outcome::Success),
            (DeadLetterClass::Exhausted, "retries exhausted".to_string())
        );
    }
}
