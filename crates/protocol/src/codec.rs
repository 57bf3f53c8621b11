//! Little-endian field readers and writers. Every read checks the bytes left first, so a
//! malformed message is an error, never a panic or a large allocation.

use bulwark_format::{Digest, PointId};

use crate::{MsgType, ProtocolError, Result};

/// Reads fields from one message payload.
pub(crate) struct Rd<'a> {
    b: &'a [u8],
    pos: usize,
    ty: MsgType,
}

impl<'a> Rd<'a> {
    pub(crate) fn new(ty: MsgType, b: &'a [u8]) -> Self {
        Rd { b, pos: 0, ty }
    }
    pub(crate) fn bad(&self, why: impl Into<String>) -> ProtocolError {
        ProtocolError::Malformed {
            ty: self.ty,
            why: why.into(),
        }
    }
    pub(crate) fn left(&self) -> usize {
        self.b.len() - self.pos
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.left() {
            return Err(self.bad(format!(
                "needs {n} more bytes at offset {}, has {}",
                self.pos,
                self.left()
            )));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub(crate) fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.arr::<1>()?[0])
    }
    pub(crate) fn bool(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.bad(format!("boolean byte {v} is neither 0 nor 1"))),
        }
    }
    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    pub(crate) fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.arr()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    pub(crate) fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.arr()?))
    }
    pub(crate) fn digest(&mut self) -> Result<Digest> {
        Ok(Digest(self.arr()?))
    }
    pub(crate) fn id(&mut self) -> Result<PointId> {
        Ok(PointId(self.arr()?))
    }
    /// A `u16`-length UTF-8 string of at most `max` bytes.
    pub(crate) fn string(&mut self, max: usize) -> Result<String> {
        let len = self.u16()? as usize;
        if len > max {
            return Err(self.bad(format!("string of {len} bytes exceeds {max}")));
        }
        let b = self.take(len)?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| self.bad("string is not UTF-8"))
    }
    /// A `u32`-length byte string of at most `max` bytes.
    pub(crate) fn bytes(&mut self, max: usize) -> Result<Vec<u8>> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(self.bad(format!("byte string of {len} bytes exceeds {max}")));
        }
        Ok(self.take(len)?.to_vec())
    }
    /// A `u32` element count, checked against `max` and against the bytes left (each element
    /// takes at least `min_elem` bytes) before the caller allocates.
    pub(crate) fn count(&mut self, max: usize, min_elem: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n > max || n.saturating_mul(min_elem) > self.left() {
            return Err(self.bad(format!("count {n} exceeds its limit or the frame")));
        }
        Ok(n)
    }
    /// A count of items (bounded as by [`Rd::count`]), then that many items, each read by
    /// `item`.
    pub(crate) fn list<T>(
        &mut self,
        max: usize,
        min_elem: usize,
        mut item: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        let n = self.count(max, min_elem)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(item(self)?);
        }
        Ok(out)
    }
    /// The rest of the payload.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = &self.b[self.pos..];
        self.pos = self.b.len();
        s
    }
    /// Fails unless every byte was consumed.
    pub(crate) fn finish(self) -> Result<()> {
        if self.left() != 0 {
            return Err(self.bad(format!("{} trailing bytes", self.left())));
        }
        Ok(())
    }
}

/// Appends fields to a payload.
pub(crate) trait Wr {
    fn u8(&mut self, v: u8);
    fn u16(&mut self, v: u16);
    fn u32(&mut self, v: u32);
    fn i32(&mut self, v: i32);
    fn u64(&mut self, v: u64);
    fn i64(&mut self, v: i64);
    fn raw(&mut self, v: &[u8]);
    /// A `u16`-length string; longer strings are cut at a character boundary to `max`.
    fn string(&mut self, s: &str, max: usize);
    fn bytes(&mut self, v: &[u8]);
}

impl Wr for Vec<u8> {
    fn u8(&mut self, v: u8) {
        self.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn raw(&mut self, v: &[u8]) {
        self.extend_from_slice(v);
    }
    fn string(&mut self, s: &str, max: usize) {
        let mut end = s.len().min(max).min(u16::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u16(end as u16);
        self.raw(&s.as_bytes()[..end]);
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.raw(v);
    }
}
