//! Request bodies, framed by Content-Length or chunked, with `Expect: 100-continue`, the size
//! limit, and `Content-Encoding` (gzip, deflate) inflated within that limit. No I/O: the
//! connection feeds it the bytes it has read and does what it asks (read more, send
//! `100 Continue` first).

use bytes::{Buf, Bytes, BytesMut};

use super::coding::{Coding, Inflater};
use super::{BodyFraming, ChunkedDecoder, HttpError, Limits, RequestHead};

/// Bytes asked of the socket per read when the body's size is not known.
pub const READ_CHUNK: usize = 16 * 1024;
/// The room a Content-Length body starts with, before any of it has arrived.
const FIRST_ROOM: usize = 64 * 1024;

pub struct BodyReader {
    framing: Framing,
    /// The client waits for `100 Continue` before sending its body.
    continue_pending: bool,
    /// Undoes the body's content coding as its bytes arrive.
    inflater: Option<Inflater>,
}

enum Framing {
    Length(usize),
    Chunked(ChunkedDecoder),
}

#[derive(Debug, PartialEq, Eq)]
pub enum BodyStep {
    /// The whole body; bytes after it (a pipelined request) stay in the buffer.
    Done(Bytes),
    /// Read at least once more, into room for `want` bytes; send `100 Continue` first when
    /// `send_continue`.
    Read { want: usize, send_continue: bool },
}

impl BodyReader {
    /// The reader for the body that follows `head`; a declared length over the limit is a 413,
    /// and an unknown content coding a 415, before anything is read.
    pub fn new(head: &RequestHead, limits: &Limits) -> Result<BodyReader, HttpError> {
        let inflater = head
            .header("content-encoding")
            .map(Coding::of_request)
            .transpose()?
            .flatten()
            .map(|coding| Inflater::new(coding, limits.max_body_bytes));
        let framing = match head.framing {
            BodyFraming::Length(length) if length > limits.max_body_bytes => {
                return Err(HttpError::body_too_large(length, limits.max_body_bytes))
            }
            BodyFraming::Length(length) => Framing::Length(length as usize),
            BodyFraming::Chunked => Framing::Chunked(ChunkedDecoder::new(limits.max_body_bytes)),
        };
        Ok(BodyReader {
            framing,
            continue_pending: head.expect_continue,
            inflater,
        })
    }

