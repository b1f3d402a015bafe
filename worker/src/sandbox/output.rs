//! Capped capture of a command's output: the first half of the budget keeps the head, a ring
//! buffer keeps the tail, and what falls between is counted, never stored. Memory stays at the
//! budget however much the command prints.

use std::collections::VecDeque;

/// Collects a byte stream under a head + tail budget.
#[derive(Debug)]
pub(crate) struct CappedOutput {
    head: Vec<u8>,
    head_cap: usize,
    tail: VecDeque<u8>,
    tail_cap: usize,
    total: u64,
}

/// What [`CappedOutput::finish`] returns: the text and how many bytes were cut from it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Captured {
    pub text: String,
    pub truncated_bytes: u64,
}

impl CappedOutput {
    /// A capture keeping at most `max_bytes` in total: the first `max_bytes / 2` bytes and the
    /// last `max_bytes - max_bytes / 2`.
    pub fn new(max_bytes: usize) -> Self {
        let head_cap = max_bytes / 2;
        let tail_cap = max_bytes - head_cap;
        CappedOutput {
            head: Vec::with_capacity(head_cap.min(64 * 1024)),
            head_cap,
            tail: VecDeque::with_capacity(tail_cap.min(64 * 1024)),
            tail_cap,
            total: 0,
        }
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if self.head.len() < self.head_cap {
            let take = bytes.len().min(self.head_cap - self.head.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        if bytes.is_empty() || self.tail_cap == 0 {
            return;
        }
        if bytes.len() >= self.tail_cap {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.tail_cap..]);
            return;
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.tail_cap);
        self.tail.drain(..overflow);
        self.tail.extend(bytes);
    }

    /// The output as text: non-UTF-8 bytes become U+FFFD. If bytes were dropped, the head and
    /// the tail are joined by a marker line saying how many; the cut is moved to character
    /// boundaries so no character is split (the bytes of a split character count as cut).
    pub fn finish(self) -> Captured {
        let mut head = self.head;
        let mut tail: Vec<u8> = self.tail.into();
        let kept = (head.len() + tail.len()) as u64;
        if kept == self.total {
            head.extend_from_slice(&tail);
            return Captured { text: String::from_utf8_lossy(&head).into_owned(), truncated_bytes: 0 };
        }
        head.truncate(char_boundary_end(&head));
        let skip = char_boundary_start(&tail);
        tail.drain(..skip);
        let truncated = self.total - (head.len() + tail.len()) as u64;
        let mut text = String::from_utf8_lossy(&head).into_owned();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("[... {truncated} bytes of output truncated ...]\n"));
        text.push_str(&String::from_utf8_lossy(&tail));
        Captured { text, truncated_bytes: truncated }
    }
}

/// Length of the longest prefix of `bytes` that does not end inside a multi-byte UTF-8
/// sequence (invalid bytes are left alone: they become U+FFFD either way).
fn char_boundary_end(bytes: &[u8]) -> usize {
    // A UTF-8 sequence is at most 4 bytes: look back at most 3 for its lead byte.
    for back in 1..=3.min(bytes.len()) {
        let b = bytes[bytes.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return bytes.len(),
        };
        return if need > back { bytes.len() - back } else { bytes.len() };
    }
    bytes.len()
}

/// Number of continuation bytes at the start of `bytes` (the rest of a character whose lead
/// byte was cut off), at most 3.
fn char_boundary_start(bytes: &[u8]) -> usize {
    bytes.iter().take(3).take_while(|b| *b & 0xC0 == 0x80).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut c = CappedOutput::new(100);
        c.push(b"hello ");
        c.push(b"world\n");
        assert_eq!(c.finish(), Captured { text: "hello world\n".into(), truncated_bytes: 0 });
    }

    #[test]
    fn output_of_exactly_the_budget_is_not_truncated() {
        let mut c = CappedOutput::new(10);
        c.push(b"0123456789");
        assert_eq!(c.finish().truncated_bytes, 0);
    }

    #[test]
    fn long_output_keeps_head_and_tail_and_counts_the_cut() {
        let mut c = CappedOutput::new(8);
        for chunk in [&b"abc"[..], b"defgh", b"ij", b"klmnopq", b"rstuvwxyz"] {
            c.push(chunk);
        }
        let out = c.finish();
        assert_eq!(out.truncated_bytes, 26 - 8);
        assert_eq!(out.text, "abcd\n[... 18 bytes of output truncated ...]\nwxyz");
    }

    #[test]
    fn a_chunk_larger_than_the_tail_replaces_it() {
        let mut c = CappedOutput::new(4);
        c.push(b"ab");
        c.push(b"0123456789");
        let out = c.finish();
        assert_eq!(out.truncated_bytes, 8);
        assert!(out.text.starts_with("ab\n[... 8 bytes"), "{}", out.text);
        assert!(out.text.ends_with("89"));
    }

    #[test]
    fn cut_never_splits_a_character() {
        // "é" is 2 bytes, "€" 3: a budget of 5 would split them at the cut.
        let s = "ééé€€€€€€€€€€€€";
        let mut c = CappedOutput::new(5);
        for b in s.as_bytes() {
            c.push(std::slice::from_ref(b));
        }
        let out = c.finish();
        assert!(!out.text.contains('\u{FFFD}'), "{:?}", out.text);
        let kept = out.text.lines().next().unwrap().len() + out.text.lines().last().unwrap().len();
        assert_eq!(out.truncated_bytes, (s.len() - kept) as u64);
        assert!(out.text.starts_with("é\n"), "{:?}", out.text);
        assert!(out.text.ends_with("\n€"), "{:?}", out.text);
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        let mut c = CappedOutput::new(100);
        c.push(b"a\xffb\xc3");
        c.push(b"\xa9\n"); // "é" split across two chunks stays whole
        assert_eq!(c.finish().text, "a\u{FFFD}bé\n");
    }

    #[test]
    fn fifty_megabytes_stream_through_a_small_budget() {
        let mut c = CappedOutput::new(1000);
        let chunk = vec![b'y'; 32 * 1024];
        for _ in 0..1600 {
            c.push(&chunk);
        }
        assert!(c.head.capacity() <= 64 * 1024 && c.tail.capacity() <= 64 * 1024);
        let out = c.finish();
        assert_eq!(out.truncated_bytes, 1600 * 32 * 1024 - 1000);
    }
}
