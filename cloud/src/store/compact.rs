//! A small binary encoding for values the cloud writes often and reads back itself: unsigned
//! integers as LEB128 varints, signed ones zigzag-encoded first, strings and byte strings
//! length-prefixed. A value written this way starts with a format byte of its owner's choosing
//! that no JSON text starts with, so an owner can still read the JSON it wrote before.
//!
//! A [`Reader`] never panics on bad bytes: every error names the byte offset and what was
//! expected there.

use std::fmt;

/// Why bytes could not be read: where, and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub at: usize,
    pub expected: &'static str,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "byte {}: expected {}", self.at, self.expected)
    }
}

impl std::error::Error for Malformed {}

/// Appends `v` as a varint to `bytes`.
pub fn push_u64(bytes: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        bytes.push((v as u8) | 0x80);
        v >>= 7;
    }
    bytes.push(v as u8);
}

/// Appends values to a byte buffer.
#[derive(Debug, Default)]
pub struct Writer {
    pub bytes: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(n: usize) -> Writer {
        Writer {
            bytes: Vec::with_capacity(n),
        }
    }

    pub fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }

    pub fn bool(&mut self, v: bool) {
        self.bytes.push(u8::from(v));
    }

    pub fn u64(&mut self, v: u64) {
        push_u64(&mut self.bytes, v);
    }

    pub fn i64(&mut self, v: i64) {
        self.u64(((v << 1) ^ (v >> 63)) as u64);
    }

    pub fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.bytes.extend_from_slice(v);
    }

    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
}

/// Reads values back in the order a [`Writer`] wrote them.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    /// The offset of the next byte to read.
    pub fn position(&self) -> usize {
        self.at
    }

    pub fn is_empty(&self) -> bool {
        self.at == self.bytes.len()
    }

    /// An error at the current position.
    pub fn malformed(&self, expected: &'static str) -> Malformed {
        Malformed {
            at: self.at,
            expected,
        }
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, Malformed> {
        let v = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| self.malformed(what))?;
        self.at += 1;
        Ok(v)
    }

    pub fn bool(&mut self, what: &'static str) -> Result<bool, Malformed> {
        match self.bytes.get(self.at) {
            Some(0) => {
                self.at += 1;
                Ok(false)
            }
            Some(1) => {
                self.at += 1;
                Ok(true)
            }
            _ => Err(self.malformed(what)),
        }
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, Malformed> {
        let start = self.at;
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.bytes.get(self.at) else {
                self.at = start;
                return Err(self.malformed(what));
            };
            self.at += 1;
            // The tenth byte may carry only the top bit.
            if shift == 63 && b > 1 {
                break;
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.at = start;
        Err(self.malformed(what))
    }

    pub fn i64(&mut self, what: &'static str) -> Result<i64, Malformed> {
        let v = self.u64(what)?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// A length that is at most what is left, so a bad length never allocates.
    pub fn len(&mut self, what: &'static str) -> Result<usize, Malformed> {
        let start = self.at;
        let n = self.u64(what)?;
        match usize::try_from(n) {
            Ok(n) if n <= self.bytes.len() - self.at => Ok(n),
            _ => {
                self.at = start;
                Err(self.malformed(what))
            }
        }
    }

    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], Malformed> {
        let n = self.len(what)?;
        let v = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(v)
    }

    pub fn str(&mut self, what: &'static str) -> Result<&'a str, Malformed> {
        let start = self.at;
        let v = self.bytes(what)?;
        std::str::from_utf8(v).map_err(|_| Malformed {
            at: start,
            expected: what,
        })
    }

    /// Fails unless every byte was read.
    pub fn end(&self) -> Result<(), Malformed> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self.malformed("the end"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn what_is_written_reads_back(
            a in any::<u64>(), b in any::<i64>(), s in ".{0,40}", raw in proptest::collection::vec(any::<u8>(), 0..50), f in any::<bool>()
        ) {
            let mut w = Writer::default();
            w.u64(a);
            w.i64(b);
            w.str(&s);
            w.bytes(&raw);
            w.bool(f);
            w.u8(7);
            let mut r = Reader::new(&w.bytes);
            prop_assert_eq!(r.u64("a").unwrap(), a);
            prop_assert_eq!(r.i64("b").unwrap(), b);
            prop_assert_eq!(r.str("s").unwrap(), s.as_str());
            prop_assert_eq!(r.bytes("raw").unwrap(), raw.as_slice());
            prop_assert_eq!(r.bool("f").unwrap(), f);
            prop_assert_eq!(r.u8("seven").unwrap(), 7);
            prop_assert!(r.end().is_ok());
        }

        #[test]
        fn any_bytes_read_or_fail_with_a_position_inside_them(
            raw in proptest::collection::vec(any::<u8>(), 0..40)
        ) {
            let mut r = Reader::new(&raw);
            loop {
                let before = r.position();
                let step = match before % 4 {
                    0 => r.u64("n").map(|_| ()),
                    1 => r.str("s").map(|_| ()),
                    2 => r.i64("i").map(|_| ()),
                    _ => r.bool("b").map(|_| ()),
                };
                match step {
                    Ok(()) => prop_assert!(r.position() > before),
                    Err(e) => {
                        prop_assert_eq!(e.at, before);
                        prop_assert!(e.at <= raw.len());
                        break;
                    }
                }
            }
        }
    }

    #[test]
    fn small_numbers_take_one_byte_and_errors_name_their_byte() {
        let mut w = Writer::default();
        w.u64(127);
        w.i64(-64);
        assert_eq!(w.bytes, [127, 127]);
        let mut r = Reader::new(&[0x80, 0x80]);
        assert_eq!(
            r.u64("a count").unwrap_err().to_string(),
            "byte 0: expected a count"
        );
        // A length longer than what is left.
        let mut r = Reader::new(&[1, 5, b'a']);
        assert_eq!(r.u8("tag").unwrap(), 1);
        assert_eq!(
            r.str("a name").unwrap_err().to_string(),
            "byte 1: expected a name"
        );
        // Eleven continuation bytes are no u64.
        let mut r = Reader::new(&[0xff; 11]);
        assert_eq!(r.u64("n").unwrap_err().at, 0);
    }
}
