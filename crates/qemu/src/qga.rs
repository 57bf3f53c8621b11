//! The QEMU guest agent (JSON lines over its socket): filesystem freeze and thaw, so that a
//! point in time taken while the guest runs is also consistent for its filesystems.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::{QemuError, Result};

const MAX_LINE: usize = 1 << 20;

/// A connection to a guest agent.
pub struct GuestAgent {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl GuestAgent {
    /// Connects and synchronises (`guest-sync` with a random id, skipping stale answers).
    pub fn connect(socket: &Path, timeout: Duration) -> Result<GuestAgent> {
        let bad = |why: String| QemuError::Agent {
            socket: socket.to_path_buf(),
            why,
        };
        let (reader, writer) = crate::qmp::connect_lines(socket, timeout).map_err(bad)?;
        let mut g = GuestAgent {
            socket: socket.to_path_buf(),
            reader,
            writer,
        };
        let id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 & 0x7fff_ffff)
            .unwrap_or(4242);
        g.send(&json!({"execute": "guest-sync", "arguments": {"id": id}}))?;
        for _ in 0..16 {
            let v = g.read()?;
            if v.get("return").and_then(Value::as_u64) == Some(id) {
                return Ok(g);
            }
        }
        Err(g.bad("no answer to guest-sync".into()))
    }

    fn bad(&self, why: String) -> QemuError {
        QemuError::Agent {
            socket: self.socket.clone(),
            why,
        }
    }

    fn send(&mut self, v: &Value) -> Result<()> {
        let mut line = v.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| self.bad(format!("sending: {e}")))
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = Vec::new();
        let r = std::io::Read::take(&mut self.reader, MAX_LINE as u64).read_until(b'\n', &mut line);
        match r {
            Ok(0) => return Err(self.bad("the connection closed".into())),
            Ok(_) => {}
            Err(e) => return Err(self.bad(format!("reading: {e}"))),
        }
        // guest-sync-delimited answers start with 0xFF; skip any such byte.
        let start = line.iter().position(|&b| b != 0xff).unwrap_or(line.len());
        serde_json::from_slice(&line[start..])
            .map_err(|e| self.bad(format!("unparsable answer: {e}")))
    }

    fn execute(&mut self, command: &str) -> Result<Value> {
        self.send(&json!({"execute": command}))?;
        let v = self.read()?;
        if let Some(e) = v.get("error") {
            return Err(QemuError::Command {
                command: command.to_string(),
                class: e.get("class").and_then(Value::as_str).unwrap_or("").into(),
                desc: e.get("desc").and_then(Value::as_str).unwrap_or("").into(),
            });
        }
        Ok(v.get("return").cloned().unwrap_or(Value::Null))
    }

    /// Freezes the guest's filesystems; the number frozen.
    pub fn freeze(&mut self) -> Result<u64> {
        Ok(self.execute("guest-fsfreeze-freeze")?.as_u64().unwrap_or(0))
    }

    /// Thaws them; the number thawed.
    pub fn thaw(&mut self) -> Result<u64> {
        Ok(self.execute("guest-fsfreeze-thaw")?.as_u64().unwrap_or(0))
    }
}
