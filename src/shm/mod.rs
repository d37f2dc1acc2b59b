//! POSIX shared-memory objects that clients on this host name by key (Triton's system shared
//! memory), mapped for the engine: opened under `/dev/shm` without following links, checked (a
//! regular file the daemon's user owns, large enough), mapped read-write, and guarded against
//! truncation (`guard`). Knows nothing of requests or models.

mod guard;

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use bytes::Bytes;

pub use guard::install as install_truncation_guard;

/// Where `shm_open` keeps its objects on Linux.
const SHM_DIR: &str = "/dev/shm";

/// Triton keeps keys with this prefix for its Python backend; they are refused as there.
pub const RESERVED_PREFIX: &str = "triton_python_backend_shm_region_";

/// Why a key or an object was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The key is not one name in the shm namespace.
    InvalidKey(String),
    /// The key starts with Triton's reserved prefix.
    ReservedKey,
    /// No such object, or it cannot be opened.
    Missing,
    /// The object exists but is not one the server will map; why.
    Refused(String),
}

/// The object name a key names: one path component under `/dev/shm`. As `shm_open`, leading
/// slashes are dropped; nothing else may be a slash, and `.` and `..` are not names.
pub fn object_name(key: &str) -> Result<&str, OpenError> {
    let name = key.trim_start_matches('/');
    let why = if name.is_empty() {
        "it names no object"
    } else if name.contains('/') {
        "only a leading '/' may appear in it"
    } else if name == "." || name == ".." {
        "'.' and '..' are not objects"
    } else if name.contains('\0') {
        "it holds a NUL byte"
    } else if name.len() > 255 {
        "it is longer than 255 bytes"
    } else if name.starts_with(RESERVED_PREFIX) {
        return Err(OpenError::ReservedKey);
    } else {
        return Ok(name);
    };
    Err(OpenError::InvalidKey(why.into()))
}

/// `byte_size` bytes of a shared-memory object from `offset` on, mapped read-write.
pub struct Mapping {
    map: memmap2::MmapRaw,
    guard: guard::Guard,
    /// The object, kept open to check its size on each use.
    file: std::fs::File,
    /// Where the mapping ends in the object.
    end: u64,
}

impl Mapping {
    /// Maps `[offset, offset + byte_size)` of the object `key` names. The object must be a
    /// regular file the server's user owns, at least `offset + byte_size` bytes long.
    pub fn open(key: &str, offset: u64, byte_size: u64) -> Result<Mapping, OpenError> {
        let name = CString::new(object_name(key)?).map_err(|_| OpenError::Missing)?;
        let dir = std::fs::File::open(SHM_DIR).map_err(|_| OpenError::Missing)?;
        // O_NOFOLLOW: a link planted under /dev/shm never leads elsewhere. O_NONBLOCK: a FIFO
        // there cannot hang the call (it is refused below as not a regular file).
        let flags = libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
        // SAFETY: `name` is NUL-terminated and `dir` an open directory for the call's length.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
        if fd < 0 {
            return Err(match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::ELOOP) => OpenError::Refused("it is a symbolic link".into()),
                _ => OpenError::Missing,
            });
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let meta = file.metadata().map_err(|_| OpenError::Missing)?;
        use std::os::unix::fs::MetadataExt;
        if !meta.file_type().is_file() {
            return Err(OpenError::Refused("it is not a regular file".into()));
        }
        // SAFETY: geteuid cannot fail.
        if meta.uid() != unsafe { libc::geteuid() } {
            return Err(OpenError::Refused(
                "it is not owned by the server's user".into(),
            ));
        }
        let end = offset.checked_add(byte_size);
        if byte_size == 0 || end.is_none_or(|end| end > meta.len()) {
            return Err(OpenError::Refused(format!(
                "offset {offset} and byte_size {byte_size} do not fit in the object's {} bytes",
                meta.len()
            )));
        }
        let len = usize::try_from(byte_size)
            .map_err(|_| OpenError::Refused("byte_size does not fit in memory".into()))?;
        let map = memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .map_raw(&file)
            .map_err(|e| OpenError::Refused(format!("it cannot be mapped: {e}")))?;
        let guard = guard::Guard::claim(map.as_ptr() as usize, len)
            .ok_or_else(|| OpenError::Refused("the truncation guard is full".into()))?;
        Ok(Mapping {
            map,
            guard,
            file,
            end: offset + byte_size,
        })
    }

    /// Whether the object still covers the mapping (one fstat). A client that shrank it gets
    /// its request refused here; one that shrinks it during the request is caught by the guard.
    pub fn still_covered(&self) -> bool {
        self.file.metadata().is_ok_and(|m| m.len() >= self.end)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Whether the object shrank under the mapping while it was in use: the mapping's pages
    /// were replaced by zeros, so what was read or written there is lost.
    pub fn truncated(&self) -> bool {
        self.guard.hit()
    }

    /// Whether `bytes` lie in the mapping.
    pub fn contains(&self, bytes: &[u8]) -> bool {
        let (start, at) = (self.map.as_ptr() as usize, bytes.as_ptr() as usize);
        !bytes.is_empty() && at >= start && at < start + self.len()
    }

    /// `len` bytes from `start`, as a view that keeps the mapping alive (no copy). Callers check
    /// the bounds.
    pub fn view(self: &Arc<Self>, start: usize, len: usize) -> Bytes {
        debug_assert!(start.checked_add(len).is_some_and(|end| end <= self.len()));
        Bytes::from_owner(View {
            mapping: self.clone(),
            start,
            len,
        })
    }

    /// Copies `data` into the mapping at `start`. Callers check the bounds.
    pub fn write(&self, start: usize, data: &[u8]) {
        assert!(start
            .checked_add(data.len())
            .is_some_and(|end| end <= self.len()));
        // SAFETY: in bounds (asserted); the mapping is writable and outlives the call. The
        // client may write the same bytes at once: what it reads then is its own race.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.as_mut_ptr().add(start),
                data.len(),
            )
        };
    }
}

/// A slice of a mapping that a `Bytes` owns.
struct View {
    mapping: Arc<Mapping>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `View`s are made in bounds (`Mapping::view`) and hold the mapping alive. The
        // bytes are shared with the client, which may change them at any time: fixed-size
        // tensors then hold its new numbers; BYTES tensors are copied out before they are
        // walked (see the engine), so no length prefix is read twice.
        unsafe { std::slice::from_raw_parts(self.mapping.map.as_ptr().add(self.start), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_one_object() {
        assert_eq!(object_name("/input0_data"), Ok("input0_data"));
        assert_eq!(object_name("///x"), Ok("x"));
        assert_eq!(object_name("x"), Ok("x"));
        for bad in ["/", "///", "", "/a/b", "../etc/passwd", "/..", "/.", "a\0b"] {
            assert!(
                matches!(object_name(bad), Err(OpenError::InvalidKey(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            object_name("//triton_python_backend_shm_region_1"),
            Err(OpenError::ReservedKey)
        );
        assert!(object_name(&"a".repeat(256)).is_err());
    }
}
