//! Content codings: request bodies inflated (gzip, deflate) within the body size limit, and
//! responses compressed for clients that ask (`Accept-Encoding`, by q-value).

use std::io::Write;

use bytes::Bytes;
use flate2::write::{GzEncoder, MultiGzDecoder, ZlibDecoder, ZlibEncoder};
use flate2::Compression;

use super::HttpError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    /// HTTP's "deflate": a zlib stream (RFC 1950), as Python's `zlib.compress` writes it.
    Deflate,
}

impl Coding {
    pub fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        }
    }

    fn named(name: &[u8]) -> Option<Coding> {
        if name.eq_ignore_ascii_case(b"gzip") || name.eq_ignore_ascii_case(b"x-gzip") {
            Some(Coding::Gzip)
        } else if name.eq_ignore_ascii_case(b"deflate") {
            Some(Coding::Deflate)
        } else {
            None
        }
    }

    /// A request's `Content-Encoding`: `None` for identity; any other coding is a 415.
    pub fn of_request(value: &[u8]) -> Result<Option<Coding>, HttpError> {
        let value = value.trim_ascii();
        if value.is_empty() || value.eq_ignore_ascii_case(b"identity") {
            return Ok(None);
        }
        Coding::named(value).map(Some).ok_or_else(|| {
            HttpError::new(
                415,
                format!(
                    "Content-Encoding '{}' is not supported (gzip, deflate and identity are)",
                    String::from_utf8_lossy(value)
                ),
            )
        })
    }

    /// The coding an `Accept-Encoding` value prefers: the highest q-value among gzip and deflate
    /// (gzip on a tie), unless identity is asked for with a higher one. `None`: send it plain.
    pub fn preferred(accept: &[u8]) -> Option<Coding> {
        let (mut gzip, mut deflate, mut identity, mut any) = (None, None, None, None);
        for item in accept.split(|&b| b == b',') {
            let mut parts = item.split(|&b| b == b';');
            let name = parts.next().unwrap_or(b"").trim_ascii();
            let q = parts
                .find_map(|p| p.trim_ascii().strip_prefix(b"q="))
                .map_or(Some(1.0), |q| {
                    std::str::from_utf8(q).ok()?.trim().parse::<f32>().ok()
                })
                .unwrap_or(0.0);
            let slot = match Coding::named(name) {
                Some(Coding::Gzip) => &mut gzip,
                Some(Coding::Deflate) => &mut deflate,
                None if name.eq_ignore_ascii_case(b"identity") => &mut identity,
                None if name == b"*" => &mut any,
                None => continue,
            };
            *slot = Some(q);
        }
        let (gzip, deflate) = (gzip.or(any).unwrap_or(0.0), deflate.or(any).unwrap_or(0.0));
        let (coding, q) = if deflate > gzip {
            (Coding::Deflate, deflate)
        } else {
            (Coding::Gzip, gzip)
        };
        (q > 0.0 && identity.is_none_or(|i| i <= q)).then_some(coding)
    }
}

/// A request body inflated as its bytes arrive. More than `limit` inflated bytes is a 413 the
/// moment the limit is passed: a small bomb never becomes a large allocation.
pub struct Inflater {
    coding: Coding,
    decoder: Decoder,
}

enum Decoder {
    Gzip(MultiGzDecoder<Bounded>),
    Deflate(ZlibDecoder<Bounded>),
}

/// The inflated body, refusing to grow past its limit.
struct Bounded {
    out: Vec<u8>,
    limit: u64,
    overflowed: bool,
}

