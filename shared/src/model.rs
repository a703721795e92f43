//! The domain's names: export and task states, ids, and the messages that
//! travel on the queues.
//!
//! Export states and their transitions:
//!
//! The transitions are decided in one place, [`crate::lifecycle`], whose
//! doc holds the diagram. States are stored as text but only ever written
//! from this enum.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The tenant every export belongs to until API tokens exist.
pub const DEFAULT_TENANT: &str = "default";

/// 1-64 characters of `[A-Za-z0-9_.-]`: safe as a queue or key prefix, a
/// Redis key part, a metric label and a path component. Namespaces, rate
/// keys and tenant ids (which add rules of their own) are all such names.
pub fn is_plain_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Time-ordered ids (UUID v7): listings sort by creation.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // `pad`, not `write_str`: tables align these with `{:<12}`.
                f.pad(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::model::UnknownState;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err($crate::model::UnknownState {
                        kind: stringify!($name),
                        value: other.to_string(),
                    }),
                }
            }
        }
    };
}

/// For the other modules' text-backed enums (pagination roles, ledger counts).
pub(crate) use text_enum;

#[derive(Debug, thiserror::Error)]
#[error("unknown {kind} {value:?} in the database")]
pub struct UnknownState {
    /// The enum the text should have named (`ExportState`, `DeadLetterClass`…).
    pub kind: &'static str,
    pub value: String,
}

text_enum!(
    /// Where an export is in its life.
    ExportState {
        Planning => "planning",
        Running => "running",
        Blocked => "blocked",
        /// An operator paused it: no page is fetched until it is resumed.
        Paused => "paused",
        Finalizing => "finalizing",
        Completed => "completed",
        /// Published without pages an operator discarded and accepted as
        /// gaps; the manifest lists them.
        CompletedWithGaps => "completed_with_gaps",
        /// Every page landed but the counts disagree with what the source
        /// stated: the CSV is held beside the final path, unpublished.
        Unverified => "unverified",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

impl ExportState {
    /// Every state, in the order of an export's life.
    pub const ALL: [ExportState; 10] = [
        ExportState::Planning,
        ExportState::Running,
        ExportState::Blocked,
        ExportState::Paused,
        ExportState::Finalizing,
        ExportState::Completed,
        ExportState::CompletedWithGaps,
        ExportState::Unverified,
        ExportState::Failed,
        ExportState::Cancelled,
    ];

    /// No further change will happen by itself.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ExportState::Completed
                | ExportState::CompletedWithGaps
                | ExportState::Unverified
                | ExportState::Failed
                | ExportState::Cancelled
        )
    }
}

text_enum!(
    /// Where a page task is. `dead` is left by a replay (`dead → queued`)
    /// or a discard (`dead → discarded`).
    TaskState {
        Queued => "queued",
        InFlight => "in_flight",
        Done => "done",
        Dead => "dead",
        /// Given up by an operator, with a reason: a gap in the export.
        Discarded => "discarded",
    }
);

text_enum!(
    /// Why a page was dead-lettered; stored as text in `dead_letters.class`
    /// and shown to operators, who filter and replay by it.
    DeadLetterClass {
        /// The source refused the request for good (400, 401, 403, 404,
        /// 422), or the spec or its secret cannot make a request at all.
        Permanent => "permanent",
        /// Transient failures until the retry budget ran out.
        Exhausted => "exhausted",
        /// Still rate-limited when the retry budget ran out.
        RateLimited => "rate_limited",
        /// A 2xx answer whose body is not a page of this spec.
        BadPage => "bad_page",
        /// Every worker that claimed it was lost before an outcome (killed,
        /// out of memory), as many times as the fleet allows.
        WorkerLost => "worker_lost",
        /// Never sent: the fleet's outbound policy refuses the address
        /// (loopback, private, link-local… not in `outbound_allow`).
        Refused => "refused",
        /// The page is over one of the fleet's ceilings (`[limits]`): its
        /// body, its records or the columns it brings. Refused before it
        /// costs the memory, and never retried: it would break it again.
        OverLimit => "over_limit",
    }
);

