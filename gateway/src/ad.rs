//! Advertising-data (AD) structures: the length-type-value records of one BLE advertisement,
//! as they are on air (Core Specification, Vol 3, Part C, §11). Every scan source (BlueZ,
//! replay, tests) hands the frame decoders this form, so there is one parser for all of them.
//!
//! This module only splits and builds records; what a record means is the frame decoders' job.

/// AD type: flags.
pub const AD_FLAGS: u8 = 0x01;
/// AD type: complete list of 16-bit service UUIDs.
pub const AD_COMPLETE_16BIT_UUIDS: u8 = 0x03;
/// AD type: service data with a 16-bit UUID.
pub const AD_SERVICE_DATA_16: u8 = 0x16;
/// AD type: manufacturer-specific data (company id first, little-endian).
pub const AD_MANUFACTURER_DATA: u8 = 0xFF;

/// Longest advertising data accepted: extended advertising allows up to 1650 bytes (legacy
/// advertisements carry at most 31, plus 31 of scan response).
pub const MAX_AD_BYTES: usize = 1650;

/// One AD structure, borrowed from the advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdStructure<'a> {
    pub ad_type: u8,
    pub data: &'a [u8],
    /// Byte offset of this structure's length byte in the advertisement.
    pub offset: usize,
}

/// What is wrong with an advertisement's AD structures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdError {
    #[error("AD structure at byte {offset} declares {declared} bytes but only {available} remain")]
    Truncated {
        offset: usize,
        declared: usize,
        available: usize,
    },
    #[error("advertisement is {0} bytes; the longest is {MAX_AD_BYTES}")]
    TooLong(usize),
}

impl AdError {
    /// The byte offset the error is at.
    pub fn offset(&self) -> usize {
        match self {
            AdError::Truncated { offset, .. } => *offset,
            AdError::TooLong(_) => MAX_AD_BYTES,
        }
    }
}

/// Iterates the AD structures of an advertisement; yields one error and stops at a malformed
/// one. A zero length byte ends the data early (the rest is padding), as the specification allows.
#[derive(Debug, Clone)]
pub struct AdStructures<'a> {
    bytes: &'a [u8],
    pos: usize,
    done: bool,
}

/// Walks `bytes` as AD structures.
pub fn ad_structures(bytes: &[u8]) -> AdStructures<'_> {
    AdStructures {
        bytes,
        pos: 0,
        done: false,
    }
}

impl<'a> Iterator for AdStructures<'a> {
    type Item = Result<AdStructure<'a>, AdError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.bytes.len() {
            return None;
        }
        if self.bytes.len() > MAX_AD_BYTES {
            self.done = true;
            return Some(Err(AdError::TooLong(self.bytes.len())));
        }
        let offset = self.pos;
        let declared = usize::from(self.bytes[offset]);
        if declared == 0 {
            self.pos = self.bytes.len();
            return None;
        }
        let available = self.bytes.len() - offset - 1;
        if declared > available {
            self.done = true;
            return Some(Err(AdError::Truncated {
                offset,
                declared,
                available,
            }));
        }
        self.pos = offset + 1 + declared;
        Some(Ok(AdStructure {
            ad_type: self.bytes[offset + 1],
            data: &self.bytes[offset + 2..self.pos],
            offset,
        }))
    }
}

/// Every AD structure, or the first error.
pub fn parse_ad(bytes: &[u8]) -> Result<Vec<AdStructure<'_>>, AdError> {
    ad_structures(bytes).collect()
}

/// Builds an advertisement one AD structure at a time (for simulators and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdBuilder {
    bytes: Vec<u8>,
}

impl AdBuilder {
    pub fn new() -> AdBuilder {
        AdBuilder::default()
    }

    /// Appends one structure; `data` longer than 254 bytes cannot be one structure and is cut.
    pub fn push(mut self, ad_type: u8, data: &[u8]) -> AdBuilder {
        let data = &data[..data.len().min(254)];
        self.bytes.push(data.len() as u8 + 1);
        self.bytes.push(ad_type);
        self.bytes.extend_from_slice(data);
        self
    }

    pub fn build(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_structures_with_offsets() {
        let adv = AdBuilder::new()
            .push(AD_FLAGS, &[0x06])
            .push(AD_COMPLETE_16BIT_UUIDS, &[0x6f, 0xfe])
            .build();
        let ads = parse_ad(&adv).unwrap();
        assert_eq!(ads.len(), 2);
        assert_eq!(
            (ads[1].ad_type, ads[1].data, ads[1].offset),
            (0x03, &[0x6f, 0xfe][..], 3)
        );
    }

    #[test]
    fn zero_length_ends_early() {
        let ads = parse_ad(&[0x02, 0x01, 0x06, 0x00, 0xde, 0xad]).unwrap();
        assert_eq!(ads.len(), 1);
    }

    #[test]
    fn truncation_names_the_byte() {
        let err = parse_ad(&[0x02, 0x01, 0x06, 0x1a, 0xff, 0x4c]).unwrap_err();
        assert_eq!(
            err,
            AdError::Truncated {
                offset: 3,
                declared: 26,
                available: 2
            }
        );
        assert_eq!(
            err.to_string(),
            "AD structure at byte 3 declares 26 bytes but only 2 remain"
        );
        assert!(matches!(
            parse_ad(&vec![1u8; MAX_AD_BYTES + 1]),
            Err(AdError::TooLong(_))
        ));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_ad(&bytes);
        }

        #[test]
        fn build_then_parse(records in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..30)), 0..8)) {
            let adv = records.iter().fold(AdBuilder::new(), |b, (t, d)| b.push(*t, d)).build();
            let parsed = parse_ad(&adv).unwrap();
            let back: Vec<(u8, Vec<u8>)> = parsed.iter().map(|a| (a.ad_type, a.data.to_vec())).collect();
            prop_assert_eq!(back, records);
        }
    }
}
