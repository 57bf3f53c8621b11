//! A small QMP client: JSON objects, one per line, over a Unix socket.
//!
//! Commands carry an id; events that arrive in between are kept for [`Qmp::events`]. Each
//! line the server sends is bounded before it is parsed, and every wait has a timeout.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::{QemuError, Result};

/// Longest line accepted from QMP (a `query-named-block-nodes` of many nodes is large).
const MAX_LINE: usize = 16 << 20;

/// Connects to one of QEMU's JSON-lines sockets (QMP, the guest agent) with `timeout` on
/// every read and write: a buffered reader and a writer of the one stream, or what failed.
pub(crate) fn connect_lines(
    socket: &Path,
    timeout: Duration,
) -> std::result::Result<(BufReader<UnixStream>, UnixStream), String> {
    let s = UnixStream::connect(socket).map_err(|e| format!("connecting: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|_| s.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("setting timeouts: {e}"))?;
    let writer = s.try_clone().map_err(|e| format!("cloning: {e}"))?;
    Ok((BufReader::new(s), writer))
}

/// A QMP connection in command mode.
pub struct Qmp {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    events: Vec<Value>,
}

impl Qmp {
    /// Connects, reads the greeting and enters command mode.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Qmp> {
        let bad = |why: String| QemuError::Qmp {
            socket: socket.to_path_buf(),
            why,
        };
        let (reader, writer) = connect_lines(socket, timeout).map_err(bad)?;
        let mut q = Qmp {
            socket: socket.to_path_buf(),
            reader,
            writer,
            next_id: 1,
            events: Vec::new(),
        };
        let greeting = q.read_value()?;
        if greeting.get("QMP").is_none() {
            return Err(bad(format!("not a QMP greeting: {greeting}")));
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn bad(&self, why: String) -> QemuError {
        QemuError::Qmp {
            socket: self.socket.clone(),
            why,
        }
    }

    fn read_value(&mut self) -> Result<Value> {
        let mut line = Vec::new();
        loop {
            let socket = &self.socket;
            let buf = self.reader.fill_buf().map_err(|e| QemuError::Qmp {
                socket: socket.clone(),
                why: format!("reading: {e}"),
            })?;
            if buf.is_empty() {
                return Err(self.bad("the connection closed".into()));
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            line.extend_from_slice(&buf[..take]);
            self.reader.consume(take);
            if line.len() > MAX_LINE {
                return Err(self.bad(format!("a line longer than {MAX_LINE} bytes")));
            }
            if done {
                if line.iter().all(|b| b.is_ascii_whitespace()) {
                    line.clear();
                    continue;
                }
                return serde_json::from_slice(&line)
                    .map_err(|e| self.bad(format!("unparsable answer: {e}")));
            }
        }
    }

    /// Runs `command` with `arguments` and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"execute": command, "id": id});
        if arguments.as_object().is_some_and(|o| !o.is_empty()) {
            msg["arguments"] = arguments;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| self.bad(format!("sending {command}: {e}")))?;
        loop {
            let v = self.read_value()?;
            if v.get("event").is_some() {
                if self.events.len() < 1024 {
                    self.events.push(v);
                }
                continue;
            }
            if v.get("id").and_then(Value::as_u64) != Some(id) {
                return Err(self.bad(format!("an answer for another command: {v}")));
            }
            if let Some(e) = v.get("error") {
                let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                return Err(QemuError::Command {
                    command: command.to_string(),
                    class: s("class"),
                    desc: s("desc"),
                });
            }
            return Ok(v.get("return").cloned().unwrap_or(Value::Null));
        }
    }

    /// The events received so far (drained).
    pub fn events(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.events)
    }

    /// The socket this connection uses.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

/// A dirty bitmap of a block node, as `query-named-block-nodes` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeBitmap {
    pub name: String,
    pub granularity: u64,
    pub recording: bool,
    pub persistent: bool,
    pub busy: bool,
    pub inconsistent: bool,
}

/// A block node: its name, size and dirty bitmaps.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub name: String,
    pub size: u64,
    pub bitmaps: Vec<NodeBitmap>,
}

impl Qmp {
    /// The named block node `node`, or `None` when there is none.
    pub fn node(&mut self, node: &str) -> Result<Option<NodeInfo>> {
        let v = self.execute("query-named-block-nodes", json!({"flat": true}))?;
        let Some(list) = v.as_array() else {
            return Err(self.bad("query-named-block-nodes did not return a list".into()));
        };
        for n in list {
            if n.get("node-name").and_then(Value::as_str) != Some(node) {
                continue;
            }
            let size = n
                .pointer("/image/virtual-size")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let bitmaps = n
                .get("dirty-bitmaps")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|b| {
                            let flag = |k: &str| b.get(k).and_then(Value::as_bool).unwrap_or(false);
                            Some(NodeBitmap {
                                name: b.get("name")?.as_str()?.to_string(),
                                granularity: b.get("granularity")?.as_u64()?,
                                recording: flag("recording"),
                                persistent: flag("persistent"),
                                busy: flag("busy"),
                                inconsistent: flag("inconsistent"),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            return Ok(Some(NodeInfo {
                name: node.to_string(),
                size,
                bitmaps,
            }));
        }
        Ok(None)
    }

    /// The names of all named block nodes.
    pub fn node_names(&mut self) -> Result<Vec<String>> {
        let v = self.execute("query-named-block-nodes", json!({"flat": true}))?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.get("node-name").and_then(Value::as_str).map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }
}
