//! A blocking client for the immutability service, used by the repository.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bulwark_format::PointId;

use crate::frame::{read_frame, write_frame, FrameError};
use crate::layout::incoming_path;
use crate::msg::{
    DecodeError, ErrorCode, FileInfo, Request, Response, StatusInfo, Target, TimePreview,
};

/// Default time a request may take before the client gives up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request to the immutability service did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the immutability service at {path}: {source}; is bulwark-immutd running, and is this the socket path from its configuration?")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the immutability service: {0}")]
    Frame(#[from] FrameError),
    #[error("the immutability service sent an invalid answer: {0}")]
    Decode(#[from] DecodeError),
    #[error("the immutability service answered {got} to a {asked} request")]
    Unexpected {
        asked: &'static str,
        got: &'static str,
    },
    #[error("the immutability service refused the {request} request ({code:?}): {message}")]
    Refused {
        request: &'static str,
        code: ErrorCode,
        message: String,
    },
}

impl ClientError {
    /// The service's error code when it refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A connection to `bulwark-immutd`. Requests are answered in order, one at a time.
pub struct ImmutClient {
    stream: UnixStream,
}

fn kind(r: &Response) -> &'static str {
    match r {
        Response::Sealed(_) => "sealed",
        Response::Entry(_) => "entry",
        Response::Extended { .. } => "extended",
        Response::Deleted { .. } => "deleted",
        Response::Status(_) => "status",
        Response::TimeAccepted { .. } => "time-accepted",
        Response::TimePreview(_) => "time-preview",
        Response::Entries { .. } => "entries",
        Response::Statement { .. } => "statement",
        Response::Applied { .. } => "applied",
        Response::Error { .. } => "error",
    }
}

impl ImmutClient {
    /// Connects to the service's Unix socket.
    pub fn connect(socket: &Path) -> Result<ImmutClient, ClientError> {
        let stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
            path: socket.to_path_buf(),
            source,
        })?;
        let c = ImmutClient { stream };
        c.set_timeout(DEFAULT_TIMEOUT)?;
        Ok(c)
    }

    /// Sets how long one request may take.
    pub fn set_timeout(&self, t: Duration) -> Result<(), ClientError> {
        let io = |e| ClientError::Frame(FrameError::Io(e));
        self.stream.set_read_timeout(Some(t)).map_err(io)?;
        self.stream.set_write_timeout(Some(t)).map_err(io)?;
        Ok(())
    }

    /// Sends any request and returns the service's answer, `Error` answers included.
    pub fn request(&mut self, req: &Request) -> Result<Response, ClientError> {
        if let Err(e) = write_frame(&mut self.stream, &req.encode()) {
            // A peer refused at accept is answered and closed before its request is read:
            // the answer is still there to read, and says more than the broken pipe.
            if let Ok(Ok(r @ Response::Error { .. })) =
                read_frame(&mut self.stream).map(|p| Response::decode(&p))
            {
                return Ok(r);
            }
            return Err(e.into());
        }
        let payload = read_frame(&mut self.stream)?;
        Ok(Response::decode(&payload)?)
    }

    fn call(&mut self, req: Request) -> Result<Response, ClientError> {
        let name = req.name();
        match self.request(&req)? {
            Response::Error { code, message } => Err(ClientError::Refused {
                request: name,
                code,
                message,
            }),
            r => Ok(r),
        }
    }

    /// Seals `incoming_path(repo, point)`. Returns the sealed path, expiry and the root digest
    /// the service read from the trailer. Repeating the request for a sealed point returns
    /// its entry.
    pub fn seal(&mut self, repo: &Path, point: PointId) -> Result<FileInfo, ClientError> {
        self.seal_path(&incoming_path(repo, point))
    }

    /// Seals the file at `incoming` (which must be `REPO/incoming/<point>.bwrp`).
    pub fn seal_path(&mut self, incoming: &Path) -> Result<FileInfo, ClientError> {
        match self.call(Request::Seal {
            path: incoming.to_path_buf(),
        })? {
            Response::Sealed(i) => Ok(i),
            r => Err(ClientError::Unexpected {
                asked: "seal",
                got: kind(&r),
            }),
        }
    }

    /// Raises the expiry of a sealed file to at least `until_unix`; returns the entry and
    /// whether the service capped the request at its maximum period.
    pub fn extend(
        &mut self,
        target: Target,
        until_unix: i64,
    ) -> Result<(FileInfo, bool), ClientError> {
        match self.call(Request::Extend { target, until_unix })? {
            Response::Extended { info, capped } => Ok((info, capped)),
            r => Err(ClientError::Unexpected {
                asked: "extend",
                got: kind(&r),
            }),
        }
    }

    /// The ledger entry of a sealed file.
    pub fn query(&mut self, target: Target) -> Result<FileInfo, ClientError> {
        match self.call(Request::Query { target })? {
            Response::Entry(i) => Ok(i),
            r => Err(ClientError::Unexpected {
                asked: "query",
                got: kind(&r),
            }),
        }
    }

    /// Deletes a sealed file whose protection has expired; returns its path.
    pub fn delete(&mut self, target: Target) -> Result<PathBuf, ClientError> {
        match self.call(Request::Delete { target })? {
            Response::Deleted { path } => Ok(path),
            r => Err(ClientError::Unexpected {
                asked: "delete",
                got: kind(&r),
            }),
        }
    }

    /// The service's clock, alert and counters.
    pub fn status(&mut self) -> Result<StatusInfo, ClientError> {
        match self.call(Request::Status)? {
            Response::Status(s) => Ok(s),
            r => Err(ClientError::Unexpected {
                asked: "status",
                got: kind(&r),
            }),
        }
    }

    /// Root only: accept the current wall-clock time after a clock alert.
    pub fn time_accept(&mut self) -> Result<i64, ClientError> {
        match self.call(Request::TimeAccept)? {
            Response::TimeAccepted { trusted_unix } => Ok(trusted_unix),
            r => Err(ClientError::Unexpected {
                asked: "time-accept",
                got: kind(&r),
            }),
        }
    }

    /// Root only: what `time_accept` would unlock now, without changing anything.
    pub fn time_preview(&mut self) -> Result<TimePreview, ClientError> {
        match self.call(Request::TimePreview)? {
            Response::TimePreview(p) => Ok(p),
            r => Err(ClientError::Unexpected {
                asked: "time-preview",
                got: kind(&r),
            }),
        }
    }

    /// Root only: the statement approvers must sign for `action` (`release` of `targets`,
    /// `time-accept`, `config`), valid for `valid_secs`.
    pub fn prepare(
        &mut self,
        action: &str,
        targets: &[String],
        valid_secs: u32,
    ) -> Result<Vec<u8>, ClientError> {
        let req = Request::Prepare {
            action: action.to_string(),
            targets: targets.to_vec(),
            valid_secs,
        };
        match self.call(req)? {
            Response::Statement { text } => Ok(text),
            r => Err(ClientError::Unexpected {
                asked: "prepare",
                got: kind(&r),
            }),
        }
    }

    /// Root only: performs the action of an issued statement signed by the approvers.
    pub fn apply(
        &mut self,
        statement: &[u8],
        signatures: &[Vec<u8>],
    ) -> Result<String, ClientError> {
        let req = Request::Apply {
            statement: statement.to_vec(),
            signatures: signatures.to_vec(),
        };
        match self.call(req)? {
            Response::Applied { summary } => Ok(summary),
            r => Err(ClientError::Unexpected {
                asked: "apply",
                got: kind(&r),
            }),
        }
    }

    /// Root only: clears the alerts of tampering the service has undone.
    pub fn ack_alerts(&mut self) -> Result<String, ClientError> {
        match self.call(Request::AckAlerts)? {
            Response::Applied { summary } => Ok(summary),
            r => Err(ClientError::Unexpected {
                asked: "ack-alerts",
                got: kind(&r),
            }),
        }
    }

    /// Every ledger entry of the guarded repository `repo` (all repositories when empty),
    /// read page by page.
    pub fn list(&mut self, repo: &Path) -> Result<Vec<FileInfo>, ClientError> {
        let mut out = Vec::new();
        let mut cursor = 0;
        loop {
            let req = Request::List {
                repo: repo.to_path_buf(),
                cursor,
            };
            match self.call(req)? {
                Response::Entries {
                    entries,
                    next_cursor,
                } => {
                    out.extend(entries);
                    // A cursor that does not advance would loop forever.
                    if next_cursor == 0 || next_cursor <= cursor {
                        return Ok(out);
                    }
                    cursor = next_cursor;
                }
                r => {
                    return Err(ClientError::Unexpected {
                        asked: "list",
                        got: kind(&r),
                    })
                }
            }
        }
    }
}
