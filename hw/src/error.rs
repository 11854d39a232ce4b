//! Errors of reading a machine's topology.

use std::io;
use std::path::PathBuf;

/// Why [`Topology::read`](crate::Topology::read) failed. A *missing* file is never an error (it
/// becomes an unknown value and a note); these are files that exist but cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A file or directory exists but could not be read (permissions, I/O error).
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file, under the root given to `read`.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// A file holds something the kernel would not write there: a corrupt or hand-edited
    /// fixture, or a kernel format this crate does not know.
    #[error("{}: {value:?} {reason}", path.display())]
    Parse {
        /// The file, under the root given to `read`.
        path: PathBuf,
        /// The offending text (trimmed).
        value: String,
        /// What was expected.
        reason: String,
    },
}
