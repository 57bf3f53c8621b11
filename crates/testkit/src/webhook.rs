//! A local HTTP receiver for webhook notifications: keeps every request (path, headers, JSON
//! body) and answers with the statuses it was given, then 200.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

/// The receiver; it runs until the test process ends.
pub struct Hook {
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    got: Arc<Mutex<Vec<Request>>>,
}

impl Hook {
    /// A receiver answering 200 to everything.
    pub fn start() -> Hook {
        Hook::answering(&[])
    }

    /// A receiver answering `statuses` to the first requests, in order, then 200. A request
    /// is kept before it is answered, whatever the answer.
    pub fn answering(statuses: &[u16]) -> Hook {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let mut statuses: VecDeque<u16> = statuses.iter().copied().collect();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut headers = Vec::new();
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.trim().split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            len = v.trim().parse().unwrap_or(0).min(1 << 20);
                        }
                        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
                    }
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                g.lock().unwrap().push(Request {
                    path,
                    headers,
                    body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                });
                let status = statuses.pop_front().unwrap_or(200);
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Hook { url, got }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.got.lock().unwrap().clone()
    }

    /// The generic payloads of `event` received.
    pub fn events(&self, event: &str) -> Vec<serde_json::Value> {
        self.requests()
            .into_iter()
            .map(|r| r.body)
            .filter(|b| b["event"] == event)
            .collect()
    }
}
