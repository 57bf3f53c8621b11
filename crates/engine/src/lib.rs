//! Backup and restore pipelines.
//!
//! A backup reads the source once, in order, skipping holes; workers on every core hash each
//! block, drop zero blocks, compare with the parent's hashes and compress what changed; one
//! writer puts the results in block order. Memory is bounded by a fixed pool of block buffers,
//! whatever the size of the disk.

mod backup;
pub mod cbt;
mod crypt;
mod error;
mod image;
mod input;
mod live;
pub mod partitions;
mod restore;
mod source;
mod target;

pub use backup::run_input_pipeline;
pub use backup::{
    backup_local, backup_local_source, BackupOptions, BackupSummary, BlockSink, Counters,
    KnownHashes,
};
pub use crypt::{
    backup_local_encrypted, plan_sealing, record_of, refuse_plain_after_encrypted,
    restore_local_encrypted, run_backup_pipeline, Decrypting, Decryptor, EncryptingSink, Sealing,
    WriteKey,
};
pub use error::EngineError;
pub use image::{
    decode_stored, Fetched, ImageError, ImageStats, PointBlocks, PointImage, DEFAULT_CACHE_BYTES,
    MAX_READ_AHEAD,
};
pub use input::{Input, InputReader, Run};
pub use live::{
    backup_live, CbtReport, LiveOptions, LiveSource, ParentInfo, Recording, VerifyReport,
};
pub use restore::{
    join_workers, restore_local, restore_local_with, RestoreOptions, RestoreSummary,
};
pub use source::{data_ranges, Source};
pub use target::RestoreTarget;

/// Result type of this crate.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

// The limits and defaults of a new point live beside the rule that uses them.
pub use bulwark_repository::plan::{
    DEFAULT_BLOCK_SIZE, DEFAULT_COMPRESSION, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE,
};

/// Worker threads to use: one per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}