/// The requests a page task made: what a landing, a parking or a dead
/// letter adds to its export's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// Every request sent, answered or not.
    pub requests: u32,
    /// Requests after the first, for this task.
    pub retries: u32,
    /// Answers that were 429.
    pub rate_limited: u32,
    /// Where the task's time went.
    #[serde(default)]
    pub time: TimeSpent,
    /// The rate its source key's bucket ran at when the task last took a
    /// token, as the fleet learned it (see `adaptive_rate`), in thousandths
    /// of a request per second (whole, so counts compare exactly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_rate_milli: Option<u64>,
}

impl RequestCounts {
    /// [`RequestCounts::source_rate_milli`] in requests per second.
    pub fn source_rate(&self) -> Option<f64> {
        self.source_rate_milli.map(|m| m as f64 / 1000.0)
    }
}

/// Where a page task's time went, in microseconds (a local source answers
/// in less than a millisecond).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeSpent {
    /// Sending requests and reading their answers.
    pub fetching_us: u64,
    /// Waiting for a rate-limit token, a fleet-wide pause or the breaker.
    pub tokens_us: u64,
    /// Backing off before a retry.
    pub retrying_us: u64,
    /// Queued, until a worker claimed it.
    pub queued_us: u64,
    /// Parked until its source had tokens again.
    pub parked_us: u64,
    /// Turning the answer into rows and storing them (the landing, up to
    /// its last statement).
    #[serde(default)]
    pub landing_us: u64,
}

/// The queues, by role. Their names on the broker carry a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueRole {
    Pages,
    Finalize,
    Dead,
}

impl QueueRole {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueRole::Pages => "pages",
            QueueRole::Finalize => "finalize",
            QueueRole::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pages" => Some(QueueRole::Pages),
            "finalize" => Some(QueueRole::Finalize),
            "dead" => Some(QueueRole::Dead),
            _ => None,
        }
    }
}

/// A message on the pages or finalize queue. It carries ids only: Postgres
/// holds the truth, so a stale or duplicated message can do no harm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TaskMessage {
    Page {
        export_id: Uuid,
        task_id: Uuid,
    },
    Finalize {
        export_id: Uuid,
    },
    DeadLetter {
        export_id: Uuid,
        task_id: Uuid,
        dead_letter_id: Uuid,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_text() {
        for s in ExportState::ALL {
            assert_eq!(s.as_str().parse::<ExportState>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert!("bogus".parse::<ExportState>().is_err());
        assert_eq!(
            "in_flight".parse::<TaskState>().unwrap(),
            TaskState::InFlight
        );
    }

    #[test]
    fn dead_letter_classes_round_trip_through_text() {
        for (class, text) in [
            (DeadLetterClass::Permanent, "permanent"),
            (DeadLetterClass::Exhausted, "exhausted"),
            (DeadLetterClass::RateLimited, "rate_limited"),
            (DeadLetterClass::BadPage, "bad_page"),
            (DeadLetterClass::WorkerLost, "worker_lost"),
            (DeadLetterClass::Refused, "refused"),
            (DeadLetterClass::OverLimit, "over_limit"),
        ] {
            assert_eq!(class.as_str(), text);
            assert_eq!(text.parse::<DeadLetterClass>().unwrap(), class);
            assert_eq!(
                serde_json::to_string(&class).unwrap(),
                format!("\"{text}\"")
            );
        }
        let unknown = "transient".parse::<DeadLetterClass>().unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "unknown DeadLetterClass \"transient\" in the database"
        );
        // Tables pad these to a width.
        assert_eq!(
            format!("[{:<12}]", DeadLetterClass::BadPage),
            "[bad_page    ]"
        );
    }

    #[test]
    fn ids_sort_by_creation() {
        let a = new_id();
        let b = new_id();
        assert!(a < b);
    }
}
