//! Primitive readers and writers for request and response bodies: little-endian integers,
//! `u16`-length strings, `u32`-length byte strings, `u32`-count arrays.
//!
//! The reader never trusts a length: every length and count is checked against the bytes that are
//! actually left before anything is sliced or reserved.

use bytes::{BufMut, Bytes, BytesMut};

use super::ProtocolError;

/// Reads fields from the front of a body.
#[derive(Debug)]
pub struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub fn new(buf: Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], ProtocolError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(ProtocolError::Truncated(what))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, ProtocolError> {
        Ok(self.take(1, what)?[0])
    }

    pub fn i8(&mut self, what: &'static str) -> Result<i8, ProtocolError> {
        Ok(self.u8(what)? as i8)
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, ProtocolError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, ProtocolError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn i32(&mut self, what: &'static str) -> Result<i32, ProtocolError> {
        Ok(self.u32(what)? as i32)
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, ProtocolError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub fn i64(&mut self, what: &'static str) -> Result<i64, ProtocolError> {
        Ok(self.u64(what)? as i64)
    }

    pub fn bool(&mut self, what: &'static str) -> Result<bool, ProtocolError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(ProtocolError::Invalid(what)),
        }
    }

    pub fn string(&mut self, what: &'static str) -> Result<String, ProtocolError> {
        let n = self.u16(what)? as usize;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| ProtocolError::Invalid(what))
    }

    /// A byte string as a zero-copy slice of the body.
    pub fn bytes(&mut self, what: &'static str) -> Result<Bytes, ProtocolError> {
        let n = self.u32(what)? as usize;
        let start = self.pos;
        self.take(n, what)?;
        Ok(self.buf.slice(start..start + n))
    }

    /// An array count, refused if the remaining bytes cannot hold that many elements of at least
    /// `min_elem_bytes` each (so a count never reserves more than the body could fill).
    pub fn count(
        &mut self,
        min_elem_bytes: usize,
        what: &'static str,
    ) -> Result<usize, ProtocolError> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_elem_bytes.max(1)) > self.remaining() {
            return Err(ProtocolError::Truncated(what));
        }
        Ok(n)
    }

    pub fn array<T>(
        &mut self,
        min_elem_bytes: usize,
        what: &'static str,
        mut f: impl FnMut(&mut Reader) -> Result<T, ProtocolError>,
    ) -> Result<Vec<T>, ProtocolError> {
        let n = self.count(min_elem_bytes, what)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(f(self)?);
        }
        Ok(v)
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails if bytes are left over (a body must be consumed exactly).
    pub fn finish(self) -> Result<(), ProtocolError> {
        if self.remaining() != 0 {
            return Err(ProtocolError::Invalid("trailing bytes after the body"));
        }
        Ok(())
    }
}

/// Writes fields. Record bytes are not copied: they are collected as separate chunks, so a response
/// carrying stored batches goes to the socket as (header chunk, batch bytes, header chunk, ...).
#[derive(Debug, Default)]
pub struct Writer {
    chunks: Vec<Bytes>,
    cur: BytesMut,
}

/// Byte strings at least this long are passed by reference instead of copied into the header chunk.
const ZERO_COPY_MIN: usize = 512;

impl Writer {
    pub fn new() -> Self {
        Writer::default()
    }

    pub fn u8(&mut self, v: u8) {
        self.cur.put_u8(v);
    }

    pub fn i8(&mut self, v: i8) {
        self.cur.put_i8(v);
    }

    pub fn u16(&mut self, v: u16) {
        self.cur.put_u16_le(v);
    }

    pub fn u32(&mut self, v: u32) {
        self.cur.put_u32_le(v);
    }

    pub fn i32(&mut self, v: i32) {
        self.cur.put_i32_le(v);
    }

    pub fn u64(&mut self, v: u64) {
        self.cur.put_u64_le(v);
    }

    pub fn i64(&mut self, v: i64) {
        self.cur.put_i64_le(v);
    }

    pub fn bool(&mut self, v: bool) {
        self.cur.put_u8(u8::from(v));
    }

    /// A string; longer than `u16::MAX` bytes is cut at a char boundary (names are validated long
    /// before they get near that).
    pub fn string(&mut self, s: &str) {
        let mut end = s.len().min(u16::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.cur.put_u16_le(end as u16);
        self.cur.put_slice(&s.as_bytes()[..end]);
    }

    pub fn bytes(&mut self, b: &Bytes) {
        self.bytes_chunks(std::slice::from_ref(b));
    }

    /// A `u32`-length byte string given as consecutive chunks (each large one kept zero-copy).
    pub fn bytes_chunks(&mut self, chunks: &[Bytes]) {
        let total: usize = chunks.iter().map(Bytes::len).sum();
        self.cur.put_u32_le(total as u32);
        for b in chunks {
            if b.len() >= ZERO_COPY_MIN {
                let head = self.cur.split().freeze();
                if !head.is_empty() {
                    self.chunks.push(head);
                }
                self.chunks.push(b.clone());
            } else {
                self.cur.put_slice(b);
            }
        }
    }

    pub fn count(&mut self, n: usize) {
        self.cur.put_u32_le(n as u32);
    }

    /// The body as chunks, in order.
    pub fn finish(mut self) -> Vec<Bytes> {
        if !self.cur.is_empty() {
            self.chunks.push(self.cur.freeze());
        }
        self.chunks
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum::<usize>() + self.cur.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The chunks as one buffer: no copy when there is one chunk (as a decoded body is), else one copy.
pub fn concat(chunks: &[Bytes]) -> Bytes {
    match chunks {
        [one] => one.clone(),
        chunks => {
            let mut b = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for c in chunks {
                b.extend_from_slice(c);
            }
            b.freeze()
        }
    }
}