    /// Takes what it can of the body from the front of `buf`.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<BodyStep, HttpError> {
        let BodyReader {
            framing, inflater, ..
        } = self;
        let Some(inflating) = inflater else {
            return self.read(buf);
        };
        // A compressed body is inflated as it arrives; its compressed bytes are not kept.
        let (done, want) = match framing {
            Framing::Length(remaining) => {
                let take = buf.len().min(*remaining);
                inflating.push(&buf[..take])?;
                buf.advance(take);
                *remaining -= take;
                (*remaining == 0, (*remaining).min(READ_CHUNK))
            }
            Framing::Chunked(decoder) => {
                let used = decoder.feed(buf)?;
                buf.advance(used);
                inflating.push(&decoder.take_body())?;
                (decoder.is_done(), READ_CHUNK)
            }
        };
        match (done, inflater.take()) {
            (true, Some(inflating)) => Ok(BodyStep::Done(inflating.finish()?)),
            (_, still) => {
                *inflater = still;
                Ok(self.more(want))
            }
        }
    }

    fn more(&mut self, want: usize) -> BodyStep {
        BodyStep::Read {
            want,
            send_continue: std::mem::take(&mut self.continue_pending),
        }
    }

    /// The body as sent, or what to read next.
    fn read(&mut self, buf: &mut BytesMut) -> Result<BodyStep, HttpError> {
        let want = match &mut self.framing {
            Framing::Length(length) => {
                if buf.len() >= *length {
                    return Ok(BodyStep::Done(buf.split_to(*length).freeze()));
                }
                // Room grows with the bytes that arrived (doubling), not with what the head
                // claims: a client that declares 256 MiB and sends one byte holds 64 KiB.
                // Doubling copies each byte at most once more on average.
                let missing = *length - buf.len();
                let room = missing.min(buf.len().max(FIRST_ROOM));
                buf.reserve(room);
                room
            }
            Framing::Chunked(decoder) => {
                let used = decoder.feed(buf)?;
                buf.advance(used);
                if decoder.is_done() {
                    return Ok(BodyStep::Done(decoder.take_body()));
                }
                READ_CHUNK
            }
        };
        Ok(self.more(want))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    fn reader(head: &str, limit: u64) -> Result<BodyReader, HttpError> {
        let limits = Limits {
            max_body_bytes: limit,
            ..Limits::default()
        };
        let (parsed, len) = parse_head(head.as_bytes(), &limits).unwrap().unwrap();
        BodyReader::new(
            &parsed.into_head(Bytes::copy_from_slice(&head.as_bytes()[..len])),
            &limits,
        )
    }

    #[test]
    fn a_length_body_reads_into_one_allocation_and_leaves_the_next_request() {
        let mut r = reader("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", 100).unwrap();
        let mut buf = BytesMut::from(&b"he"[..]);
        assert_eq!(
            r.step(&mut buf).unwrap(),
            BodyStep::Read {
                want: 3,
                send_continue: false
            }
        );
        assert!(buf.capacity() >= 5);
        buf.extend_from_slice(b"lloGET");
        assert_eq!(
            r.step(&mut buf).unwrap(),
            BodyStep::Done(Bytes::from_static(b"hello"))
        );
        assert_eq!(&buf[..], b"GET");
    }

    #[test]
    fn continue_is_asked_for_once_and_only_when_the_body_is_not_there() {
        let head = "POST / HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut r = reader(head, 100).unwrap();
        let mut buf = BytesMut::new();
        let asks: Vec<bool> = (0..2)
            .map(|_| match r.step(&mut buf).unwrap() {
                BodyStep::Read { send_continue, .. } => send_continue,
                BodyStep::Done(_) => panic!("no body yet"),
            })
            .collect();
        assert_eq!(asks, [true, false]);
        buf.extend_from_slice(b"2\r\nhi\r\n0\r\n\r\n");
        assert_eq!(
            r.step(&mut buf).unwrap(),
            BodyStep::Done(Bytes::from_static(b"hi"))
        );
        let head = "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        let mut buf = BytesMut::from(&b"hi"[..]);
        assert_eq!(
            reader(head, 100).unwrap().step(&mut buf).unwrap(),
            BodyStep::Done(Bytes::from_static(b"hi"))
        );
    }

    #[test]
    fn compressed_bodies_are_inflated_as_they_arrive_within_the_limit() {
        let plain = vec![7u8; 5000];
        let mut packed = Vec::new();
        let mut encoder =
            flate2::write::GzEncoder::new(&mut packed, flate2::Compression::default());
        std::io::Write::write_all(&mut encoder, &plain).unwrap();
        encoder.finish().unwrap();
        let head = format!(
            "POST / HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
            packed.len()
        );
        let mut r = reader(&head, 10_000).unwrap();
        let (first, rest) = packed.split_at(packed.len() / 2);
        let mut buf = BytesMut::from(first);
        assert!(matches!(r.step(&mut buf).unwrap(), BodyStep::Read { .. }));
        assert!(buf.is_empty(), "the compressed bytes are taken, not kept");
        buf.extend_from_slice(rest);
        buf.extend_from_slice(b"NEXT");
        assert_eq!(r.step(&mut buf).unwrap(), BodyStep::Done(plain.into()));
        assert_eq!(&buf[..], b"NEXT");
        // Chunked, and a limit under the inflated size: 413.
        let head =
            "POST / HTTP/1.1\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut r = reader(head, 4000).unwrap();
        let mut buf = BytesMut::from(format!("{:x}\r\n", packed.len()).as_bytes());
        buf.extend_from_slice(&packed);
        buf.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(r.step(&mut buf).unwrap_err().status, 413);
        assert_eq!(
            reader("POST / HTTP/1.1\r\nContent-Encoding: br\r\n\r\n", 100)
                .err()
                .map(|e| e.status),
            Some(415)
        );
    }

    #[test]
    fn limits_hold_for_both_framings() {
        let err = reader("POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 100).err();
        assert_eq!(err.map(|e| e.status), Some(413));
        let mut r = reader("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 4).unwrap();
        let mut buf = BytesMut::from(&b"5\r\nhello\r\n0\r\n\r\n"[..]);
        assert_eq!(r.step(&mut buf).unwrap_err().status, 413);
    }
}
