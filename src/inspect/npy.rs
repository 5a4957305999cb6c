//! Just enough of NumPy's file formats to write what `np.load` reads: `.npy` arrays, `.npz`
//! archives (zip, deflated like `np.savez_compressed`), and 0-d object arrays holding a dict —
//! the pickled `info` of MILVLG's bottom-up-attention files — as a protocol-3 pickle that
//! rebuilds real `numpy.ndarray` values through `numpy.core.multiarray._reconstruct`, the
//! same stream NumPy 1.x writes (NumPy 2 still unpickles it).

use std::io::Write;

/// A little-endian numeric array.
#[derive(Debug, Clone)]
pub struct Array {
    /// NumPy dtype string without byte order (`f4`, `i8`).
    pub dtype: &'static str,
    /// Shape (empty for a 0-d scalar).
    pub shape: Vec<usize>,
    /// Raw little-endian bytes, C order.
    pub data: Vec<u8>,
}

impl Array {
    /// `f4` array.
    pub fn f32(shape: Vec<usize>, v: &[f32]) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), v.len());
        Self {
            dtype: "f4",
            shape,
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// `i8` array.
    pub fn i64(shape: Vec<usize>, v: &[i64]) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), v.len());
        Self {
            dtype: "i8",
            shape,
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// 0-d `i8` scalar.
    pub fn scalar_i64(v: i64) -> Self {
        Self::i64(Vec::new(), &[v])
    }
}

fn shape_repr(shape: &[usize]) -> String {
    match shape {
        [] => "()".into(),
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `.npy` version 1.0 header for `descr` and `shape`, padded to a multiple of 64 bytes.
fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let mut dict = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': {}, }}",
        shape_repr(shape)
    );
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// The `.npy` bytes of a numeric array.
pub fn npy(a: &Array) -> Vec<u8> {
    let mut out = npy_header(&format!("<{}", a.dtype), &a.shape);
    out.extend_from_slice(&a.data);
    out
}

/// A value inside the pickled `info` dict.
#[derive(Debug, Clone)]
pub enum Value {
    /// Python int.
    Int(i64),
    /// Python str.
    Str(String),
    /// numpy.ndarray.
    Array(Array),
}

/// Protocol-3 pickle writer (no memo: every global is spelled out again).
struct Pickle(Vec<u8>);

impl Pickle {
    fn global(&mut self, module: &str, name: &str) {
        self.0.push(b'c');
        self.0
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }
    fn int(&mut self, v: i64) {
        if (0..256).contains(&v) {
            self.0.extend_from_slice(&[b'K', v as u8]);
        } else if let Ok(v) = i32::try_from(v) {
            self.0.push(b'J');
            self.0.extend_from_slice(&v.to_le_bytes());
        } else {
            // LONG1: little-endian two's complement.
            self.0.extend_from_slice(&[0x8a, 8]);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }
    fn str(&mut self, s: &str) {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.push(b'B');
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
    }
    fn op(&mut self, op: u8) {
        self.0.push(op);
    }
    /// `numpy.dtype(descr, False, True)` with its state set to byte order `order`.
    fn dtype(&mut self, descr: &str, order: &str, flags: i64) {
        self.global("numpy", "dtype");
        self.str(descr);
        self.op(0x89); // NEWFALSE
        self.op(0x88); // NEWTRUE
        self.op(0x87); // TUPLE3
        self.op(b'R');
        self.op(b'(');
        self.int(3);
        self.str(order);
        for _ in 0..3 {
            self.op(b'N');
        }
        self.int(-1);
        self.int(-1);
        self.int(flags);
        self.op(b't');
        self.op(b'b');
    }
    /// `_reconstruct(ndarray, (0,), b'b')` then `__setstate__((1, shape, dtype, False, data))`;
    /// `data` pushes the raw bytes (numeric) or a list (object arrays).
    fn ndarray(
        &mut self,
        shape: &[usize],
        descr: &str,
        order: &str,
        flags: i64,
        data: impl FnOnce(&mut Self),
    ) {
        self.global("numpy.core.multiarray", "_reconstruct");
        self.global("numpy", "ndarray");
        self.int(0);
        self.op(0x85); // TUPLE1
        self.0.extend_from_slice(&[b'C', 1, b'b']); // SHORT_BINBYTES b'b'
        self.op(0x87);
        self.op(b'R');
        self.op(b'(');
        self.int(1);
        self.op(b'(');
        for &n in shape {
            self.int(n as i64);
        }
        self.op(b't');
        self.dtype(descr, order, flags);
        self.op(0x89); // not Fortran order
        data(self);
        self.op(b't');
        self.op(b'b');
    }
    fn value(&mut self, v: &Value) {
        match v {
            Value::Int(i) => self.int(*i),
            Value::Str(s) => self.str(s),
            Value::Array(a) => self.ndarray(&a.shape, a.dtype, "<", 0, |p| p.bytes(&a.data)),
        }
    }
}

/// The `.npy` bytes of a 0-d object array holding a dict (what `np.savez(info=dict)` stores):
/// `np.load(..., allow_pickle=True)["info"].item()` gives the dict back.
pub fn npy_object_dict(entries: &[(&str, Value)]) -> Vec<u8> {
    let mut p = Pickle(vec![0x80, 3]); // PROTO 3
    p.ndarray(&[], "O8", "|", 63, |p| {
        p.op(b']'); // EMPTY_LIST
        p.op(b'}'); // EMPTY_DICT
        p.op(b'(');
        for (k, v) in entries {
            p.str(k);
            p.value(v);
        }
        p.op(b'u'); // SETITEMS
        p.op(b'a'); // APPEND
    });
    p.op(b'.');
    let mut out = npy_header("|O", &[]);
    out.extend_from_slice(&p.0);
    out
}

/// A zip archive of `(name, bytes)` members, each deflated (`np.savez_compressed` layout:
/// member `k.npy` is key `k`).
pub fn zip(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    const DOS_DATE: u16 = (1 << 5) | 1; // 1980-01-01
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in members {
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
        z.write_all(data).expect("in-memory write");
        let packed = z.finish().expect("in-memory write");
        let crc = crc32fast::hash(data);
        let offset = out.len() as u32;
        let fields = |v: &mut Vec<u8>| {
            v.extend_from_slice(&20u16.to_le_bytes()); // version needed: 2.0 (deflate)
            v.extend_from_slice(&0u16.to_le_bytes()); // flags
            v.extend_from_slice(&8u16.to_le_bytes()); // method: deflate
            v.extend_from_slice(&0u16.to_le_bytes()); // time
            v.extend_from_slice(&DOS_DATE.to_le_bytes());
            v.extend_from_slice(&crc.to_le_bytes());
            v.extend_from_slice(&(packed.len() as u32).to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(name.len() as u16).to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes()); // extra length
        };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        fields(&mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&packed);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes()); // version made by
        fields(&mut central);
        central.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
        central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    let count = members.len() as u16;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // disk numbers
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // comment length
    out
}

/// Standard base64 with padding (bottom-up-attention's TSV fields).
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn npy_header_is_aligned() {
        for shape in [vec![], vec![3], vec![30, 2048]] {
            let h = npy_header("<f4", &shape);
            assert_eq!(h.len() % 64, 0);
            assert_eq!(*h.last().unwrap(), b'\n');
        }
    }
}
