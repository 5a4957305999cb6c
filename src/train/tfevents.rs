//! TensorBoard event files (`events.out.tfevents.*`), written without TensorFlow: TFRecord
//! framing (length, masked CRC32C of the length, payload, masked CRC32C of the payload) around
//! hand-encoded `tensorflow.Event` protobufs — `wall_time` (1, double), `step` (2, int64) and
//! either `file_version` (3, the first record) or `summary` (5) holding `Summary.Value`s with
//! `tag` (1) and `simple_value` (2, float). Field numbers follow
//! `tensorflow/core/util/event.proto` and `tensorflow/core/framework/summary.proto`; TensorBoard
//! reads `simple_value` as a scalar series.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// CRC32C (Castagnoli, reflected polynomial 0x82F63B78) lookup table, built at compile time.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC32C of `data` (the checksum TFRecord uses; not the zlib CRC32).
pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC32C_TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// The masked CRC TFRecord stores: rotate right by 15, add a constant (so a CRC of data that
/// itself holds CRCs is not degenerate).
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: `u64 len | u32 masked_crc(len) | data | u32 masked_crc(data)`, little-endian.
pub fn frame_record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (wire type 2).
fn bytes_field(field: u32, data: &[u8], out: &mut Vec<u8>) {
    varint(((field << 3) | 2) as u64, out);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

/// What an event carries besides its time and step.
pub enum Payload<'a> {
    /// `file_version` (the first record of every file: `brain.Event:2`).
    FileVersion(&'a str),
    /// A summary of scalar values `(tag, value)`.
    Scalars(&'a [(String, f32)]),
}

/// Encodes a `tensorflow.Event` message.
pub fn encode_event(wall_time: f64, step: i64, payload: Payload) -> Vec<u8> {
    let mut out = vec![];
    // wall_time: field 1, wire type 1 (64-bit).
    out.push((1 << 3) | 1);
    out.extend_from_slice(&wall_time.to_le_bytes());
    // step: field 2, varint (int64: negatives as two's complement, 10 bytes); proto3 leaves a
    // zero scalar out, and so does this canonical encoding.
    if step != 0 {
        out.push(2 << 3);
        varint(step as u64, &mut out);
    }
    match payload {
        Payload::FileVersion(v) => bytes_field(3, v.as_bytes(), &mut out),
        Payload::Scalars(values) => {
            // simple_value sits in `oneof value`, so it is written even when 0.
            let mut summary = vec![];
            for (tag, v) in values {
                let mut value = vec![];
                bytes_field(1, tag.as_bytes(), &mut value);
                // simple_value: field 2, wire type 5 (32-bit).
                value.push((2 << 3) | 5);
                value.extend_from_slice(&v.to_le_bytes());
                bytes_field(1, &value, &mut summary);
            }
            bytes_field(5, &summary, &mut out);
        }
    }
    out
}

/// Appends events to one `events.out.tfevents.<time>.<host>.<pid>` file of a log directory.
pub struct EventWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
        // The host goes into a file name.
        .replace(['/', '\\'], "_")
}

/// Seconds since the Unix epoch (the `wall_time` TensorBoard expects).
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl EventWriter {
    /// Creates a new event file in `dir` (a new file per run or resume, as TensorBoard's own
    /// writers do; TensorBoard reads all of a directory's files in name order) and writes the
    /// `file_version` record.
    pub fn create(dir: &Path) -> io::Result<Self> {
        let t = now();
        let base = format!(
            "events.out.tfevents.{:010}.{}.{}",
            t as u64,
            hostname(),
            std::process::id()
        );
        let mut path = dir.join(&base);
        let mut n = 1;
        while path.exists() {
            path = dir.join(format!("{base}.{n}"));
            n += 1;
        }
        let mut w = Self {
            out: BufWriter::new(File::create(&path)?),
            path,
        };
        w.write_event(&encode_event(t, 0, Payload::FileVersion("brain.Event:2")))?;
        Ok(w)
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_event(&mut self, event: &[u8]) -> io::Result<()> {
        self.out.write_all(&frame_record(event))?;
        // Flushed per record so a live TensorBoard sees each point as it is logged.
        self.out.flush()
    }

    /// Writes one event with scalar values at `step`.
    pub fn scalars(
        &mut self,
        wall_time: f64,
        step: i64,
        values: &[(String, f32)],
    ) -> io::Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        self.write_event(&encode_event(wall_time, step, Payload::Scalars(values)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_published_check_values() {
        // RFC 3720 B.4 check value, and the iSCSI test vectors of 32 zero / 0xff bytes.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
    }

    #[test]
    fn varints_and_event_layout() {
        let mut v = vec![];
        varint(300, &mut v);
        assert_eq!(v, [0xAC, 0x02]);
        let e = encode_event(1.5, 7, Payload::FileVersion("x"));
        assert_eq!(e[0], 0x09);
        assert_eq!(&e[1..9], &1.5f64.to_le_bytes());
        assert_eq!(&e[9..], &[0x10, 7, 0x1a, 1, b'x']);
        // A zero step is left out; a zero value is not (it is a oneof member).
        let e = encode_event(1.5, 0, Payload::Scalars(&[("a".into(), 0.0)]));
        assert_eq!(
            &e[9..],
            &[0x2a, 10, 0x0a, 8, 0x0a, 1, b'a', 0x15, 0, 0, 0, 0]
        );
        let r = frame_record(&e);
        assert_eq!(r.len(), e.len() + 16);
        assert_eq!(
            u64::from_le_bytes(r[..8].try_into().unwrap()),
            e.len() as u64
        );
    }
}
