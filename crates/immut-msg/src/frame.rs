//! Framing: a little-endian `u32` length, then that many payload bytes. The length is
//! checked against [`MAX_FRAME`] before anything is allocated.

use std::io::{self, Read, Write};

/// Largest payload either side sends or accepts.
pub const MAX_FRAME: u32 = 64 * 1024;

/// What can go wrong reading or writing a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("I/O error on the immutability service socket: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {0} bytes is empty or larger than the {MAX_FRAME}-byte limit")]
    Length(u32),
    #[error("connection closed")]
    Closed,
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> Result<(), FrameError> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    if len == 0 || len > MAX_FRAME {
        return Err(FrameError::Length(len));
    }
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame. A clean end of stream before the length is [`FrameError::Closed`].
pub fn read_frame(r: &mut impl Read) -> Result<Vec<u8>, FrameError> {
    let mut lb = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut lb[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_le_bytes(lb);
    if len == 0 || len > MAX_FRAME {
        return Err(FrameError::Length(len));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_lengths_are_bounded() {
        let mut v = Vec::new();
        write_frame(&mut v, b"hello").unwrap();
        assert_eq!(read_frame(&mut &v[..]).unwrap(), b"hello");
        assert!(matches!(read_frame(&mut &[][..]), Err(FrameError::Closed)));
        let huge = (MAX_FRAME + 1).to_le_bytes();
        assert!(matches!(
            read_frame(&mut &huge[..]),
            Err(FrameError::Length(_))
        ));
        assert!(matches!(
            read_frame(&mut &0u32.to_le_bytes()[..]),
            Err(FrameError::Length(0))
        ));
        assert!(write_frame(&mut Vec::new(), &vec![0; MAX_FRAME as usize + 1]).is_err());
        let short = [5u8, 0, 0, 0, b'a'];
        assert!(matches!(
            read_frame(&mut &short[..]),
            Err(FrameError::Io(_))
        ));
    }
}
