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
    /// What QEMU calls its file name: a plain name (for a format node usually its file
    /// child's), or `json:{…}` with its options and its `file` child's, nested.
    pub filename: String,
    /// The size of what it shows (`image.virtual-size`), when reported.
    pub size: Option<u64>,
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

/// Why backing up a node would not store the disk the guest sees ([`BlockGraph::container_of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container<'a> {
    /// This format node reads the node as its file, directly or through filters: a qcow2's
    /// clusters and metadata, a LUKS header, or the whole file of which a `raw` node with
    /// `offset`/`size` shows a slice.
    Format(&'a GraphNode),
    /// Without the links: this format node's file name is a `json:` name that cannot be
    /// followed to a file Bulwark can compare, so it may read the node as its file.
    Unsure(&'a GraphNode),
}

/// One level of a node's file name, from the node down through its `file` children.
#[derive(Clone, Debug, PartialEq)]
struct Level {
    /// `None` where the name does not say (the file under a format node's plain name).
    driver: Option<String>,
    /// Its options without `file` (the innermost level's `filename`, a raw's `offset`).
    opts: serde_json::Map<String, Value>,
}

/// Whether two innermost levels name one file: `Some(true)`/`Some(false)` where their names
/// or options say, `None` where they cannot be compared.
fn same_file(a: &Level, b: &Level) -> Option<bool> {
    if let (Some(x), Some(y)) = (&a.driver, &b.driver) {
        if x != y {
            return Some(false);
        }
    }
    match (a.opts.get("filename"), b.opts.get("filename")) {
        (Some(x), Some(y)) => Some(x == y),
        _ if a.opts.len() > 1 && a.opts == b.opts => Some(true),
        _ => None,
    }
}

/// A raw level's `offset`: 0 when it has none, `None` when it is not a number.
fn raw_offset(l: &Level) -> Option<u64> {
    l.opts.get("offset").map_or(Some(0), Value::as_u64)
}

impl GraphNode {
    /// The levels its file name shows, from itself down through nested `file` objects to
    /// the innermost (the file, with its `filename`), or `None` for a `json:` name that
    /// cannot be read that way. A plain name is the node over the file of that name (a
    /// format node's plain name hides `raw` nodes without options between them).
    fn levels(&self) -> Option<Vec<Level>> {
        let Some(json) = self.filename.strip_prefix("json:") else {
            let file: serde_json::Map<String, Value> =
                [("filename".to_string(), json!(self.filename))]
                    .into_iter()
                    .collect();
            let driver = Some(self.driver.clone());
            if is_format_driver(&self.driver) || FILTER_DRIVERS.contains(&self.driver.as_str()) {
                return Some(vec![
                    Level {
                        driver,
                        opts: Default::default(),
                    },
                    Level {
                        driver: None,
                        opts: file,
                    },
                ]);
            }
            return Some(vec![Level { driver, opts: file }]);
        };
        let mut v: Value = serde_json::from_str(json).ok()?;
        let mut levels = Vec::new();
        loop {
            let mut opts = v.as_object()?.clone();
            let driver = opts.get("driver").and_then(Value::as_str).map(String::from);
            let file = opts.remove("file");
            levels.push(Level { driver, opts });
            match file {
                None => return Some(levels),
                Some(f) if f.is_object() => v = f,
                Some(_) => return None,
            }
        }
    }

    /// For a `raw` node over `file`: whether it shows only a slice of `file` (`offset` or
    /// `size`: its size differs from `file`'s, or its name carries a non-zero offset). A
    /// `raw` node without them holds exactly the file's bytes. Unknown counts as a slice.
    fn raw_slice_of(&self, file: &GraphNode) -> bool {
        let offset = self.levels().and_then(|l| l.first().and_then(raw_offset)) != Some(0);
        offset || self.size.is_none() || self.size != file.size
    }
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
                        size: n.pointer("/image/virtual-size").and_then(Value::as_u64),
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

    /// Whether `p`, a node that reads `me` as its file (directly or through filters and
    /// pass-through raws), shows something else than `me`'s bytes: a format node, except
    /// a `raw` node without `offset`/`size`, which shows exactly its file.
    fn contains(p: &GraphNode, me: &GraphNode) -> bool {
        is_format_driver(&p.driver) && (p.driver != "raw" || p.raw_slice_of(me))
    }

    /// The format node that reads `node` as its container (its `file`, directly or through
    /// filters and `raw` nodes without `offset`/`size`), or `None` when `node` is nobody's
    /// container: backing `node` up would then store the container's bytes (a qcow2 file,
    /// the whole file a raw slice is cut from), not the disk the guest sees.
    ///
    /// Without the links, the format nodes' file names are compared with `node`'s: a
    /// `json:` name is followed through its nested `file` objects to the innermost
    /// `filename` (QEMU's image locking keeps two unrelated nodes off one file). A `json:`
    /// name that cannot be followed makes a node that is not a format node
    /// [`Container::Unsure`].
    pub fn container_of(&self, node: &str) -> Option<Container<'_>> {
        let me = self.get(node)?;
        let Some(edges) = &self.edges else {
            return self.container_by_names(me);
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
                if Self::contains(p, me) {
                    return Some(Container::Format(p));
                }
                if FILTER_DRIVERS.contains(&p.driver.as_str()) || p.driver == "raw" {
                    todo.push(p.name.clone());
                }
            }
        }
        None
    }

    /// [`Self::container_of`] from the file names alone.
    fn container_by_names<'a>(&'a self, me: &'a GraphNode) -> Option<Container<'a>> {
        // Raw levels without an offset are left out on both sides: one without a size shows
        // its file's bytes, and one with a size is a candidate of its own.
        let reduce = |l: Vec<Level>, keep_head: bool| -> Vec<Level> {
            l.into_iter()
                .enumerate()
                .filter(|(i, l)| {
                    (*i == 0 && keep_head)
                        || l.driver.as_deref() != Some("raw")
                        || raw_offset(l) != Some(0)
                })
                .map(|(_, l)| l)
                .collect()
        };
        let mine = me.levels().map(|l| reduce(l, false));
        let unsure_ok = !is_format_driver(&me.driver);
        let mut unsure = None;
        for f in self.nodes.iter() {
            if f.name == me.name || !Self::contains(f, me) {
                continue;
            }
            let (Some(mine), Some(theirs)) = (&mine, f.levels().map(|l| reduce(l, true))) else {
                unsure = unsure.or(Some(f));
                continue;
            };
            // `f` reads `me` when its levels end with `me`'s, and the ones between are filters.
            let Some(k) = theirs.len().checked_sub(mine.len()).filter(|&k| k > 0) else {
                continue;
            };
            let between_filters = theirs[1..k].iter().all(|l| {
                l.driver
                    .as_deref()
                    .is_some_and(|d| FILTER_DRIVERS.contains(&d))
            });
            let upper_same = theirs[k..mine.len() + k - 1]
                .iter()
                .zip(mine)
                .all(|(a, b)| a.driver.is_none() || b.driver.is_none() || a.driver == b.driver);
            if !between_filters || !upper_same {
                continue;
            }
            match (mine.last(), theirs.last()) {
                (Some(a), Some(b)) => match same_file(a, b) {
                    Some(true) => return Some(Container::Format(f)),
                    Some(false) => {}
                    None => unsure = unsure.or(Some(f)),
                },
                _ => unsure = unsure.or(Some(f)),
            }
        }
        unsure.filter(|_| unsure_ok).map(Container::Unsure)
    }
}

