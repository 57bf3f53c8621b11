//! Encryption keys the way users make them, through the real `bulwark key` commands.

/// The `bulwark` arguments that create a write-only pair (docs/encryption.md): the private
/// restore key at `private` and the public key that clients back up with at `public`.
pub fn write_only_args<'a>(private: &'a str, public: &'a str) -> [&'a str; 7] {
    [
        "key",
        "create",
        "--write-only",
        "--out",
        private,
        "--public",
        public,
    ]
}
