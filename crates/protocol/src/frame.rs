//! Framing: `u32` little-endian payload length, `u8` type, payload. The length is checked
//! against the type's limit before the payload is read or any memory is reserved for it.

use std::io::{self, Read, Write};

use crate::{Msg, MsgType, ProtocolError, Result};

/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = 5;

/// A reusable receive buffer; it grows to the largest frame received, at most
/// [`crate::MAX_DATA_PAYLOAD`]. Bytes once zeroed stay initialized, so a frame is read
/// into memory without another pass that zeroes it first.
#[derive(Default)]
pub struct FrameBuf {
    buf: Vec<u8>,
    /// Length of the last frame's payload; `buf` may be longer.
    len: usize,
    ty: Option<MsgType>,
}

/// A received payload taken out of a [`FrameBuf`]: `buf[..len]`.
pub struct Payload {
    pub buf: Vec<u8>,
    pub len: usize,
}

impl Payload {
    /// The payload's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl FrameBuf {
    /// Decodes the frame last read by [`read_frame`].
    pub fn msg(&self) -> Result<Msg<'_>> {
        let ty = self.ty.ok_or(ProtocolError::Closed)?;
        Msg::decode(ty, &self.buf[..self.len])
    }
    /// The last frame's type.
    pub fn ty(&self) -> Option<MsgType> {
        self.ty
    }
    /// Takes the last frame's payload, leaving `spare` (a buffer of an earlier payload, its
    /// bytes kept) as the buffer for the next frame: lets a receiver hand a block to a worker
    /// without copying it.
    pub fn swap_payload(&mut self, spare: Vec<u8>) -> Payload {
        self.ty = None;
        let len = std::mem::take(&mut self.len);
        Payload {
            buf: std::mem::replace(&mut self.buf, spare),
            len,
        }
    }
}

/// Validates a frame header: a known type and a length within that type's limit.
pub fn check_header(h: [u8; FRAME_HEADER_LEN]) -> Result<(MsgType, u32)> {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let ty = MsgType::from_code(h[4]).ok_or(ProtocolError::UnknownType(h[4]))?;
    if len > ty.max_payload() {
        return Err(ProtocolError::TooLarge {
            ty,
            len,
            max: ty.max_payload(),
        });
    }
    Ok((ty, len))
}

/// Reads one frame into `fb`. `started` is called once the first byte of the frame has
/// arrived (the server uses it to switch from its idle deadline to its per-frame deadline).
/// A clean end of stream before the first byte is [`ProtocolError::Closed`].
pub fn read_frame<R: Read>(
    r: &mut R,
    fb: &mut FrameBuf,
    mut started: impl FnMut(&mut R),
) -> Result<MsgType> {
    fb.ty = None;
    let mut h = [0u8; FRAME_HEADER_LEN];
    let mut got = 0;
    while got < h.len() {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Err(ProtocolError::Closed),
            Ok(0) => return Err(ProtocolError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => {
                if got == 0 {
                    started(r);
                }
                got += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let (ty, len) = check_header(h)?;
    let len = len as usize;
    if fb.buf.len() < len {
        fb.buf.resize(len, 0);
    }
    fb.len = 0;
    r.read_exact(&mut fb.buf[..len])?;
    fb.len = len;
    fb.ty = Some(ty);
    Ok(ty)
}

/// Writes one message as a frame. A `Block`'s data is written after its header without
/// being copied.
pub fn write_msg(w: &mut impl Write, m: &Msg<'_>) -> Result<()> {
    let mut b = Vec::with_capacity(128);
    b.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    m.encode_head(&mut b);
    let data: &[u8] = match m {
        Msg::Block(blk) => blk.data,
        _ => &[],
    };
    let len = b.len() - FRAME_HEADER_LEN + data.len();
    let ty = m.ty();
    if len > ty.max_payload() as usize {
        return Err(ProtocolError::TooLarge {
            ty,
            len: len as u32,
            max: ty.max_payload(),
        });
    }
    b[..4].copy_from_slice(&(len as u32).to_le_bytes());
    b[4] = ty.code();
    if data.len() < 64 * 1024 {
        b.extend_from_slice(data);
        w.write_all(&b)?;
    } else {
        w.write_all(&b)?;
        w.write_all(data)?;
    }
    Ok(())
}
