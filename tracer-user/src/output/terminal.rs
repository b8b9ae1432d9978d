//! Text meant for a terminal, made safe: processes choose their names (`/proc/self/comm`,
//! `prctl`), their executables' paths and their arguments, and conntrace runs as root on
//! the operator's terminal. A control character in any of them could clear the screen,
//! set the window title, hide the rows that follow, or forge a row with a newline.
//!
//! Every text writer goes through this module: whole lines through [`write_line`] (the
//! text table, its start and stats lines, the summaries, `diagnose`'s report, the final
//! error line), single values through [`escape`] where a line is not ours to write (`top`'s
//! cells, log messages). JSON needs none of it: its writers escape strings themselves.
use std::{borrow::Cow, fmt, io::Write};

/// Whether a character must not reach a terminal raw: the C0 controls (U+0000–U+001F), DEL
/// (U+007F) and the C1 controls (U+0080–U+009F, which some terminals act on like ESC
/// sequences, e.g. U+009B as CSI), and the backslash that starts our escapes, so that an
/// escaped form cannot be forged by a name that already contains one.
fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\\'
}

/// `s` with every control character written as a visible escape: `\n`, `\r`, `\t`, `\x1b`
/// (other C0 controls and DEL), `\u{9b}` (C1 controls), and `\\` for a backslash.
/// Borrowed, without copying, when there is nothing to escape (the usual case).
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.contains(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", u32::from(c)));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`escape`] for a string already owned: no copy when there is nothing to escape.
pub fn escape_owned(s: String) -> String {
    match escape(&s) {
        Cow::Borrowed(_) => s,
        Cow::Owned(escaped) => escaped,
    }
}

/// Writes one line: the formatted text, escaped as a whole, then a newline. Text writers
/// build their lines with this instead of `writeln!`, so a value that a process chose
/// cannot break out of its line whatever field it sits in; the newline written here is
/// the only control character that reaches the terminal.
pub fn write_line(out: &mut impl Write, line: fmt::Arguments<'_>) -> std::io::Result<()> {
    let text = line
        .as_str()
        .map_or_else(|| Cow::Owned(line.to_string()), Cow::Borrowed);
    out.write_all(escape(&text).as_bytes())?;
    out.write_all(b"\n")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Names and paths a hostile process could choose, each with what it must become.
    pub(crate) const HOSTILE: &[(&str, &str)] = &[
        ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),       // clear the screen
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"), // OSC: window title, BEL
        ("a\r\n12:00:00.000 1 fake", "a\\r\\n12:00:00.000 1 fake"), // forge a row
        ("bs\x08\x08\x08", "bs\\x08\\x08\\x08"),    // backspaces
        ("\u{9b}31m", "\\u{9b}31m"),                // C1 CSI
        ("del\x7f", "del\\x7f"),
        ("nul\0", "nul\\x00"),
        ("tab\there", "tab\\there"),
        ("c:\\x1b", "c:\\\\x1b"), // a backslash cannot forge an escape
    ];

    /// The bytes a terminal acts on: C0 (except the newline that ends a line), DEL, and C1
    /// controls (as UTF-8, `C2 80`–`C2 9F`).
    pub(crate) fn raw_controls(bytes: &[u8]) -> Vec<usize> {
        let mut at = Vec::new();
        for (i, &b) in bytes.iter().enumerate() {
            let c1 = b == 0xC2 && bytes.get(i + 1).is_some_and(|n| (0x80..=0x9F).contains(n));
            if (b < 0x20 && b != b'\n') || b == 0x7F || c1 {
                at.push(i);
            }
        }
        at
    }

    #[test]
    fn hostile_strings_become_visible_escapes() {
        for (raw, want) in HOSTILE {
            let got = escape(raw);
            assert_eq!(got, *want, "{raw:?}");
            assert_eq!(raw_controls(got.as_bytes()), [] as [usize; 0], "{raw:?}");
        }
    }

    #[test]
    fn every_control_character_is_escaped() {
        for c in (0u32..0x20).chain([0x7F]).chain(0x80..0xA0) {
            let c = char::from_u32(c).unwrap();
            let e = escape(&c.to_string()).into_owned();
            assert!(e.starts_with('\\') && e.len() > 1, "{c:?} → {e:?}");
            assert_eq!(raw_controls(e.as_bytes()), [] as [usize; 0], "{c:?}");
        }
    }

    #[test]
    fn ordinary_text_is_borrowed_unchanged() {
        for s in [
            "curl",
            "/usr/bin/python3.11",
            "naïve → ünïcödé 日本",
            "\u{fffd}",
            "",
        ] {
            assert!(matches!(escape(s), Cow::Borrowed(b) if b == s), "{s}");
        }
    }

    /// Invalid UTF-8 (comm comes from the kernel as bytes) is decoded lossily first: the
    /// replacement character is visible and passes; the controls around it do not.
    #[test]
    fn lossily_decoded_bytes_stay_safe() {
        let name = String::from_utf8_lossy(b"a\xff\x1b[1m\xc2\x9bz");
        assert_eq!(escape(&name), "a\u{fffd}\\x1b[1m\\u{9b}z");
    }

    #[test]
    fn a_line_is_escaped_whole_and_ends_with_the_only_newline() {
        let mut out = Vec::new();
        let name = "evil\n\x1b[2K";
        write_line(&mut out, format_args!("{:<8} {}", 42, name)).unwrap();
        write_line(&mut out, format_args!("plain")).unwrap();
        assert_eq!(out, b"42       evil\\n\\x1b[2K\nplain\n");
        assert_eq!(raw_controls(&out), [] as [usize; 0]);
    }
}
