//! Running a target: batches of generated cases through proptest's
//! `TestRunner` until the budget (a deadline, or a number of cases) is
//! spent. A panic is caught and reported as a crash with the input proptest
//! shrank it to; each distinct crash (by where it panicked) is reported
//! once, and the search goes on with fresh seeds until the budget is spent.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::time::Instant;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

/// How long a target runs.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// Until this instant (checked between batches), from this seed.
    Until(Instant, u64),
    /// This many cases, from this seed.
    Cases(u32, u64),
}

impl Budget {
    fn seed(&self) -> u64 {
        match self {
            Budget::Until(_, seed) | Budget::Cases(_, seed) => *seed,
        }
    }
}

/// One crash: why, and the smallest input proptest found for it.
#[derive(Debug, Clone)]
pub struct Crash {
    pub message: String,
    pub input: String,
}

/// What a target's run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Test calls, shrinking included.
    pub executions: u64,
    pub crashes: Vec<Crash>,
}

/// Cases per batch when running until a deadline: small enough to stop
/// close to it.
const BATCH: u32 = 64;

/// Distinct crashes kept per target; past that the target stops early.
const MAX_CRASHES: usize = 8;

thread_local! {
    /// While set, a panic on this thread is recorded here, not printed.
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once) the panic hook that records where a target panicked
/// and keeps the thousands of panics of shrinking off the terminal; any
/// other panic is printed as usual.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                let at = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                LAST_PANIC.with(|last| *last.borrow_mut() = Some(at));
            } else {
                previous(info);
            }
        }));
    });
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

/// Runs `test` on cases of `strategy` until `budget` is spent.
pub fn drive<S>(strategy: S, test: fn(&S::Value), budget: &Budget) -> Report
where
    S: Strategy,
    S::Value: Debug,
{
    install_hook();
    let executions = Cell::new(0u64);
    let mut crashes = Vec::new();
    let mut seen = BTreeSet::new();
    let mut batch = 0u64;
    loop {
        let cases = match budget {
            Budget::Until(deadline, _) if Instant::now() >= *deadline => break,
            Budget::Until(..) => BATCH,
            Budget::Cases(n, _) if batch == 0 => *n,
            Budget::Cases(..) => break,
        };
        let config = Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 2_048,
            max_shrink_time: 20_000,
            ..Config::default()
        };
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&budget.seed().to_le_bytes());
        seed[8..16].copy_from_slice(&batch.to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed);
        let mut runner = TestRunner::new_with_rng(config, rng);
        let result = runner.run(&strategy, |value| {
            executions.set(executions.get() + 1);
            QUIET.with(|q| q.set(true));
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| test(&value)));
            QUIET.with(|q| q.set(false));
            outcome.map_err(|payload| {
                let at = LAST_PANIC.with(|last| last.borrow_mut().take());
                let at = at.unwrap_or_default();
                TestCaseError::fail(format!("{at}\t{}", payload_text(payload.as_ref())))
            })
        });
        match result {
            Ok(()) => {}
            Err(TestError::Fail(reason, input)) => {
                let text = reason.message().to_string();
                let (at, message) = text.split_once('\t').unwrap_or(("", &text));
                if seen.insert(at.to_string()) {
                    crashes.push(Crash {
                        message: format!("panicked at {at}: {message}"),
                        input: format!("{input:#?}"),
                    });
                }
            }
            Err(TestError::Abort(reason)) => crashes.push(Crash {
                message: format!("the generator gave up: {reason}"),
                input: String::new(),
            }),
        }
        if crashes.len() >= MAX_CRASHES {
            break;
        }
        batch += 1;
    }
    Report {
        executions: executions.get(),
        crashes,
    }
}
