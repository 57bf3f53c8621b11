//! Backup and restore pipelines.
//!
//! A backup reads the source once, in order, skipping holes; workers on every core hash each
//! block, drop zero blocks, compare with the parent's hashes and compress what changed; one
//! writer puts the results in block order. Memory is bounded by a fixed pool of block buffers,
//! whatever the size of the disk.

mod backup;
mod error;
mod restore;
mod source;
mod target;

pub use backup::{
    backup_local, backup_local_source, run_pipeline, BackupOptions, BackupSummary, BlockSink,
    Counters, KnownHashes,
};
pub use error::EngineError;
pub use restore::{join_workers, restore_local, RestoreOptions, RestoreSummary};
pub use source::{data_ranges, Source};
pub use target::RestoreTarget;

/// Result type of this crate.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Block size used when a new chain does not say: see `docs/performance.md` for the
/// measurements behind it.
pub const DEFAULT_BLOCK_SIZE: u32 = 1 << 20;
/// Smallest block size the client accepts.
pub const MIN_BLOCK_SIZE: u32 = 64 << 10;
/// Largest block size the client accepts.
pub const MAX_BLOCK_SIZE: u32 = 4 << 20;
/// zstd level used when none is given.
pub const DEFAULT_COMPRESSION: i32 = 1;

/// Worker threads to use: one per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}
