//! `omo-gateway decode HEX` and `omo-gateway decode -` (DESIGN.md): hex text in, decoded frames
//! out as JSON. The batch mode reads one advertisement per line and writes exactly one line per
//! input line, so installers can run a whole capture through it.

use std::io::{self, BufRead, Write};

use serde_json::{json, Value};

use crate::ad::AdError;
use crate::frames::{decode, Frame};

/// Why a line of input could not be decoded; `offset` is the byte of the advertisement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("{found:?} at character {position} (byte {offset}) is not a hex digit")]
    NotHex {
        found: char,
        position: usize,
        offset: usize,
    },
    #[error("odd number of hex digits ({digits}): byte {offset} is incomplete")]
    OddLength { digits: usize, offset: usize },
    #[error(transparent)]
    Ad(#[from] AdError),
}

impl InputError {
    /// The byte offset in the advertisement where the input goes wrong.
    pub fn offset(&self) -> usize {
        match self {
            InputError::NotHex { offset, .. } | InputError::OddLength { offset, .. } => *offset,
            InputError::Ad(e) => e.offset(),
        }
    }
}

/// Parses hex text (either case; surrounding whitespace ignored) into bytes.
pub fn parse_hex(text: &[u8]) -> Result<Vec<u8>, InputError> {
    let text = text.trim_ascii();
    let nibble = |i: usize| -> Result<u8, InputError> {
        let c = text[i];
        (c as char).to_digit(16).map(|d| d as u8).ok_or_else(|| {
            let found = String::from_utf8_lossy(&text[i..(i + 4).min(text.len())])
                .chars()
                .next()
                .unwrap_or('\u{FFFD}');
            InputError::NotHex {
                found,
                position: i,
                offset: i / 2,
            }
        })
    };
    let mut out = Vec::with_capacity(text.len() / 2);
    for i in (0..text.len()).step_by(2) {
        let hi = nibble(i)?;
        if i + 1 == text.len() {
            return Err(InputError::OddLength {
                digits: text.len(),
                offset: i / 2,
            });
        }
        out.push(hi << 4 | nibble(i + 1)?);
    }
    Ok(out)
}

/// Decodes one advertisement given as hex.
pub fn decode_hex(text: &[u8]) -> Result<Vec<Frame>, InputError> {
    Ok(decode(&parse_hex(text)?)?)
}

/// The batch mode: one JSON line out per line in — an array of frames, or
/// `{"error":…,"offset":n}`. Returns only on end of input or an I/O error.
pub fn decode_lines(input: impl BufRead, mut output: impl Write) -> io::Result<()> {
    let mut input = input;
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let out: Value = match decode_hex(&line) {
            Ok(frames) => Value::Array(frames.iter().map(Frame::to_json).collect()),
            Err(e) => json!({"error": e.to_string(), "offset": e.offset()}),
        };
        serde_json::to_writer(&mut output, &out)?;
        output.write_all(b"\n")?;
    }
    output.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_errors_name_the_byte() {
        assert_eq!(parse_hex(b" 0aFF \n").unwrap(), [0x0a, 0xff]);
        assert_eq!(
            parse_hex(b"0201g6").unwrap_err(),
            InputError::NotHex {
                found: 'g',
                position: 4,
                offset: 2
            }
        );
        assert_eq!(
            parse_hex(b"02010").unwrap_err(),
            InputError::OddLength {
                digits: 5,
                offset: 2
            }
        );
        assert!(matches!(
            parse_hex("02é1".as_bytes()).unwrap_err(),
            InputError::NotHex {
                found: 'é',
                position: 2,
                ..
            }
        ));
    }

    #[test]
    fn batch_writes_one_line_per_line() {
        let input =
            b"020106\n1aff4c000215e2c56db5dffb48d2b060d0f5a71096e000010002c5\nzz\n020106ff\n\n";
        let mut out = Vec::new();
        decode_lines(&input[..], &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0], "[]");
        assert!(
            lines[1].starts_with("[{\"kind\":\"ibeacon\""),
            "{}",
            lines[1]
        );
        assert_eq!(
            lines[2],
            r#"{"error":"'z' at character 0 (byte 0) is not a hex digit","offset":0}"#
        );
        assert_eq!(
            lines[3],
            r#"{"error":"AD structure at byte 3 declares 255 bytes but only 0 remain","offset":3}"#
        );
        assert_eq!(lines[4], "[]");
    }
}