impl Write for Bounded {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if (self.out.len() + bytes.len()) as u64 > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("over the limit"));
        }
        self.out.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Inflater {
    pub fn new(coding: Coding, limit: u64) -> Inflater {
        let out = Bounded {
            out: Vec::new(),
            limit,
            overflowed: false,
        };
        let decoder = match coding {
            Coding::Gzip => Decoder::Gzip(MultiGzDecoder::new(out)),
            Coding::Deflate => Decoder::Deflate(ZlibDecoder::new(out)),
        };
        Inflater { coding, decoder }
    }

    /// Inflates the next bytes of the body.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), HttpError> {
        let written = match &mut self.decoder {
            Decoder::Gzip(d) => d.write_all(bytes),
            Decoder::Deflate(d) => d.write_all(bytes),
        };
        written.map_err(|e| self.error(e))
    }

    /// The whole inflated body, once the compressed one has ended.
    pub fn finish(mut self) -> Result<Bytes, HttpError> {
        let finished = match &mut self.decoder {
            Decoder::Gzip(d) => d.try_finish(),
            Decoder::Deflate(d) => d.try_finish(),
        };
        finished.map_err(|e| self.error(e))?;
        let coding = self.coding;
        let out = match self.decoder {
            Decoder::Gzip(d) => d.finish(),
            Decoder::Deflate(d) => d.finish(),
        };
        out.map(|b| Bytes::from(b.out))
            .map_err(|e| invalid(coding, e))
    }

    fn error(&self, e: std::io::Error) -> HttpError {
        let bounded = match &self.decoder {
            Decoder::Gzip(d) => d.get_ref(),
            Decoder::Deflate(d) => d.get_ref(),
        };
        if bounded.overflowed {
            return HttpError::new(
                413,
                format!(
                    "the inflated request body is larger than the limit of {} bytes",
                    bounded.limit
                ),
            );
        }
        invalid(self.coding, e)
    }
}

fn invalid(coding: Coding, e: std::io::Error) -> HttpError {
    HttpError::bad_request(format!(
        "the request body is not valid {}: {e}",
        coding.name()
    ))
}

/// Compresses the parts of a response body into one buffer.
pub fn compress(parts: &[Bytes], coding: Coding) -> Bytes {
    let size: usize = parts.iter().map(Bytes::len).sum();
    let out = Vec::with_capacity(size / 2 + 64);
    // Writing into a Vec cannot fail.
    let out = match coding {
        Coding::Gzip => {
            let mut encoder = GzEncoder::new(out, Compression::fast());
            parts.iter().for_each(|p| drop(encoder.write_all(p)));
            encoder.finish().unwrap_or_default()
        }
        Coding::Deflate => {
            let mut encoder = ZlibEncoder::new(out, Compression::fast());
            parts.iter().for_each(|p| drop(encoder.write_all(p)));
            encoder.finish().unwrap_or_default()
        }
    };
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflate(body: &[u8], coding: Coding, limit: u64) -> Result<Bytes, HttpError> {
        let mut inflater = Inflater::new(coding, limit);
        inflater.push(body)?;
        inflater.finish()
    }

    #[test]
    fn accept_encoding_by_q_value() {
        let cases: [(&str, Option<Coding>); 9] = [
            ("gzip", Some(Coding::Gzip)),
            ("deflate", Some(Coding::Deflate)),
            ("gzip;q=0.5, deflate", Some(Coding::Deflate)),
            ("deflate, gzip", Some(Coding::Gzip)),
            ("gzip;q=0, deflate;q=0", None),
            ("identity", None),
            ("br", None),
            ("*;q=0.3, identity;q=0.5", None),
            ("*", Some(Coding::Gzip)),
        ];
        for (accept, want) in cases {
            assert_eq!(Coding::preferred(accept.as_bytes()), want, "{accept}");
        }
    }

    #[test]
    fn round_trips_and_refusals() {
        let parts = [
            Bytes::from_static(b"{\"a\":1}"),
            Bytes::from(vec![7u8; 5000]),
        ];
        let plain: Vec<u8> = parts.concat();
        for coding in [Coding::Gzip, Coding::Deflate] {
            let packed = compress(&parts, coding);
            assert!(packed.len() < plain.len() / 10);
            assert_eq!(inflate(&packed, coding, 10_000).unwrap(), plain);
            assert_eq!(inflate(&packed, coding, 4_000).unwrap_err().status, 413);
            assert_eq!(inflate(b"not packed", coding, 100).unwrap_err().status, 400);
            // A truncated stream is refused, not taken for a shorter body.
            let cut = &packed[..packed.len() - 6];
            assert_eq!(inflate(cut, coding, 10_000).unwrap_err().status, 400);
            // Byte by byte, as a slow client sends it.
            let mut inflater = Inflater::new(coding, 10_000);
            packed.chunks(1).for_each(|b| inflater.push(b).unwrap());
            assert_eq!(inflater.finish().unwrap(), plain);
        }
        assert_eq!(Coding::of_request(b"br").unwrap_err().status, 415);
        assert_eq!(Coding::of_request(b" GZIP ").unwrap(), Some(Coding::Gzip));
        assert_eq!(Coding::of_request(b"identity").unwrap(), None);
    }
}
