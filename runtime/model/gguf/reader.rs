//! A little-endian cursor over untrusted bytes: every read is bounds-checked
//! and every length is compared with the bytes left before anything is
//! allocated from it.

use crate::{HearthError, Result};

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Length of the whole file when `buf` is only its first bytes.
    file_len: u64,
    /// Set when a read failed only because `buf` is a prefix: the caller
    /// retries with more of the file.
    pub short: bool,
    /// Array elements decoded so far, against [`MAX_META_ELEMENTS`].
    pub elements: u64,
}

/// The most metadata array elements one file may hold in all. Each decodes
/// to a value of 32 bytes whatever its size in the file (a u8 takes one), so
/// this bounds the memory the metadata takes however it is read (mapped,
/// in memory or in ranges); real vocabularies hold a few hundred thousand.
pub const MAX_META_ELEMENTS: u64 = 1 << 24;

fn truncated(what: &str, pos: usize, need: u64, len: u64) -> HearthError {
    HearthError::InvalidFile(format!(
        "GGUF truncated: {what} at byte {pos} needs {need} bytes, file has {len}"
    ))
}

impl<'a> Reader<'a> {
    /// A reader over the first `buf.len()` bytes of a file of `file_len` bytes.
    pub fn prefix(buf: &'a [u8], file_len: u64) -> Self {
        Reader {
            buf,
            pos: 0,
            file_len,
            short: false,
            elements: 0,
        }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn bytes(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() as u64 {
            let left_in_file = self.file_len - self.pos as u64;
            self.short = n <= left_in_file;
            return Err(truncated(what, self.pos, n, self.file_len));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let b = self.bytes(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    pub fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    pub fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    pub fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    pub fn f32(&mut self, what: &str) -> Result<f32> {
        Ok(f32::from_le_bytes(self.array(what)?))
    }
    pub fn f64(&mut self, what: &str) -> Result<f64> {
        Ok(f64::from_le_bytes(self.array(what)?))
    }

    /// A GGUF string: u64 length + UTF-8 bytes (invalid UTF-8 is replaced, not fatal).
    pub fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        let b = self.bytes(n, what)?;
        Ok(String::from_utf8_lossy(b).into_owned())
    }

    /// Checks that `count` items of at least `min_size` bytes each can still
    /// fit in the file; returns `count` as usize for a safe `with_capacity`.
    pub fn check_count(&self, count: u64, min_size: u64, what: &str) -> Result<usize> {
        let left = self.file_len - self.pos as u64;
        match count.checked_mul(min_size) {
            Some(n) if n <= left => Ok(count as usize),
            _ => Err(HearthError::InvalidFile(format!(
                "GGUF {what} count {count} at byte {} cannot fit in the {left} bytes left of the file",
                self.pos,
            ))),
        }
    }
}
