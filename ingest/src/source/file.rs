//! The replay-file source: Jetstream JSON lines from a file, plain, gzip (`.gz`) or zstd
//! (`.zst`), chosen by extension. Reads (and decompresses) a megabyte at a time on a blocking
//! thread, and splits and sends the lines from the async task: one hop between threads per
//! megabyte, not one per line (on one core, that hop was a context switch per event).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::sync::{mpsc, watch};

use super::RawEvent;

/// Bytes read per trip to the blocking thread.
const CHUNK_BYTES: usize = 1 << 20;

fn open(path: &Path) -> anyhow::Result<Box<dyn Read + Send>> {
    let file = File::open(path).with_context(|| format!("failed to open source file {}", path.display()))?;
    Ok(match path.extension().and_then(|e| e.to_str()) {
        Some("gz") => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Some("zst") => Box::new(
            zstd::Decoder::new(file).with_context(|| format!("failed to open zstd stream {}", path.display()))?,
        ),
        _ => Box::new(file),
    })
}

/// Appends up to [`CHUNK_BYTES`] more bytes of `reader` to `buffer`; returns how many (0 at
/// the end).
fn read_chunk(reader: &mut dyn Read, buffer: &mut Vec<u8>) -> std::io::Result<usize> {
    let start = buffer.len();
    buffer.resize(start + CHUNK_BYTES, 0);
    let mut filled = start;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                buffer.truncate(start);
                return Err(e);
            }
        }
    }
    buffer.truncate(filled);
    Ok(filled - start)
}

/// The lines of `bytes`, split at each `\n` (found with SIMD: a byte-at-a-time split was a
/// twentieth of ingest's instructions).
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', bytes).map(Some).chain([None]).map_while(move |end| {
        let line = bytes.get(start..end.unwrap_or(bytes.len()))?;
        start = end.map_or(usize::MAX, |e| e + 1);
        Some(line)
    })
}

pub async fn run(path: PathBuf, events: mpsc::Sender<RawEvent>, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut reader = open(&path)?;
    // Bytes read and not sent yet: the start of a line that the next chunk completes.
    let mut buffer: Vec<u8> = Vec::with_capacity(2 * CHUNK_BYTES);
    loop {
        let (back, read, chunk) = tokio::task::spawn_blocking(move || {
            let read = read_chunk(&mut reader, &mut buffer);
            (reader, read, buffer)
        })
        .await
        .context("file source thread panicked")?;
        (reader, buffer) = (back, chunk);
        let at_end = read.with_context(|| format!("failed to read source file {}", path.display()))? == 0;
        // Every complete line; at the end, the last one even without its newline.
        let complete = if at_end { buffer.len() } else { memchr::memrchr(b'\n', &buffer).map_or(0, |i| i + 1) };
        for line in lines(&buffer[..complete]) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if *stop.borrow() || events.send(line.to_vec()).await.is_err() {
                return Ok(());
            }
        }
        buffer.drain(..complete);
        if at_end {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_exactly_like_slice_split() {
        for text in ["", "\n", "a", "a\n", "a\nb", "\n\na\n\nbc\n", "{\"x\":1}\n{\"y\":2}"] {
            let bytes = text.as_bytes();
            let want: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
            assert_eq!(lines(bytes).collect::<Vec<_>>(), want, "{text:?}");
        }
    }
}
