//! Byte ranges of a parsed head inside the caller's buffer: the lowest piece of the parser,
//! used by the head, header, request and response parsers.

/// Byte range `start..end` of the buffer a head was parsed from. u32 keeps `HeaderSpan` at 16
/// bytes; heads are capped at `MAX_HEAD_BYTES`, far below 4 GiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// The bytes this span covers. `buf` must be the buffer that was parsed; a span that does
    /// not fit `buf` yields an empty slice rather than a panic.
    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize).unwrap_or_default()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start) as usize
    }

    /// True for an empty span.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Span of `part` inside `buf`, from pointer offsets (httparse hands back subslices of the
/// buffer). A slice not inside `buf` (httparse returns a static "" for a reason phrase with
/// obs-text) gets an empty span.
pub(crate) fn span_of(buf: &[u8], part: &[u8]) -> Span {
    let start = (part.as_ptr() as usize).checked_sub(buf.as_ptr() as usize);
    let end = start.and_then(|s| s.checked_add(part.len()));
    match (start, end) {
        (Some(start), Some(end)) if end <= buf.len() => match (u32::try_from(start), u32::try_from(end)) {
            (Ok(start), Ok(end)) => Span { start, end },
            _ => Span::default(),
        },
        _ => Span::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_basics() {
        let buf = b"hello world";
        let s = span_of(buf, &buf[6..11]);
        assert_eq!(s, Span { start: 6, end: 11 });
        assert_eq!(s.get(buf), b"world");
        assert_eq!(s.len(), 5);
        assert!(!s.is_empty());
        assert!(span_of(buf, b"elsewhere").is_empty());
        // Out of range for a shorter buffer: empty, not a panic.
        assert_eq!(s.get(b"hi"), b"");
        let inverted = Span { start: 5, end: 2 };
        assert!(inverted.is_empty());
    }
}
