//! A small QMP client: JSON objects, one per line, over a Unix socket.
//!
//! Commands carry an id; events that arrive in between are kept for [`Qmp::events`]. Each
//! line the server sends is bounded before it is parsed, and every wait has a timeout.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::img::is_format_driver;
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

/// Filter drivers that show their `file` (blkdebug, blkverify: `image`) child's bytes as
/// they are, so a format node above a filter still reads the filter's child as a container.
const FILTER_DRIVERS: &[&str] = &[
    "throttle",
    "copy-on-read",
    "preallocate",
    "compress",
    "blkdebug",
    "blkverify",
    "blklogwrites",
    "copy-before-write",
];

/// A block node of a QEMU process, as `query-named-block-nodes` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphNode {
    pub name: String,
    /// Its driver (`qcow2`, `file`, `host_device`, …).
    pub driver: String,
    /// What QEMU calls its file name (for a format node usually its file child's).
    pub filename: String,
}

/// One child link between two block nodes: `parent`'s child `role` (`file`, `backing`, …)
/// is `child`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphEdge {
    pub parent: String,
    pub child: String,
    pub role: String,
}

/// The block nodes of a QEMU process and, where it answers `x-debug-query-block-graph`
/// (QEMU 4.0 and later, unless unstable commands are refused), the links between them.
#[derive(Clone, Debug, Default)]
pub struct BlockGraph {
    pub nodes: Vec<GraphNode>,
    /// `None`: the process does not say how its nodes are linked.
    pub edges: Option<Vec<GraphEdge>>,
}