impl Qmp {
    /// The block graph: the nodes, and their links where the process answers
    /// `x-debug-query-block-graph` (a command it refuses leaves them out).
    ///
    /// `x-debug-query-block-graph` is an unstable command: a QEMU started with
    /// `-compat unstable-input=crash` (a setting for testing management software) aborts
    /// when it is called, and `query-qmp-schema` lists the command alike under every input
    /// policy, so it cannot tell. Bulwark does not support that setting.
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

    /// One entry of `query-named-block-nodes` as qemu-storage-daemon 10.0.2 answers it (the
    /// members read here; `file` and `image.filename` are the same name).
    fn entry(name: &str, drv: &str, file: &str, size: u64) -> Value {
        json!({"node-name": name, "drv": drv, "file": file, "ro": false, "backing_file_depth": 0,
               "image": {"virtual-size": size, "filename": file, "format": drv, "actual-size": 0,
                         "dirty-flag": false}})
    }

    /// The nodes (with the names QEMU 10.0.2 gave them for these `--blockdev`s): a lone file
    /// node; qcow2 `disk0` on file `proto0`; qcow2 `disk1` on file `proto1` through a
    /// preallocate filter `pre1`; raw `raw2` without options on `proto2`; raw `raw3` with
    /// offset 4096 and size 8192 on `proto3`; raw `raw4` with offset 0 on `proto4`; a
    /// copy-on-read filter `cor` above qcow2 `diskz` on `protoz`; qcow2 `diskw` on raw
    /// `raww` on `protow`; qcow2 `diskn` on NBD node `nbdp`; `top` backed by `base`.
    fn named() -> Value {
        json!([
            entry("lone", "file", "/vm/lone.raw", 16 << 20),
            entry("disk0", "qcow2", "/vm/x.qcow2", 32 << 20),
            entry("proto0", "file", "/vm/x.qcow2", 197120),
            entry(
                "disk1",
                "qcow2",
                r#"json:{"driver": "qcow2", "file": {"driver": "preallocate", "file": {"driver": "file", "filename": "/vm/y.qcow2"}}}"#,
                32 << 20
            ),
            entry(
                "pre1",
                "preallocate",
                r#"json:{"driver": "preallocate", "file": {"driver": "file", "filename": "/vm/y.qcow2"}}"#,
                197120
            ),
            entry("proto1", "file", "/vm/y.qcow2", 197120),
            entry("raw2", "raw", "/vm/r.raw", 16 << 20),
            entry("proto2", "file", "/vm/r.raw", 16 << 20),
            entry(
                "raw3",
                "raw",
                r#"json:{"offset": 4096, "driver": "raw", "size": 8192, "file": {"driver": "file", "filename": "/vm/s.raw"}}"#,
                8192
            ),
            entry("proto3", "file", "/vm/s.raw", 16 << 20),
            entry(
                "raw4",
                "raw",
                r#"json:{"offset": 0, "driver": "raw", "file": {"driver": "file", "filename": "/vm/t.raw"}}"#,
                16 << 20
            ),
            entry("proto4", "file", "/vm/t.raw", 16 << 20),
            entry(
                "cor",
                "copy-on-read",
                r#"json:{"driver": "copy-on-read", "file": {"driver": "qcow2", "file": {"driver": "file", "filename": "/vm/z.qcow2"}}}"#,
                32 << 20
            ),
            entry("diskz", "qcow2", "/vm/z.qcow2", 32 << 20),
            entry("protoz", "file", "/vm/z.qcow2", 197120),
            entry(
                "diskw",
                "qcow2",
                r#"json:{"driver": "qcow2", "file": {"driver": "raw", "file": {"driver": "file", "filename": "/vm/w.qcow2"}}}"#,
                32 << 20
            ),
            entry("raww", "raw", "/vm/w.qcow2", 197120),
            entry("protow", "file", "/vm/w.qcow2", 197120),
            entry(
                "diskn",
                "qcow2",
                "nbd+unix:///e?socket=/run/nbd.sock",
                32 << 20
            ),
            entry("nbdp", "nbd", "nbd+unix:///e?socket=/run/nbd.sock", 197120),
            entry("base", "qcow2", "/vm/base.qcow2", 32 << 20),
            entry("top", "qcow2", "/vm/top.qcow2", 32 << 20)
        ])
    }

