//! The few JSON bodies this service sends are fixed shapes of numbers and short strings; writing
//! them by hand avoids a serialisation dependency. Strings that may carry outside text (error
//! reasons with file paths) go through [`string`].

use std::fmt::Write;

/// `s` as a JSON string literal, quotes included.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_quotes_backslashes_and_controls() {
        assert_eq!(super::string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(super::string("x\ny\u{1}"), r#""x\ny\u0001""#);
        assert_eq!(super::string("é"), "\"é\"");
    }
}
