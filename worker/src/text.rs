//! Cutting text to a budget of characters, for what is stored or shown (observations, step
//! records, reasons). Counts are in characters, never bytes, so a cut never splits one.

/// The first and last `max / 2` characters of `s`, with a line saying how many were cut (the
/// agent's observations, the critic's input and recorded grading steps are cut this way).
pub fn cap_chars(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let head: String = s.chars().take(max / 2).collect();
    let tail: String = s.chars().skip(n - max / 2).collect();
    format!("{head}\n[... {} characters cut ...]\n{tail}", n - max)
}

/// `s` whole when shorter than `max` characters; from `max` characters on, its first and last
/// `max / 2` with a note of how many were cut between them (mini-swe-agent's SWE-bench
/// observations: `{% if output | length < 10000 %}` whole, else head and tail of 5,000).
pub fn cut_from(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n < max {
        return s.to_string();
    }
    let head: String = s.chars().take(max / 2).collect();
    let tail: String = s.chars().skip(n - max / 2).collect();
    format!("{head}\n[... {} characters cut ...]\n{tail}", n - max)
}

/// At most the first `max` characters of `s`, followed by `...` when it was longer.
pub fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_keeps_head_and_tail() {
        assert_eq!(cap_chars("abcdef", 10), "abcdef");
        assert_eq!(cap_chars("abcdefghij", 4), "ab\n[... 6 characters cut ...]\nij");
    }

    #[test]
    fn observations_are_cut_from_the_limit_on_as_mini_swe_agent_cuts_them() {
        assert_eq!(cut_from("abc", 4), "abc");
        assert_eq!(cut_from("abcd", 4), "ab\n[... 0 characters cut ...]\ncd");
        assert_eq!(cut_from("abcdefghij", 4), "ab\n[... 6 characters cut ...]\nij");
    }

    #[test]
    fn shorten_keeps_the_head_and_marks_the_cut() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcd", 3), "abc...");
        assert_eq!(shorten("äöüß", 2), "äö...");
    }
}