    /// `x-debug-query-block-graph` of the same, in QEMU 10.0.2's shape, with a block backend
    /// (the VM's device) on `disk0`.
    fn graph() -> Value {
        let names = named();
        let id = |n: &str| {
            1 + names
                .as_array()
                .unwrap()
                .iter()
                .position(|e| e["node-name"] == n)
                .unwrap()
        };
        let mut nodes: Vec<Value> = names
            .as_array()
            .unwrap()
            .iter()
            .map(|e| json!({"name": e["node-name"], "type": "block-driver", "id": id(e["node-name"].as_str().unwrap())}))
            .collect();
        nodes.push(json!({"name": "virtio0", "type": "block-backend", "id": 99}));
        let edge = |role: &str, parent: usize, child: usize| {
            json!({"name": role, "parent": parent, "child": child, "perm": ["consistent-read"],
                   "shared-perm": ["write-unchanged", "consistent-read"]})
        };
        let mut edges: Vec<Value> = [
            ("disk0", "proto0"),
            ("disk1", "pre1"),
            ("pre1", "proto1"),
            ("raw2", "proto2"),
            ("raw3", "proto3"),
            ("raw4", "proto4"),
            ("cor", "diskz"),
            ("diskz", "protoz"),
            ("diskw", "raww"),
            ("raww", "protow"),
            ("diskn", "nbdp"),
        ]
        .iter()
        .map(|(p, c)| edge("file", id(p), id(c)))
        .collect();
        edges.push(edge("backing", id("top"), id("base")));
        edges.push(edge("root", 99, id("disk0")));
        json!({"nodes": nodes, "edges": edges})
    }

    fn container(g: &BlockGraph, node: &str) -> Option<String> {
        match g.container_of(node)? {
            Container::Format(n) => Some(n.name.clone()),
            Container::Unsure(n) => Some(format!("unsure {}", n.name)),
        }
    }

