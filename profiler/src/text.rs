//! Text that a profiled process controls (process and thread names, symbol names from its files and
//! perf maps) or that comes from the command line, made safe to print in folded stacks, SVG and
//! terminal messages.
//!
//! XML 1.0 forbids most control characters even when escaped, so one C0 control in a thread name
//! made the whole SVG unreadable to browsers; an escape sequence in a name could also drive the
//! terminal that prints it. Every C0 and C1 control and DEL is replaced, so are U+FFFE and U+FFFF
//! (XML 1.0 forbids them too: one in a process name made the SVG ill-formed), and bytes that are
//! not UTF-8 (among them encoded surrogates, which XML also forbids) become U+FFFD. This module must not escape XML (the renderer does) nor touch the folded format's
//! separators (`fold` does): it only guarantees printable text.

use std::borrow::Cow;

/// What a control character becomes.
pub const REPLACEMENT: char = '\u{FFFD}';

/// `text` with line breaks and tabs as spaces and every other control character (C0, DEL, C1) and
/// XML-forbidden noncharacter as U+FFFD. Borrows when nothing needs replacing, which is the common
/// case.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_replacing) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| match c {
                '\t' | '\n' | '\r' => ' ',
                c if needs_replacing(c) => REPLACEMENT,
                c => c,
            })
            .collect(),
    )
}

/// Control characters, and the two code points XML 1.0's `Char` production leaves out besides
/// them and the surrogates (which a `str` cannot hold).
fn needs_replacing(c: char) -> bool {
    c.is_control() || matches!(c, '\u{FFFE}' | '\u{FFFF}')
}

/// Bytes of unknown encoding (a kernel `comm`, a symbol name read from a file) as printable text:
/// invalid UTF-8 becomes U+FFFD, then [`printable`] applies.
pub fn printable_bytes(bytes: &[u8]) -> String {
    printable(&String::from_utf8_lossy(bytes)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every C0 control, DEL and every C1 control is replaced; nothing else is.
    #[test]
    fn replaces_every_control_character() {
        for code in (0u32..0x20).chain([0x7f]).chain(0x80..0xa0) {
            let c = char::from_u32(code).unwrap();
            let text = format!("a{c}b");
            let expected = if matches!(c, '\t' | '\n' | '\r') {
                "a b".to_owned()
            } else {
                format!("a{REPLACEMENT}b")
            };
            assert_eq!(printable(&text), expected, "U+{code:04X}");
        }
        let plain = "std::vec::Vec<T>::push \"&' é 日本 ;";
        assert!(matches!(printable(plain), Cow::Borrowed(_)));
        assert_eq!(printable(plain), plain);
    }

    /// The attack name from issue 8: escape sequence and control byte gone, XML specials kept (the
    /// renderer escapes those).
    #[test]
    fn hostile_process_name() {
        assert_eq!(
            printable("<x\u{1}\u{1b}[31m\"&"),
            format!("<x{REPLACEMENT}{REPLACEMENT}[31m\"&")
        );
    }

    /// U+FFFE and U+FFFF are not XML characters even escaped; encoded surrogates (CESU-8 style
    /// `ED A0 80`) are invalid UTF-8. All become U+FFFD; the neighbouring U+FFFD and U+10FFFF stay.
    #[test]
    fn replaces_xml_noncharacters_and_surrogates() {
        assert_eq!(
            printable("a\u{FFFE}b\u{FFFF}c\u{FFFD}\u{10FFFF}"),
            format!("a{REPLACEMENT}b{REPLACEMENT}c\u{FFFD}\u{10FFFF}")
        );
        assert_eq!(printable_bytes(b"x\xef\xbf\xbfy"), "x\u{FFFD}y");
        assert_eq!(
            printable_bytes(b"x\xed\xa0\x80y"),
            "x\u{FFFD}\u{FFFD}\u{FFFD}y"
        );
    }

    /// Invalid UTF-8 (a lone continuation byte, a truncated sequence, an overlong encoding) becomes
    /// U+FFFD; valid multi-byte text survives.
    #[test]
    fn replaces_invalid_utf8() {
        assert_eq!(printable_bytes(b"a\x80b"), "a\u{FFFD}b");
        assert_eq!(printable_bytes(b"ab\xe6\x97"), "ab\u{FFFD}");
        assert_eq!(printable_bytes(b"\xc0\xafx"), "\u{FFFD}\u{FFFD}x");
        assert_eq!(printable_bytes("日本\u{1}".as_bytes()), "日本\u{FFFD}");
        assert_eq!(printable_bytes(b"\xc2\x9b"), "\u{FFFD}", "C1 CSI as UTF-8");
    }
}
