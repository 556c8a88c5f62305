//! The replay-file source: Jetstream JSON lines from a file, plain, gzip (`.gz`) or zstd
//! (`.zst`), chosen by extension. Reads on a blocking thread.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::sync::{mpsc, watch};

use super::RawEvent;

fn open(path: &Path) -> anyhow::Result<Box<dyn BufRead + Send>> {
    let file = File::open(path).with_context(|| format!("failed to open source file {}", path.display()))?;
    let reader: Box<dyn Read + Send> = match path.extension().and_then(|e| e.to_str()) {
        Some("gz") => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Some("zst") => Box::new(
            zstd::Decoder::new(file).with_context(|| format!("failed to open zstd stream {}", path.display()))?,
        ),
        _ => Box::new(file),
    };
    Ok(Box::new(BufReader::with_capacity(256 * 1024, reader)))
}

pub async fn run(path: PathBuf, events: mpsc::Sender<RawEvent>, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut reader = open(&path)?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut line = Vec::with_capacity(4096);
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .with_context(|| format!("failed to read source file {}", path.display()))?;
            if n == 0 || *stop.borrow() {
                return Ok(());
            }
            while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                line.pop();
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if events.blocking_send(line.clone()).is_err() {
                return Ok(());
            }
        }
    })
    .await
    .context("file source thread panicked")?
}
