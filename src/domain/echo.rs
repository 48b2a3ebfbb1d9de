//! Values that arrive from the network, as they are shown back (in an error message, a
//! CALLERROR description) or written to a log: at most [`ECHO_BYTES`] bytes, cut at a
//! character boundary and marked as cut. A megabyte sent is then not a megabyte answered
//! and logged.

use std::borrow::Cow;

/// The most of a value that is echoed.
pub const ECHO_BYTES: usize = 200;

/// `value` as it may be shown back: whole when short, else its first and last bytes
/// (at character boundaries, [`ECHO_BYTES`] in all) around `…[cut: N bytes]…`, so that
/// both what the value began with and what a message says at its end are kept.
pub fn echo(value: &str) -> Cow<'_, str> {
    if value.len() <= ECHO_BYTES {
        return Cow::Borrowed(value);
    }
    let mut head = ECHO_BYTES * 3 / 5;
    while !value.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = value.len() - (ECHO_BYTES - ECHO_BYTES * 3 / 5);
    while !value.is_char_boundary(tail) {
        tail += 1;
    }
    Cow::Owned(format!(
        "{}…[cut: {} bytes]…{}",
        &value[..head],
        value.len(),
        &value[tail..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_echoed_whole_and_long_ones_cut_in_the_middle_and_marked() {
        assert_eq!(echo("CP-1"), "CP-1");
        let long = format!("{} is longer than 20 characters", "é".repeat(1000));
        let shown = echo(&long);
        assert!(shown.len() < ECHO_BYTES + 40, "{}", shown.len());
        let marker = format!("…[cut: {} bytes]…", long.len());
        assert!(shown.contains(&marker), "{shown}");
        assert!(shown.starts_with("éé"), "{shown}");
        assert!(shown.ends_with(" is longer than 20 characters"), "{shown}");
    }
}
