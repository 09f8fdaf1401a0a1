//! `omo-gateway`: the store gateway's command line.
//!
//! `decode HEX` prints one JSON object per beacon frame (exit 0), exits 1 when the
//! advertisement holds none, and 2 with one line on stderr when the input is malformed.
//! `decode -` decodes one advertisement per stdin line (exit 0 unless I/O fails, then 3).

use std::io::{BufWriter, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use omo_gateway::decode_cli::{decode_hex, decode_lines};
use omo_gateway::frames::Frame;

#[derive(Parser)]
#[command(name = "omo-gateway", version, about = "omo store gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode one advertisement's AD structures given as hex, or `-` for one per stdin line.
    Decode {
        /// The AD structures as on air (length, type, value…), in hex; `-` reads stdin.
        hex: String,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Decode { hex } if hex == "-" => {
            let stdin = std::io::stdin().lock();
            let stdout = BufWriter::new(std::io::stdout().lock());
            match decode_lines(stdin, stdout) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("omo-gateway decode: {e}");
                    ExitCode::from(3)
                }
            }
        }
        Command::Decode { hex } => match decode_hex(hex.as_bytes()) {
            Ok(frames) if frames.is_empty() => {
                eprintln!("omo-gateway decode: no beacon frame in this advertisement");
                ExitCode::from(1)
            }
            Ok(frames) => print_frames(&frames),
            Err(e) => {
                eprintln!("omo-gateway decode: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn print_frames(frames: &[Frame]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    for f in frames {
        if writeln!(out, "{}", f.to_json()).is_err() {
            return ExitCode::from(3);
        }
    }
    ExitCode::SUCCESS
}
