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

/// The error for an answer `r` that does not answer `asked`.
fn unexpected(asked: &'static str, r: &Response) -> ClientError {
    ClientError::Unexpected {
        asked,
        got: kind(r),
    }
}

/// Sends the request `$req` and takes the one answer `$answer => $out` it expects; any other
/// answer is [`ClientError::Unexpected`] for `$asked`.
macro_rules! answer {
    ($self:ident, $req:expr, $asked:literal, $answer:pat => $out:expr) => {
        match $self.call($req)? {
            $answer => Ok($out),
            r => Err(unexpected($asked, &r)),
        }
    };
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
        let req = Request::Seal {
            path: incoming.to_path_buf(),
        };
        answer!(self, req, "seal", Response::Sealed(i) => i)
    }

    /// Raises the expiry of a sealed file to at least `until_unix`; returns the entry and
    /// whether the service capped the request at its maximum period.
    pub fn extend(
        &mut self,
        target: Target,
        until_unix: i64,
    ) -> Result<(FileInfo, bool), ClientError> {
        answer!(
            self,
            Request::Extend { target, until_unix },
            "extend",
            Response::Extended { info, capped } => (info, capped)
        )
    }

    /// The ledger entry of a sealed file.
    pub fn query(&mut self, target: Target) -> Result<FileInfo, ClientError> {
        answer!(self, Request::Query { target }, "query", Response::Entry(i) => i)
    }

    /// Deletes a sealed file whose protection has expired; returns its path.
    pub fn delete(&mut self, target: Target) -> Result<PathBuf, ClientError> {
        answer!(self, Request::Delete { target }, "delete", Response::Deleted { path } => path)
    }

    /// The service's clock, alert and counters.
    pub fn status(&mut self) -> Result<StatusInfo, ClientError> {
        answer!(self, Request::Status, "status", Response::Status(s) => s)
    }

    /// Root only: accept the current wall-clock time after a clock alert.
    pub fn time_accept(&mut self) -> Result<i64, ClientError> {
        answer!(
            self,
            Request::TimeAccept,
            "time-accept",
            Response::TimeAccepted { trusted_unix } => trusted_unix
        )
    }

    /// Root only: what `time_accept` would unlock now, without changing anything.
    pub fn time_preview(&mut self) -> Result<TimePreview, ClientError> {
        answer!(self, Request::TimePreview, "time-preview", Response::TimePreview(p) => p)
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
        answer!(self, req, "prepare", Response::Statement { text } => text)
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
        answer!(self, req, "apply", Response::Applied { summary } => summary)
    }

    /// Root only: clears the alerts of tampering the service has undone.
    pub fn ack_alerts(&mut self) -> Result<String, ClientError> {
        answer!(
            self,
            Request::AckAlerts,
            "ack-alerts",
            Response::Applied { summary } => summary
        )
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
                r => return Err(unexpected("list", &r)),
            }
        }
    }
}
