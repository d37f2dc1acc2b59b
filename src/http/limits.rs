//! Size limits a connection enforces before any request reaches the protocol layer.

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Request line plus headers; beyond it: 431.
    pub max_header_bytes: usize,
    /// Declared or de-chunked body; beyond it: 413.
    pub max_body_bytes: u64,
    /// gRPC: response bytes one connection may hold while its peer's window is closed; past
    /// half of it, the connection's calls wait before they run.
    pub grpc_max_pending_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 256 * 1024 * 1024,
            grpc_max_pending_bytes: 64 << 20,
        }
    }
}
