//! Four-eyes approvals for the immutability service: the canonical statement of one action
//! that weakens protection ([`statement`]), and the k-of-n check of the approvers' OpenSSH
//! signatures over it ([`verify`]). Pure: no files, no clock, no randomness; the service
//! chooses the nonce and the expiry and keeps the list of statements it issued.

pub mod statement;
pub mod verify;

pub use statement::{Action, FileRef, RepoFiles, Statement, StatementError};
pub use verify::{ApprovalError, Approver, Approvers, NAMESPACE};
