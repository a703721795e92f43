//! The export state machine: which state an export moves to, and from
//! which states an operator's action may move it. The store's statements
//! take their `WHERE state = ANY(...)` sets from here, so this file is the
//! one place the transitions are decided.
//!
//! ```text
//!                 ┌───────── pause ─────────┐
//!                 ▼                         │
//!               paused ── resume ──► running ──► finalizing ──► completed
//!                 ▲                  │  ▲  ▲          │   ├───► completed_with_gaps
//!   planning ─────┘                  ▼  │  │          │   └───► unverified
//!      │                       blocked ─┘  └── retry ─┴─► failed
//!      └─► running             (dead letters: replay, or discard + accept gaps)
//!
//! cancel: planning, running, blocked or paused ─► cancelled (no CSV;
//!         staging kept for inspection until the retention passes)
//! ```
//!
//! - A dead-lettered page moves `running` to `blocked`; replaying every dead
//!   page moves it back.
//! - A page an operator discarded is a gap: the export stays `blocked`
//!   until an operator accepts the gaps, then finishes
//!   `completed_with_gaps`, its manifest listing them.
//! - `retry` sends a `failed` export (its CSV could not be written) back to
//!   `finalizing`: every page is still staged.
//! - Staging of a published or cancelled export is removed once the fleet's
//!   `staging_retention_secs` have passed since it ended
//!   ([`STAGING_REMOVABLE`]); a failed export's is kept for `retry`.

use crate::model::ExportState;

/// The ended states whose staged rows nothing reads again: the file is
/// published (or held beside its place), or the export was cancelled. A
/// `failed` export keeps its staging: `retry` writes the file from it.
pub const STAGING_REMOVABLE: [ExportState; 4] = [
    ExportState::Completed,
    ExportState::CompletedWithGaps,
    ExportState::Unverified,
    ExportState::Cancelled,
];

/// [`STAGING_REMOVABLE`] as the text the database stores.
pub fn staging_removable_texts() -> Vec<&'static str> {
    STAGING_REMOVABLE.iter().map(|s| s.as_str()).collect()
}

/// What an operator can do to an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportAction {
    Cancel,
    Pause,
    Resume,
    Retry,
    AcceptGaps,
}

impl ExportAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportAction::Cancel => "cancel",
            ExportAction::Pause => "pause",
            ExportAction::Resume => "resume",
            ExportAction::Retry => "retry",
            ExportAction::AcceptGaps => "accept_gaps",
        }
    }

    /// The states the action applies to.
    pub fn from_states(self) -> &'static [ExportState] {
        use ExportState::*;
        match self {
            ExportAction::Cancel => &[Planning, Running, Blocked, Paused],
            ExportAction::Pause => &[Planning, Running, Blocked],
            ExportAction::Resume => &[Paused],
            ExportAction::Retry => &[Failed],
            ExportAction::AcceptGaps => &[Planning, Running, Blocked, Paused],
        }
    }

    pub fn applies_to(self, state: ExportState) -> bool {
        self.from_states().contains(&state)
    }

    /// The `from_states` as the text the database stores.
    pub fn from_texts(self) -> Vec<&'static str> {
        self.from_states().iter().map(|s| s.as_str()).collect()
    }

    /// Why the action does not apply to an export in `state`.
    pub fn refusal(self, state: ExportState) -> String {
        let why = match state {
            ExportState::Finalizing => "its CSV is being written; wait for it to end",
            s if s.is_terminal() => "it has ended",
            _ => "that is not a state it applies to",
        };
        let from: Vec<&str> = self.from_texts();
        format!(
            "cannot {} an export that is {state}: {why} ({} applies to {})",
            self.as_str().replace('_', " "),
            self.as_str(),
            from.join(", ")
        )
    }
}

/// Where an export goes when its fetching may go on (resumed, or a replay
/// settled its dead pages): `blocked` while a page is dead or a discarded
/// page's gap is not accepted, else `running`.
pub fn fetching_state(dead_pages: bool, unaccepted_gaps: bool) -> ExportState {
    if dead_pages || unaccepted_gaps {
        ExportState::Blocked
    } else {
        ExportState::Running
    }
}

/// How a finished export ends: unverified when the counts disagree beyond
/// what its gaps explain (the file is held), with gaps when pages were
/// discarded and accepted, completed otherwise.
pub fn finished_state(gaps: bool, held: bool) -> ExportState {
    match (gaps, held) {
        (_, true) => ExportState::Unverified,
        (true, false) => ExportState::CompletedWithGaps,
        (false, false) => ExportState::Completed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ExportState::*;

    #[test]
    fn staging_goes_only_where_no_action_can_bring_the_export_back() {
        for state in STAGING_REMOVABLE {
            assert!(state.is_terminal(), "{state}");
            for action in [
                ExportAction::Cancel,
                ExportAction::Pause,
                ExportAction::Resume,
                ExportAction::Retry,
                ExportAction::AcceptGaps,
            ] {
                assert!(
                    !action.applies_to(state),
                    "{} applies to {state}",
                    action.as_str()
                );
            }
        }
        assert!(!STAGING_REMOVABLE.contains(&ExportState::Failed));
    }

    #[test]
    fn no_action_touches_an_ended_export_but_retry_of_a_failed_one() {
        for action in [
            ExportAction::Cancel,
            ExportAction::Pause,
            ExportAction::Resume,
            ExportAction::AcceptGaps,
        ] {
            for state in ExportState::ALL.iter().filter(|s| s.is_terminal()) {
                assert!(!action.applies_to(*state), "{action:?} {state}");
            }
        }
        assert_eq!(ExportAction::Retry.from_states(), &[Failed]);
    }

    #[test]
    fn nothing_interrupts_a_finalizer_and_the_refusal_says_why() {
        for action in [ExportAction::Cancel, ExportAction::Pause] {
            assert!(!action.applies_to(Finalizing));
        }
        assert_eq!(
            ExportAction::Cancel.refusal(Finalizing),
            "cannot cancel an export that is finalizing: its CSV is being written; wait for it \
             to end (cancel applies to planning, running, blocked, paused)"
        );
        assert!(ExportAction::Resume
            .refusal(Completed)
            .contains("it has ended"));
        assert!(ExportAction::AcceptGaps
            .refusal(Cancelled)
            .starts_with("cannot accept gaps"));
    }

    #[test]
    fn pause_and_resume_are_inverse_and_cancel_reaches_a_paused_export() {
        for state in ExportAction::Pause.from_states() {
            assert!(!ExportAction::Resume.applies_to(*state));
        }
        assert!(ExportAction::Resume.applies_to(Paused));
        assert!(ExportAction::Cancel.applies_to(Paused));
        assert!(!ExportAction::Pause.applies_to(Paused));
    }

    #[test]
    fn fetching_goes_on_only_without_dead_pages_or_unaccepted_gaps() {
        assert_eq!(fetching_state(false, false), Running);
        assert_eq!(fetching_state(true, false), Blocked);
        assert_eq!(fetching_state(false, true), Blocked);
    }

    #[test]
    fn a_held_file_outranks_gaps() {
        assert_eq!(finished_state(true, true), Unverified);
        assert_eq!(finished_state(true, false), CompletedWithGaps);
        assert_eq!(finished_state(false, true), Unverified);
        assert_eq!(finished_state(false, false), Completed);
    }
}
