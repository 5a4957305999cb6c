//! Two questions tch cannot answer — free memory and compute capability of a GPU — asked of the
//! CUDA runtime library libtorch already loaded (`libcudart.so.13` from the torch wheel), via
//! `dlopen`. Every function returns `None` when the library or the device is not there, so a
//! CPU-only build just skips these checks.

use std::os::raw::c_int;

use libloading::{Library, Symbol};

/// `cudaDevAttrComputeCapabilityMajor` / `Minor` of `enum cudaDeviceAttr`.
const ATTR_CC_MAJOR: c_int = 75;
const ATTR_CC_MINOR: c_int = 76;

fn library() -> Option<Library> {
    // The sonames of CUDA 13 and 12 runtimes; dlopen returns the copy already mapped into the
    // process by libtorch_cuda when there is one.
    ["libcudart.so.13", "libcudart.so.12", "libcudart.so"]
        .iter()
        // SAFETY: loading the CUDA runtime runs no initialisation beyond the library's own.
        .find_map(|n| unsafe { Library::new(n) }.ok())
}

/// `(free, total)` bytes of GPU `device` (`cudaMemGetInfo`).
pub fn mem_info(device: usize) -> Option<(u64, u64)> {
    let lib = library()?;
    // SAFETY: signatures from cuda_runtime_api.h; every call is checked for cudaSuccess (0).
    unsafe {
        let get_device: Symbol<unsafe extern "C" fn(*mut c_int) -> c_int> =
            lib.get(b"cudaGetDevice\0").ok()?;
        let set_device: Symbol<unsafe extern "C" fn(c_int) -> c_int> =
            lib.get(b"cudaSetDevice\0").ok()?;
        let mem_get_info: Symbol<unsafe extern "C" fn(*mut usize, *mut usize) -> c_int> =
            lib.get(b"cudaMemGetInfo\0").ok()?;
        let mut prev: c_int = 0;
        if get_device(&mut prev) != 0 {
            return None;
        }
        if set_device(device as c_int) != 0 {
            return None;
        }
        let (mut free, mut total) = (0usize, 0usize);
        let rc = mem_get_info(&mut free, &mut total);
        // Leave the thread's current device as it was.
        set_device(prev);
        (rc == 0).then_some((free as u64, total as u64))
    }
}

/// Compute capability `(major, minor)` of GPU `device`.
pub fn compute_capability(device: usize) -> Option<(i32, i32)> {
    let lib = library()?;
    // SAFETY: as in `mem_info`.
    unsafe {
        let attr: Symbol<unsafe extern "C" fn(*mut c_int, c_int, c_int) -> c_int> =
            lib.get(b"cudaDeviceGetAttribute\0").ok()?;
        let (mut major, mut minor) = (0, 0);
        if attr(&mut major, ATTR_CC_MAJOR, device as c_int) != 0
            || attr(&mut minor, ATTR_CC_MINOR, device as c_int) != 0
        {
            return None;
        }
        Some((major, minor))
    }
}
