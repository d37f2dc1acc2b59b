//! `Transfer-Encoding: chunked` request bodies, decoded incrementally into one buffer.
//!
//! Chunk data is copied once (memcpy per chunk) into a contiguous body, so tensors can
//! still be sliced from a single buffer; Content-Length bodies avoid even that copy.

use bytes::Bytes;

use super::HttpError;

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;
/// Most bytes of chunk extensions (`;name=value` after a size) in one body, and of trailer
/// lines after it: neither carries anything tensord reads, so each is capped as hyper caps
/// them, rather than only line by line.
const MAX_EXTENSIONS: usize = 16 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    body: Vec<u8>,
    /// Chunk bytes announced so far (the body may have been taken in parts).
    received: u64,
    limit: u64,
    extension_bytes: usize,
    trailer_bytes: usize,
}

impl ChunkedDecoder {
    pub fn new(limit: u64) -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::Size,
            body: Vec::new(),
            received: 0,
            limit,
            extension_bytes: 0,
            trailer_bytes: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The body decoded so far (all of it once `is_done`).
    pub fn take_body(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.body))
    }

    /// Consumes what it can of `input`; returns how many bytes it used.
    /// Stops early at the end of the body or when a line is not complete yet.
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, HttpError> {
        let mut pos = 0;
        while self.state != State::Done {
            let rest = &input[pos..];
            if let State::Data(remaining) = self.state {
                if rest.is_empty() {
                    break;
                }
                let take = rest
                    .len()
                    .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                self.body.extend_from_slice(&rest[..take]);
                pos += take;
                let left = remaining - take as u64;
                self.state = if left == 0 {
                    State::DataEnd
                } else {
                    State::Data(left)
                };
                continue;
            }
            let newline = rest.iter().position(|&b| b == b'\n');
            // A line is held to the limit whether it arrives in pieces or whole.
            if newline.unwrap_or(rest.len()) > MAX_LINE {
                return Err(HttpError::bad_request("chunked body line too long"));
            }
            let Some(line_len) = newline else {
                break;
            };
            let line = rest[..line_len]
                .strip_suffix(b"\r")
                .unwrap_or(&rest[..line_len]);
            pos += line_len + 1;
            self.state = match self.state {
                State::Size => self.chunk_start(line)?,
                State::DataEnd if line.is_empty() => State::Size,
                State::DataEnd => {
                    return Err(HttpError::bad_request("chunk data longer than its size"))
                }
                State::Trailer if line.is_empty() => State::Done,
                State::Trailer => {
                    self.trailer_bytes += line_len + 1;
                    if self.trailer_bytes > MAX_TRAILERS {
                        return Err(HttpError::new(
                            431,
                            format!("chunked body trailers over {MAX_TRAILERS} bytes"),
                        ));
                    }
                    State::Trailer
                }
                State::Data(_) | State::Done => unreachable!("handled above"),
            };
        }
        Ok(pos)
    }

    fn chunk_start(&mut self, line: &[u8]) -> Result<State, HttpError> {
        let size_text = line
            .split(|&b| b == b';')
            .next()
            .unwrap_or(b"")
            .trim_ascii();
        self.extension_bytes += line.len() - size_text.len();
        if self.extension_bytes > MAX_EXTENSIONS {
            return Err(HttpError::bad_request(format!(
                "chunk extensions over {MAX_EXTENSIONS} bytes"
            )));
        }
        let size = std::str::from_utf8(size_text)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or_else(|| HttpError::bad_request("invalid chunk size"))?;
        if size == 0 {
            return Ok(State::Trailer);
        }
        let total = self.received.saturating_add(size);
        if total > self.limit {
            return Err(HttpError::body_too_large(total, self.limit));
        }
        self.received = total;
        self.body.reserve(size as usize);
        Ok(State::Data(size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\nNEXT";

    #[test]
    fn trailers_and_extensions_are_capped_in_total() {
        let mut d = ChunkedDecoder::new(100);
        let trailers = "0\r\n".to_string() + &"X-T: 1\r\n".repeat(3000);
        let e = d.feed(trailers.as_bytes()).unwrap_err();
        assert_eq!(e.status, 431, "{}", e.message);
        let mut d = ChunkedDecoder::new(100);
        let chunk = format!("1;{}\r\nx\r\n", "e".repeat(4000));
        let e = d.feed(chunk.repeat(5).as_bytes()).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("chunk extensions"), "{}", e.message);
    }

    #[test]
    fn a_long_line_is_refused_whole_or_in_pieces() {
        let line = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(15_000));
        let whole = ChunkedDecoder::new(100).feed(line.as_bytes()).unwrap_err();
        assert!(whole.message.contains("line too long"), "{}", whole.message);
        let mut d = ChunkedDecoder::new(100);
        let first = d.feed(&line.as_bytes()[..5000]).unwrap_err();
        assert!(first.message.contains("line too long"), "{}", first.message);
    }

    #[test]
    fn decodes_in_one_go_and_stops_at_the_end() {
        let mut d = ChunkedDecoder::new(100);
        let used = d.feed(BODY).unwrap();
        assert!(d.is_done());
        assert_eq!(&BODY[used..], b"NEXT");
        assert_eq!(&d.take_body()[..], b"hello, world");
    }

    #[test]
    fn decodes_byte_by_byte() {
        let mut d = ChunkedDecoder::new(100);
        let mut pending = Vec::new();
        for &b in BODY {
            pending.push(b);
            let used = d.feed(&pending).unwrap();
            pending.drain(..used);
            if d.is_done() {
                break;
            }
        }
        assert!(d.is_done());
        assert_eq!(&d.take_body()[..], b"hello, world");
    }

    #[test]
    fn bad_framing_and_limits() {
        let cases: [(&[u8], u16); 4] = [
            (b"zz\r\n", 400),
            (b"3\r\nabcdef\r\n", 400),
            (b"ffffffffffffffffffff\r\n", 400),
            (b"80\r\n", 413),
        ];
        for (input, status) in cases {
            let mut d = ChunkedDecoder::new(100);
            assert_eq!(d.feed(input).unwrap_err().status, status);
        }
        let mut d = ChunkedDecoder::new(100);
        assert_eq!(d.feed(&[b'1'; MAX_LINE + 1]).unwrap_err().status, 400);
    }
}
