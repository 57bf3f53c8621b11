//! Sending a job's notifications: the settings are read when needed, and a failure to
//! deliver is logged, never turned into a failed job.

use std::path::Path;

pub use bulwark_notify::Event;
use bulwark_notify::{Config, Notification};

/// Sends `event` about `subject` to the configured channels (the journal line always).
pub fn send(config: Option<&Path>, event: Event, subject: &str, message: &str) {
    let n = Notification::new(event, subject, message);
    let cfg = match Config::find(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "warning: notification settings unreadable, {} not sent to any channel: {e}",
                event.as_str()
            );
            None
        }
    };
    for d in bulwark_notify::send(cfg.as_ref(), &n) {
        if let Err(e) = d.result {
            eprintln!(
                "warning: notification {} to {} failed: {e}",
                event.as_str(),
                d.channel
            );
        }
    }
}
