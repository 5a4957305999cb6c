//! A minimal PNG encoder: 8-bit RGB, no interlace, zlib via flate2 (no image crate needed).

use std::io::Write;

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut h = crc32fast::Hasher::new();
    h.update(kind);
    h.update(data);
    out.extend_from_slice(&h.finalize().to_be_bytes());
}

/// Encodes packed RGB24 rows (`height * width * 3` bytes) as a PNG file.
pub fn encode_rgb(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    assert_eq!(
        rgb.len(),
        width as usize * height as usize * 3,
        "rgb buffer size"
    );
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit, truecolour, deflate, adaptive filters, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    let stride = width as usize * 3;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    let mut line = Vec::with_capacity(stride + 1);
    for (y, row) in rgb.chunks_exact(stride).enumerate() {
        // Filter "Up" (2) compresses flat areas well; the first row has no row above: "None".
        line.clear();
        if y == 0 {
            line.push(0);
            line.extend_from_slice(row);
        } else {
            let above = &rgb[(y - 1) * stride..y * stride];
            line.push(2);
            line.extend(row.iter().zip(above).map(|(a, b)| a.wrapping_sub(*b)));
        }
        z.write_all(&line).expect("in-memory write");
    }
    chunk(&mut out, b"IDAT", &z.finish().expect("in-memory write"));
    chunk(&mut out, b"IEND", &[]);
    out
}
