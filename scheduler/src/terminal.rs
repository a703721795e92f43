//! Text for an operator's terminal. Reasons, errors and names can carry
//! text a source or a tenant chose; printed raw, an escape sequence in it
//! could rewrite the screen, hide a line, or reorder what is shown. Every
//! such text the CLI prints goes through [`shown`].

use std::fmt::Write as _;

/// `text` with every control character (C0, DEL, C1), line break and
/// bidirectional override written as a visible escape (`\u{1b}`, `\n`).
pub fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_hazard(c) {
            // Writing to a String cannot fail.
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn is_hazard(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_shown_not_run() {
        assert_eq!(
            shown("HTTP 404 \u{1b}[2J\u{1b}]0;pwned\u{7}"),
            "HTTP 404 \\u{1b}[2J\\u{1b}]0;pwned\\u{7}"
        );
        assert_eq!(shown("two\nlines\r"), "two\\nlines\\r");
        assert_eq!(
            shown("\u{9b}31m"),
            "\\u{9b}31m",
            "C1 control sequence introducer"
        );
        assert_eq!(shown("abc\u{202e}fdp.exe"), "abc\\u{202e}fdp.exe");
        assert_eq!(shown("\u{7f}"), "\\u{7f}");
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for text in [
            "orders",
            "Chloé — naïve 🚀",
            "tab\u{a0}nbsp",
            "a \"quoted\" reason",
        ] {
            assert_eq!(shown(text), text);
        }
    }
}
