//! The report `make bench` prints: one summary table of every goal (what
//! was measured, the goal, met or not), then each part's own table.

use std::fmt::Write as _;

/// One line of the summary table: what was measured against its goal.
#[derive(Debug, Clone)]
pub struct Goal {
    pub what: String,
    pub measured: String,
    pub goal: String,
    /// `None` when the row has no pass mark (context for another row).
    pub met: Option<bool>,
}

impl Goal {
    pub fn new(
        what: impl Into<String>,
        measured: impl Into<String>,
        goal: &str,
        met: Option<bool>,
    ) -> Goal {
        Goal {
            what: what.into(),
            measured: measured.into(),
            goal: goal.to_string(),
            met,
        }
    }
}

/// Every part's table and goals, in the order they ran.
#[derive(Debug, Default)]
pub struct Report {
    pub parts: Vec<String>,
    pub goals: Vec<Goal>,
}

impl Report {
    pub fn render(&self) -> String {
        let mut summary = Table::new("", &["<measured", "value", "<goal", "<met"]);
        for g in &self.goals {
            let met = match g.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "",
            };
            summary.row(&[
                g.what.clone(),
                g.measured.clone(),
                g.goal.clone(),
                met.to_string(),
            ]);
        }
        let mut t = summary.finish();
        for part in &self.parts {
            let _ = writeln!(t);
            t.push_str(part);
        }
        t
    }
}

/// A Markdown table under a title line.
pub struct Table {
    text: String,
}

impl Table {
    /// `columns` are the headers; one starting with `<` is left-aligned
    /// (numbers are right-aligned).
    pub fn new(title: &str, columns: &[&str]) -> Table {
        let mut text = String::new();
        if !title.is_empty() {
            let _ = writeln!(text, "{title}");
        }
        let names: Vec<&str> = columns.iter().map(|c| c.trim_start_matches('<')).collect();
        let rule: Vec<&str> = (columns.iter())
            .map(|c| if c.starts_with('<') { "---" } else { "---:" })
            .collect();
        let _ = writeln!(text, "| {} |", names.join(" | "));
        let _ = writeln!(text, "|{}|", rule.join("|"));
        Table { text }
    }

    pub fn row(&mut self, cells: &[String]) {
        let _ = writeln!(self.text, "| {} |", cells.join(" | "));
    }

    pub fn finish(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_aligns_text_left_and_numbers_right() {
        let mut t = Table::new("title", &["<name", "value"]);
        t.row(&["a".to_string(), "1".to_string()]);
        assert_eq!(
            t.finish(),
            "title\n| name | value |\n|---|---:|\n| a | 1 |\n"
        );
    }

    #[test]
    fn the_summary_comes_first_and_says_what_was_not_met() {
        let report = Report {
            parts: vec!["part\n".to_string()],
            goals: vec![
                Goal::new("x", "1", "≥ 2", Some(false)),
                Goal::new("y", "3", "", None),
            ],
        };
        let text = report.render();
        assert!(
            text.starts_with("| measured | value | goal | met |\n"),
            "{text}"
        );
        assert!(text.contains("| x | 1 | ≥ 2 | NO |"), "{text}");
        assert!(text.ends_with("\npart\n"), "{text}");
    }
}
