//! The transport service as tests start it: `bulwark-repo serve` as a fresh service user and
//! real `bulwark` clients enrolled over TLS (filled in by the test re-layout).
