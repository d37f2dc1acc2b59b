//! Writing a response from its own buffers with `writev`, resuming correctly after short writes.
//!
//! monoio 0.2.4's `write_vectored_all` mishandles a short write that ends inside an iovec
//! (it shortens the iovec without advancing its base, so bytes are sent twice); this loop
//! advances the iovecs itself.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use monoio::buf::IoVecBuf;
use monoio::io::AsyncWriteRent;

/// Most iovecs handed to one `writev` (Linux's IOV_MAX is 1024).
const MAX_IOVECS: usize = 1024;

/// Buffers to send in order, with the iovecs that point into them.
pub struct IoParts {
    // Owns the memory `iovecs` points into; never read directly.
    _parts: Vec<Bytes>,
    iovecs: Vec<libc::iovec>,
    start: usize,
}

impl IoParts {
    pub fn new(parts: Vec<Bytes>) -> IoParts {
        let iovecs = parts
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        IoParts {
            _parts: parts,
            iovecs,
            start: 0,
        }
    }

    fn is_done(&self) -> bool {
        self.start == self.iovecs.len()
    }

    /// Marks `n` more bytes as written.
    fn advance(&mut self, mut n: usize) {
        while n > 0 && !self.is_done() {
            let iov = &mut self.iovecs[self.start];
            if n >= iov.iov_len {
                n -= iov.iov_len;
                self.start += 1;
            } else {
                // SAFETY: n < iov_len, so the new base stays inside the same buffer.
                iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(n) }.cast();
                iov.iov_len -= n;
                n = 0;
            }
        }
    }
}

// SAFETY: the iovecs point into `_parts`, heap buffers owned by this value that neither move
// nor change while it lives; the iovec array itself is not reallocated after `new`.
unsafe impl IoVecBuf for IoParts {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iovecs[self.start..].as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        (self.iovecs.len() - self.start).min(MAX_IOVECS)
    }
}

/// Writes every byte of `parts`. With `stall`, a peer that takes no byte for that long (it
/// stopped reading) fails the write with `TimedOut`, so it cannot hold the response forever.
pub async fn write_all_vectored<S: AsyncWriteRent>(
    stream: &mut S,
    mut parts: IoParts,
    stall: Option<Duration>,
) -> io::Result<()> {
    while !parts.is_done() {
        let (result, returned) = match stall {
            Some(limit) => monoio::time::timeout(limit, stream.writev(parts))
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?,
            None => stream.writev(parts).await,
        };
        parts = returned;
        match result {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => parts.advance(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remaining(parts: &IoParts) -> Vec<u8> {
        parts.iovecs[parts.start..]
            .iter()
            .flat_map(|iov| unsafe {
                std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len)
            })
            .copied()
            .collect()
    }

    #[test]
    fn short_writes_resume_mid_buffer() {
        let mut parts = IoParts::new(vec![
            Bytes::from_static(b"head"),
            Bytes::new(),
            Bytes::from_static(b"0123456789"),
            Bytes::from_static(b"xy"),
        ]);
        assert_eq!(parts.iovecs.len(), 3, "empty parts get no iovec");
        parts.advance(2);
        assert_eq!(remaining(&parts), b"ad0123456789xy");
        parts.advance(5);
        assert_eq!(remaining(&parts), b"3456789xy");
        parts.advance(7);
        assert_eq!(remaining(&parts), b"xy");
        parts.advance(2);
        assert!(parts.is_done());
    }
}
