//! The contract between the repository (unprivileged) and the immutability service (root):
//! where files live in a repository, and the messages they exchange on the Unix socket.

pub mod layout;
