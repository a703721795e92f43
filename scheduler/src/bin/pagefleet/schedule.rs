//! `pagefleet schedule add|ls|show|pause|resume|rm|run-now`: exports that
//! fire on a cron expression in a time zone.

use std::path::PathBuf;

use clap::Subcommand;

use pagefleet_scheduler::client::ApiClient;
use pagefleet_scheduler::schedules::{BackfillRequest, ScheduleDetail};
use pagefleet_scheduler::terminal::shown;
use pagefleet_shared::schedule::{CatchUpPolicy, OverlapPolicy, ScheduleSpec};

use crate::{bad_input, load_spec, print_json, Failure};

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Schedule an export spec (TOML) on a cron expression.
    Add {
        spec: PathBuf,
        /// Five fields (`0 2 * * *`: 02:00 every day) or six, seconds first.
        #[arg(long)]
        cron: String,
        /// IANA time zone the expression is read in.
        #[arg(long, default_value = "UTC")]
        time_zone: String,
        /// The schedule's name; defaults to the spec's name.
        #[arg(long)]
        name: Option<String>,
        /// While a run is going: skip, queue_one or cancel_running.
        #[arg(long, default_value = "skip")]
        overlap: String,
        /// Slots missed while no scheduler ran: once, all or skip.
        #[arg(long, default_value = "once")]
        catch_up: String,
        /// How late (seconds) a missed slot may still fire.
        #[arg(long, default_value_t = 86_400)]
        catch_up_window: u64,
        /// Pause after this many failed runs in a row (0: never).
        #[arg(long, default_value_t = 3)]
        pause_after: u32,
    },
    /// List the schedules.
    Ls,
    /// A schedule and its recent runs.
    Show { name: String },
    /// Stop firing until resumed.
    Pause { name: String },
    /// Fire again from the next slot (slots passed while paused do not run).
    Resume { name: String },
    /// Remove a schedule (its exports stay).
    Rm { name: String },
    /// Fire one run now, under the schedule's overlap policy.
    RunNow { name: String },
    /// Export a range of the schedule's incremental source as one backfill
    /// (one partition per window; windows too deep for the source split).
    Backfill {
        name: String,
        /// The range's lower bound (exclusive), in the cursor's format.
        #[arg(long)]
        from: String,
        /// Its upper bound (inclusive).
        #[arg(long)]
        to: String,
        /// Each window: <n><unit>, unit s, m, h, d, w or mo.
        #[arg(long, default_value = "1d")]
        window: String,
        /// The source's deepest offset.
        #[arg(long)]
        max_offset: Option<u64>,
        /// Split a window that states more records than this.
        #[arg(long)]
        split_above: Option<u64>,
        /// Wait until the CSV is published.
        #[arg(long)]
        wait: bool,
    },
}

