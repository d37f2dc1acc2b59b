//! Which monoio I/O driver the runtimes use.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IoDriver {
    /// The driver that measured faster on our load runs (see README), falling back when
    /// io_uring cannot start.
    Auto,
    /// io_uring.
    Uring,
    /// epoll (monoio's legacy driver).
    Epoll,
}

impl IoDriver {
    /// Resolves `Auto` and refuses `Uring` where the kernel lacks it.
    pub fn resolve(self) -> Result<IoDriver, String> {
        let uring = monoio::utils::detect_uring();
        match self {
            IoDriver::Auto => Ok(IoDriver::Epoll),
            IoDriver::Uring if !uring => Err("io_uring is not available on this kernel".into()),
            other => Ok(other),
        }
    }
}

impl fmt::Display for IoDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoDriver::Auto => "auto",
            IoDriver::Uring => "io_uring",
            IoDriver::Epoll => "epoll",
        })
    }
}
