//! The Bulwark immutability service (work in progress).
