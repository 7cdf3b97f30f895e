//! What an answer to a `Range` request really holds: the range asked for, the whole file
//! from byte 0, or something that cannot be told (then the whole body is asked for instead).
//!
//! An answer's status is never taken at its word. Production XNAT serves `/data` through
//! Restlet 1.1.10 (its answers say `Server: Noelios-Restlet-Engine/1.1.10` and
//! `Accept-Ranges: bytes`; NrgXnat/oasis-scripts issues 10 and 39, from XNAT Central). Restlet's
//! `com.noelios.restlet.application.RangeFilter` answers a one-range GET with 206 and a
//! `Content-Range` for the asked range, and wraps the entity in
//! `com.noelios.restlet.application.RangeRepresentation`, which in 1.1 overrides only
//! `getStream()`: the connector calls `write()`, inherited from `WrapperRepresentation`, which
//! sends the wrapped file whole from byte 0, and `getSize()`, also inherited, gives the whole
//! file's size as `Content-Length`. A reverse proxy in front may honour ranges properly, or
//! strip them (200 and the whole body). So:
//!
//! - a 206 is the asked range only when its `Content-Range` starts at the asked start and
//!   spans the asked length (to the file's end when the file is shorter), and its
//!   `Content-Length` is that same length;
//! - a 206 whose `Content-Length` is the whole file's size (its `Content-Range` total) is the
//!   whole file from byte 0, as is a 200;
//! - any other 206 (no `Content-Length`, no readable `Content-Range`, another start or length)
//!   cannot be read safely, and the caller asks again without `Range`.
//!
//! A range that passes these checks is bounded by its `Content-Length` on the wire (the HTTP
//! client reads that many bytes and no more), so its body cannot run past the range either.

/// An answer's status and the headers that say what its body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer<'a> {
    pub status: u16,
    pub content_range: Option<&'a str>,
    pub content_length: Option<u64>,
}

/// What a body holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judged {
    /// Bytes `start..start + len` of a file of `total` bytes.
    Range { start: u64, len: u64, total: u64 },
    /// The whole file from byte 0 (`total`: its size, when the answer says).
    Whole { total: Option<u64> },
    /// A 206 that cannot be read safely: why.
    Unusable(String),
}

/// Judges an answer to a request for bytes `start..end` (`end` `None`: to the file's end;
/// `start` 0 and `end` `None`: no `Range` was sent).
pub fn judge(start: u64, end: Option<u64>, answer: Answer<'_>) -> Judged {
    if answer.status != 206 {
        return Judged::Whole {
            total: answer.content_length,
        };
    }
    let Some((first, last, total)) = answer.content_range.and_then(content_range) else {
        return Judged::Unusable(format!(
            "a 206 whose Content-Range ({}) does not say which bytes it holds",
            answer.content_range.unwrap_or("none")
        ));
    };
    let Some(length) = answer.content_length else {
        return Judged::Unusable("a 206 without Content-Length".into());
    };
    if length == total {
        // Restlet 1.1's answer (see the module doc), or a range that is the whole file.
        return Judged::Whole { total: Some(total) };
    }
    let len = last - first + 1;
    // The asked range, cut at the file's end.
    let want_end = end.map_or(total, |e| e.min(total));
    if first != start || first + len != want_end || length != len {
        return Judged::Unusable(format!(
            "asked for bytes {start}-{}, got a 206 for bytes {first}-{last}/{total} with \
             Content-Length {length}",
            want_end.saturating_sub(1)
        ));
    }
    Judged::Range {
        start: first,
        len,
        total,
    }
}

/// `bytes FIRST-LAST/TOTAL` (a total of `*`, unknown, is not enough to check a range).
fn content_range(value: &str) -> Option<(u64, u64, u64)> {
    let spec = value.trim().strip_prefix("bytes ")?;
    let (span, total) = spec.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let (first, last, total): (u64, u64, u64) = (
        first.trim().parse().ok()?,
        last.trim().parse().ok()?,
        total.trim().parse().ok()?,
    );
    (first <= last && last < total).then_some((first, last, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(range: &str, length: Option<u64>) -> Answer<'_> {
        Answer {
            status: 206,
            content_range: Some(range),
            content_length: length,
        }
    }

    #[test]
    fn a_whole_body_is_the_whole_file() {
        let ok = Answer {
            status: 200,
            content_range: None,
            content_length: Some(500),
        };
        assert_eq!(judge(100, None, ok), Judged::Whole { total: Some(500) });
        let chunked = Answer {
            content_length: None,
            ..ok
        };
        assert_eq!(judge(0, None, chunked), Judged::Whole { total: None });
    }

    #[test]
    fn a_range_is_taken_when_it_is_the_one_asked_for() {
        let (a, b) = (partial("bytes 1000-1999/5000", Some(1000)), Some(2000));
        let want = Judged::Range {
            start: 1000,
            len: 1000,
            total: 5000,
        };
        assert_eq!(judge(1000, b, a), want);
        // To the end of the file, asked open or past the end.
        let tail = partial("bytes 4000-4999/5000", Some(1000));
        let want = Judged::Range {
            start: 4000,
            len: 1000,
            total: 5000,
        };
        assert_eq!(judge(4000, None, tail), want);
        assert_eq!(judge(4000, Some(9000), tail), want);
    }

    #[test]
    fn restlet_1_1_answers_the_whole_file_from_byte_0() {
        // 206, the asked Content-Range, and the whole file's Content-Length.
        let a = partial("bytes 1000-1999/5000", Some(5000));
        assert_eq!(
            judge(1000, Some(2000), a),
            Judged::Whole { total: Some(5000) }
        );
        let tail = partial("bytes 4000-4999/5000", Some(5000));
        assert_eq!(judge(4000, None, tail), Judged::Whole { total: Some(5000) });
    }

    #[test]
    fn a_206_that_cannot_be_checked_is_not_used() {
        let cases = [
            // No Content-Length: its body could run past the range unseen.
            (partial("bytes 1000-1999/5000", None), 1000, Some(2000)),
            // Another start, or another length.
            (partial("bytes 0-999/5000", Some(1000)), 1000, Some(2000)),
            (partial("bytes 1000-1499/5000", Some(500)), 1000, Some(2000)),
            (
                partial("bytes 1000-2999/5000", Some(2000)),
                1000,
                Some(2000),
            ),
            (partial("bytes 1000-1999/5000", Some(900)), 1000, Some(2000)),
            // Open to the end, but it stops short of it.
            (partial("bytes 1000-1999/5000", Some(1000)), 1000, None),
            // Unknown total, garbled or missing Content-Range.
            (partial("bytes 1000-1999/*", Some(1000)), 1000, Some(2000)),
            (
                partial("bytes 1999-1000/5000", Some(1000)),
                1000,
                Some(2000),
            ),
            (partial("bytes 1000-5000/5000", Some(4001)), 1000, None),
            (partial("1000-1999/5000", Some(1000)), 1000, Some(2000)),
            (
                Answer {
                    status: 206,
                    content_range: None,
                    content_length: Some(1000),
                },
                1000,
                Some(2000),
            ),
        ];
        for (answer, start, end) in cases {
            let got = judge(start, end, answer);
            assert!(
                matches!(got, Judged::Unusable(_)),
                "{answer:?} for {start}..{end:?}: {got:?}"
            );
        }
    }
}