impl BlockGraph {
    /// From the replies of `query-named-block-nodes` (flat) and `x-debug-query-block-graph`
    /// (when it answered). Links to block backends and jobs are left out: only nodes count.
    pub fn from_replies(named: &Value, graph: Option<&Value>) -> BlockGraph {
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let nodes = named
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|n| GraphNode {
                        name: s(n, "node-name"),
                        driver: s(n, "drv"),
                        filename: s(n, "file"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let edges = graph.and_then(|g| {
            let drivers: std::collections::HashMap<u64, String> = g
                .get("nodes")?
                .as_array()?
                .iter()
                .filter(|n| n.get("type").and_then(Value::as_str) == Some("block-driver"))
                .filter_map(|n| Some((n.get("id")?.as_u64()?, s(n, "name"))))
                .collect();
            let name = |e: &Value, k: &str| drivers.get(&e.get(k)?.as_u64()?).cloned();
            Some(
                g.get("edges")?
                    .as_array()?
                    .iter()
                    .filter_map(|e| {
                        Some(GraphEdge {
                            parent: name(e, "parent")?,
                            child: name(e, "child")?,
                            role: s(e, "name"),
                        })
                    })
                    .collect(),
            )
        });
        BlockGraph { nodes, edges }
    }

    fn get(&self, name: &str) -> Option<&GraphNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The format node that reads `node` as its container (its `file`, directly or through
    /// filters), or `None` when `node` is nobody's container: backing `node` up would then
    /// store the container's bytes (a qcow2 file), not the disk the guest sees.
    ///
    /// Without the links, a node that is not a format node is taken to be the container of
    /// a format node of the same file name (QEMU's image locking keeps two unrelated nodes
    /// off one file).
    pub fn container_of(&self, node: &str) -> Option<&GraphNode> {
        let Some(edges) = &self.edges else {
            let me = self.get(node)?;
            if me.filename.is_empty() || is_format_driver(&me.driver) {
                return None;
            }
            return self.nodes.iter().find(|n| {
                n.name != node && n.filename == me.filename && is_format_driver(&n.driver)
            });
        };
        let mut todo = vec![node.to_string()];
        let mut seen = std::collections::HashSet::new();
        while let Some(child) = todo.pop() {
            if !seen.insert(child.clone()) {
                continue;
            }
            for e in edges
                .iter()
                .filter(|e| e.child == child && matches!(e.role.as_str(), "file" | "image"))
            {
                let Some(p) = self.get(&e.parent) else {
                    continue;
                };
                if is_format_driver(&p.driver) {
                    return Some(p);
                }
                if FILTER_DRIVERS.contains(&p.driver.as_str()) {
                    todo.push(p.name.clone());
                }
            }
        }
        None
    }
}

impl Qmp {
    /// The block graph: the nodes, and their links where the process answers
    /// `x-debug-query-block-graph` (a command it refuses leaves them out).
    pub fn block_graph(&mut self) -> Result<BlockGraph> {
        let named = self.execute("query-named-block-nodes", json!({"flat": true}))?;
        let graph = match self.execute("x-debug-query-block-graph", json!({})) {
            Ok(g) => Some(g),
            Err(QemuError::Command { .. }) => None,
            Err(e) => return Err(e),
        };
        Ok(BlockGraph::from_replies(&named, graph.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `query-named-block-nodes` of a qcow2 `disk0` on file `proto0`, a lone file node
    /// `lone` and a qcow2 `disk1` on file `proto1` through a preallocate filter `pre1`.
    fn named() -> Value {
        json!([
            {"node-name": "lone", "drv": "file", "file": "/vm/r.raw"},
            {"node-name": "disk0", "drv": "qcow2", "file": "/vm/x.qcow2"},
            {"node-name": "proto0", "drv": "file", "file": "/vm/x.qcow2"},
            {"node-name": "disk1", "drv": "qcow2", "file": "/vm/y.qcow2"},
            {"node-name": "pre1", "drv": "preallocate", "file": "/vm/y.qcow2"},
            {"node-name": "proto1", "drv": "file", "file": "/vm/y.qcow2"},
            {"node-name": "base", "drv": "qcow2", "file": "/vm/base.qcow2"},
            {"node-name": "top", "drv": "qcow2", "file": "/vm/top.qcow2"}
        ])
    }

    /// `x-debug-query-block-graph` of the same, as QEMU 10.0 answers it, with a block
    /// backend (the VM's device) on `disk0` and `top` backed by `base`.
    fn graph() -> Value {
        json!({
            "nodes": [
                {"name": "lone", "type": "block-driver", "id": 3},
                {"name": "disk0", "type": "block-driver", "id": 2},
                {"name": "proto0", "type": "block-driver", "id": 1},
                {"name": "disk1", "type": "block-driver", "id": 6},
                {"name": "pre1", "type": "block-driver", "id": 5},
                {"name": "proto1", "type": "block-driver", "id": 4},
                {"name": "base", "type": "block-driver", "id": 7},
                {"name": "top", "type": "block-driver", "id": 8},
                {"name": "virtio0", "type": "block-backend", "id": 9}
            ],
            "edges": [
                {"name": "file", "parent": 2, "child": 1, "perm": [], "shared-perm": []},
                {"name": "file", "parent": 6, "child": 5, "perm": [], "shared-perm": []},
                {"name": "file", "parent": 5, "child": 4, "perm": [], "shared-perm": []},
                {"name": "backing", "parent": 8, "child": 7, "perm": [], "shared-perm": []},
                {"name": "root", "parent": 9, "child": 2, "perm": [], "shared-perm": []}
            ]
        })
    }

    fn container(g: &BlockGraph, node: &str) -> Option<String> {
        g.container_of(node).map(|n| n.name.clone())
    }

    #[test]
    fn a_node_a_format_node_reads_as_its_file_is_a_container_directly_or_through_filters() {
        let with = BlockGraph::from_replies(&named(), Some(&graph()));
        let without = BlockGraph::from_replies(&named(), None);
        assert!(with.edges.is_some() && without.edges.is_none());
        for g in [&with, &without] {
            assert_eq!(container(g, "proto0").as_deref(), Some("disk0"));
            assert_eq!(container(g, "proto1").as_deref(), Some("disk1"));
            assert_eq!(container(g, "pre1").as_deref(), Some("disk1"));
            for disk in ["lone", "disk0", "disk1", "top", "base", "nosuch"] {
                assert_eq!(container(g, disk), None, "{disk} is a disk");
            }
        }
    }

    #[test]
    fn links_to_block_backends_and_unknown_roles_do_not_make_a_container() {
        let mut g = graph();
        g["edges"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "data-file", "parent": 2, "child": 3}));
        let g = BlockGraph::from_replies(&named(), Some(&g));
        // A qcow2's external data file holds the guest's data as it is.
        assert_eq!(container(&g, "lone"), None);
        assert!(g
            .edges
            .as_ref()
            .unwrap()
            .iter()
            .all(|e| e.parent != "virtio0"));
    }
}