pub async fn run(client: &ApiClient, command: ScheduleCommand, json: bool) -> Result<u8, Failure> {
    match command {
        ScheduleCommand::Add {
            spec,
            cron,
            time_zone,
            name,
            overlap,
            catch_up,
            catch_up_window,
            pause_after,
        } => {
            let export = load_spec(&spec)?;
            let schedule = ScheduleSpec {
                name: name.unwrap_or_else(|| export.name.clone()),
                cron,
                time_zone,
                overlap: overlap.parse::<OverlapPolicy>().map_err(|_| {
                    bad_input(format!(
                        "--overlap {overlap:?}: use skip, queue_one or cancel_running"
                    ))
                })?,
                catch_up: catch_up.parse::<CatchUpPolicy>().map_err(|_| {
                    bad_input(format!("--catch-up {catch_up:?}: use once, all or skip"))
                })?,
                catch_up_window_s: catch_up_window,
                pause_after_failures: pause_after,
                export,
            };
            schedule.validate().map_err(|e| bad_input(e.to_string()))?;
            let record = client.create_schedule(&schedule).await?;
            if json {
                print_json(&record);
            } else {
                println!(
                    "schedule {} created: {} ({}), next slot {}",
                    shown(&record.name),
                    shown(&record.cron),
                    shown(&record.time_zone),
                    record.next_slot
                );
            }
            Ok(0)
        }
        ScheduleCommand::Ls => {
            let schedules = client.schedules().await?;
            if json {
                print_json(&schedules);
                return Ok(0);
            }
            println!(
                "{:<24} {:<20} {:<16} {:<8} NEXT SLOT",
                "NAME", "CRON", "TIME ZONE", "STATE"
            );
            for s in schedules {
                let state = if s.paused { "paused" } else { "active" };
                println!(
                    "{:<24} {:<20} {:<16} {:<8} {}",
                    shown(&s.name),
                    shown(&s.cron),
                    shown(&s.time_zone),
                    state,
                    s.next_slot
                );
            }
            Ok(0)
        }
        ScheduleCommand::Show { name } => shown_detail(client.schedule(&name).await?, json),
        ScheduleCommand::Pause { name } => shown_detail(client.pause_schedule(&name).await?, json),
        ScheduleCommand::Resume { name } => {
            shown_detail(client.resume_schedule(&name).await?, json)
        }
        ScheduleCommand::Rm { name } => {
            let removed = client.remove_schedule(&name).await?;
            if json {
                print_json(&removed);
            } else {
                println!("schedule {} removed (its exports stay)", shown(&name));
            }
            Ok(0)
        }
        ScheduleCommand::Backfill {
            name,
            from,
            to,
            window,
            max_offset,
            split_above,
            wait,
        } => {
            let request = BackfillRequest {
                from,
                to,
                window,
                max_offset,
                split_above,
            };
            let submitted = client.backfill_schedule(&name, &request).await?;
            if json && !wait {
                print_json(&submitted);
                return Ok(0);
            }
            eprintln!("backfill export {} submitted", submitted.id);
            if wait {
                return crate::wait_and_report(client, submitted.id, json).await;
            }
            println!("{}", submitted.id);
            Ok(0)
        }
        ScheduleCommand::RunNow { name } => {
            let ran = client.run_schedule_now(&name).await?;
            if json {
                print_json(&ran);
            } else {
                match ran.export_id {
                    Some(id) => println!("{}: started export {id}", ran.outcome),
                    None => println!("{} (a run is still going; overlap policy)", ran.outcome),
                }
            }
            Ok(0)
        }
    }
}

/// A window bound as the schedule's cursor writes it.
fn render(detail: &ScheduleDetail, units: i64) -> String {
    match detail.cursor_format {
        Some(format) => format.render(units),
        None => units.to_string(),
    }
}

fn shown_detail(detail: ScheduleDetail, json: bool) -> Result<u8, Failure> {
    if json {
        print_json(&detail);
        return Ok(0);
    }
    let s = &detail.schedule;
    println!("schedule  {}", shown(&s.name));
    println!("cron      {} ({})", shown(&s.cron), shown(&s.time_zone));
    println!(
        "policies  overlap {}, catch-up {} within {} s, pause after {} failures",
        s.overlap, s.catch_up, s.catch_up_window_s, s.pause_after_failures
    );
    match &s.paused_reason {
        Some(reason) if s.paused => println!("state     paused: {}", shown(reason)),
        _ if s.paused => println!("state     paused"),
        _ => println!("state     active, next slot {}", s.next_slot),
    }
    println!(
        "failures  {} in a row; {} slots missed",
        s.consecutive_failures, s.missed_slots
    );
    let window_of = |run: &pagefleet_shared::store::ScheduleRun| match run.window_from {
        Some(from) => {
            let to = run
                .window_to
                .map_or("…".to_string(), |to| render(&detail, to));
            format!("({}, {to}]", render(&detail, from))
        }
        None => String::new(),
    };
    println!(
        "{:<27} {:<9} {:<38} {:<12} WINDOW",
        "SLOT", "OUTCOME", "EXPORT", "STATE"
    );
    for run in &detail.runs {
        let export = run.export_id.map(|id| id.to_string()).unwrap_or_default();
        let mut state = run.export_state.map(|s| s.to_string()).unwrap_or_default();
        if run.manual {
            state.push_str(" (run-now)");
        }
        println!(
            "{:<27} {:<9} {:<38} {:<12} {}",
            run.slot.to_string(),
            run.outcome,
            export,
            state,
            window_of(run)
        );
    }
    Ok(0)
}