    #[test]
    fn a_node_a_format_node_reads_as_its_file_is_a_container_directly_or_through_filters() {
        let with = BlockGraph::from_replies(&named(), Some(&graph()));
        let without = BlockGraph::from_replies(&named(), None);
        assert!(with.edges.is_some() && without.edges.is_none());
        for (g, how) in [(&with, "links"), (&without, "names")] {
            for (node, format) in [
                ("proto0", "disk0"),
                ("proto1", "disk1"),
                ("pre1", "disk1"),
                ("proto3", "raw3"),
                ("protoz", "diskz"),
                ("raww", "diskw"),
                ("protow", "diskw"),
                ("nbdp", "diskn"),
            ] {
                assert_eq!(container(g, node).as_deref(), Some(format), "{node}, {how}");
            }
            for disk in [
                "lone", "disk0", "disk1", "raw2", "proto2", "raw3", "raw4", "proto4", "cor",
                "diskz", "diskw", "diskn", "top", "base", "nosuch",
            ] {
                assert_eq!(container(g, disk), None, "{disk} is a disk, {how}");
            }
        }
    }

    #[test]
    fn a_raw_node_is_a_container_only_where_it_shows_a_slice() {
        // raw2 on proto2 without options holds the same bytes; a size that differs (raw3)
        // or a non-zero offset, however QEMU names it, shows a slice.
        let mut n = named();
        let with_offset = r#"json:{"offset": 512, "driver": "raw", "file": {"driver": "file", "filename": "/vm/r.raw"}}"#;
        n[6]["file"] = json!(with_offset);
        for g in [
            BlockGraph::from_replies(&n, Some(&graph())),
            BlockGraph::from_replies(&n, None),
        ] {
            assert_eq!(container(&g, "proto2").as_deref(), Some("raw2"));
        }
        let mut n = named();
        n[6]["image"]["virtual-size"] = json!(8 << 20);
        for g in [
            BlockGraph::from_replies(&n, Some(&graph())),
            BlockGraph::from_replies(&n, None),
        ] {
            assert_eq!(container(&g, "proto2").as_deref(), Some("raw2"));
        }
        // A qcow2 on a raw node whose size is its file's still reads that file as its
        // container.
        let mut n = named();
        n[15]["file"] = json!(
            r#"json:{"driver": "qcow2", "file": {"driver": "raw", "size": 197120, "file": {"driver": "file", "filename": "/vm/w.qcow2"}}}"#
        );
        n[16]["file"] = json!(
            r#"json:{"driver": "raw", "size": 197120, "file": {"driver": "file", "filename": "/vm/w.qcow2"}}"#
        );
        for g in [
            BlockGraph::from_replies(&n, Some(&graph())),
            BlockGraph::from_replies(&n, None),
        ] {
            assert_eq!(container(&g, "protow").as_deref(), Some("diskw"));
            assert_eq!(container(&g, "raww").as_deref(), Some("diskw"));
        }
    }

    #[test]
    fn without_the_links_a_json_name_that_cannot_be_followed_refuses_only_protocol_and_filter_nodes(
    ) {
        let mut n = named();
        n[3]["file"] = json!(r#"json:{"driver": "qcow2", "file": "pre1"}"#);
        let g = BlockGraph::from_replies(&n, None);
        assert_eq!(container(&g, "lone").as_deref(), Some("unsure disk1"));
        assert_eq!(container(&g, "pre1").as_deref(), Some("unsure disk1"));
        // A known match wins; format nodes stay disks.
        assert_eq!(container(&g, "proto0").as_deref(), Some("disk0"));
        for disk in ["disk0", "raw2", "diskz"] {
            assert_eq!(container(&g, disk), None, "{disk}");
        }
        // An innermost level of options without a file name (NBD's server) cannot be
        // compared with a plain name of the same driver, but with another driver it can.
        let mut n = named();
        n[18]["file"] = json!(
            r#"json:{"driver": "qcow2", "file": {"driver": "nbd", "server": {"type": "unix", "path": "/run/nbd.sock"}, "export": "e"}}"#
        );
        let g = BlockGraph::from_replies(&n, None);
        assert_eq!(container(&g, "nbdp").as_deref(), Some("unsure diskn"));
        assert_eq!(container(&g, "lone"), None);
    }

    #[test]
    fn links_to_block_backends_and_unknown_roles_do_not_make_a_container() {
        let mut g = graph();
        g["edges"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "data-file", "parent": 2, "child": 1}));
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
