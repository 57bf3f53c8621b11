//! The Unix socket: one thread per connection (a bounded number), every request handled
//! under the service lock, and the timer that unlocks expired files.

use std::fs::Permissions;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulwark_immut_msg::{read_frame, write_frame, ErrorCode, FrameError, Request, Response};

use crate::error::{ImmutdError, Result};
use crate::service::Service;

/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 16;
/// A connection idle this long is closed.
const IDLE: Duration = Duration::from_secs(30);

/// Binds the socket: its folder root-owned, a stale socket replaced, mode 0666 (the peer's
/// uid, checked on every connection, is the real gate; others get an audited refusal).
pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(ImmutdError::io("creating socket folder", dir))?;
            std::fs::set_permissions(dir, Permissions::from_mode(0o755))
                .map_err(ImmutdError::io("chmod", dir))?;
        }
        crate::config::check_root_owned(dir, "socket folder")?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(ImmutdError::Other(format!(
                    "another service is listening on {}",
                    path.display()
                )));
            }
            std::fs::remove_file(path).map_err(ImmutdError::io("removing stale socket", path))?;
        }
        Ok(_) => {
            return Err(ImmutdError::Other(format!(
                "{} exists and is not a socket; remove it",
                path.display()
            )));
        }
        Err(_) => {}
    }
    let l = UnixListener::bind(path).map_err(ImmutdError::io("binding socket", path))?;
    std::fs::set_permissions(path, Permissions::from_mode(0o666))
        .map_err(ImmutdError::io("chmod", path))?;
    Ok(l)
}

fn serve_one(svc: &Mutex<Service>, mut stream: UnixStream) {
    let peer = match bulwark_sys::peer_cred(&stream) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bulwark-immutd: cannot read the peer's credentials, closing: {e}");
            return;
        }
    };
    let _ = stream.set_read_timeout(Some(IDLE));
    let _ = stream.set_write_timeout(Some(IDLE));
    loop {
        let payload = match read_frame(&mut stream) {
            Ok(p) => p,
            Err(FrameError::Closed) => return,
            Err(e) => {
                let r = Response::Error {
                    code: ErrorCode::BadRequest,
                    message: e.to_string(),
                };
                let _ = write_frame(&mut stream, &r.encode());
                return;
            }
        };
        let (resp, close) = match Request::decode(&payload) {
            Ok(req) => {
                let mut s = svc.lock().unwrap_or_else(|p| p.into_inner());
                let r = s.handle(peer, req);
                let close = matches!(
                    r,
                    Response::Error {
                        code: ErrorCode::NotPermitted,
                        ..
                    }
                );
                (r, close)
            }
            Err(e) => (
                Response::Error {
                    code: ErrorCode::BadRequest,
                    message: e.to_string(),
                },
                true,
            ),
        };
        if write_frame(&mut stream, &resp.encode()).is_err() || close {
            return;
        }
    }
}

/// Accepts connections forever on a thread of its own.
pub fn spawn_acceptor(svc: Arc<Mutex<Service>>, listener: UnixListener) {
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(stream) = conn else { continue };
            if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                active.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let svc = svc.clone();
            let active = active.clone();
            std::thread::spawn(move || {
                serve_one(&svc, stream);
                active.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
}

/// Runs the timer forever: every `tick` the clock is checked and expired files unlocked.
pub fn run_timer(svc: Arc<Mutex<Service>>, tick: Duration) -> Result<()> {
    loop {
        std::thread::sleep(tick);
        let mut s = svc.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = s.tick() {
            eprintln!("bulwark-immutd: timer step failed: {e}");
        }
    }
}
