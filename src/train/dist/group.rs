//! A c10d process group (libtorch's own TCPStore rendezvous + Gloo or NCCL), through the C shim
//! in `c10d_shim.cpp`. All collectives are blocking and must be called in the same order on
//! every rank, as with torch.distributed.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::time::Duration;

use anyhow::{bail, Result};
use tch::{Device, Tensor};

mod ffi {
    use std::ffi::{c_char, c_int, c_longlong, c_void};
    extern "C" {
        pub fn rf_nccl_compiled() -> c_int;
        pub fn rf_free_string(s: *mut c_char);
        pub fn rf_pg_new(
            backend: c_int,
            host: *const c_char,
            port: c_int,
            rank: c_int,
            world: c_int,
            timeout_ms: c_longlong,
            device_index: c_int,
            err: *mut *mut c_char,
        ) -> *mut c_void;
        pub fn rf_pg_free(g: *mut c_void);
        pub fn rf_pg_allreduce(
            g: *mut c_void,
            t: *mut c_void,
            op: c_int,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn rf_pg_allgather(
            g: *mut c_void,
            out: *mut c_void,
            input: *mut c_void,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn rf_pg_broadcast(
            g: *mut c_void,
            t: *mut c_void,
            root: c_int,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn rf_pg_barrier(g: *mut c_void, err: *mut *mut c_char) -> c_int;
    }
}

/// Which c10d backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo: CPU tensors.
    Gloo,
    /// NCCL: CUDA tensors, one GPU per process.
    Nccl,
}

impl Backend {
    /// NCCL for CUDA devices, Gloo otherwise (torch.distributed's defaults).
    pub fn for_device(d: Device) -> Self {
        if d.is_cuda() {
            Backend::Nccl
        } else {
            Backend::Gloo
        }
    }
}

/// Whether this build can make NCCL groups (`cuda` feature with CUDA/NCCL headers found).
pub fn nccl_compiled() -> bool {
    // SAFETY: no arguments, returns a constant.
    unsafe { ffi::rf_nccl_compiled() != 0 }
}

/// Reduction of [`ProcessGroup::all_reduce`].
#[derive(Debug, Clone, Copy)]
pub enum ReduceOp {
    /// Element-wise sum.
    Sum,
    /// Element-wise maximum.
    Max,
}

/// A process group; dropped (and its sockets closed) at the end of the run.
pub struct ProcessGroup {
    ptr: *mut c_void,
    rank: usize,
    world: usize,
    backend: Backend,
}

fn check(rc: c_int, err: *mut c_char, what: &str) -> Result<()> {
    if rc == 0 {
        return Ok(());
    }
    let msg = if err.is_null() {
        "unknown error".to_string()
    } else {
        // SAFETY: the shim wrote a NUL-terminated malloc'ed string; we free it once.
        let s = unsafe { CStr::from_ptr(err) }
            .to_string_lossy()
            .into_owned();
        unsafe { ffi::rf_free_string(err) };
        s
    };
    bail!("c10d {what} failed: {msg}")
}

impl ProcessGroup {
    /// Rendezvous at `host:port` (rank 0 serves the TCPStore) and builds the group. Blocks until
    /// all `world` ranks have joined or `timeout` passes.
    pub fn new(
        backend: Backend,
        host: &str,
        port: u16,
        rank: usize,
        world: usize,
        timeout: Duration,
        device: Device,
    ) -> Result<Self> {
        if backend == Backend::Nccl && !nccl_compiled() {
            bail!(
                "the NCCL backend (CUDA device) is not in this build: build with `--features cuda` \
                 on a machine with the CUDA toolkit headers (CUDA_HOME) and nccl.h \
                 (NCCL_INCLUDE_DIR or the nvidia-nccl wheel), or train on device = \"cpu\" (Gloo)"
            );
        }
        let chost = CString::new(host)?;
        let device_index = match device {
            Device::Cuda(i) => i as c_int,
            _ => -1,
        };
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: valid C string, plain integers, and an out-pointer for the error.
        let ptr = unsafe {
            ffi::rf_pg_new(
                match backend {
                    Backend::Gloo => 0,
                    Backend::Nccl => 1,
                },
                chost.as_ptr(),
                port as c_int,
                rank as c_int,
                world as c_int,
                timeout.as_millis().min(i64::MAX as u128) as i64,
                device_index,
                &mut err,
            )
        };
        if ptr.is_null() {
            check(
                1,
                err,
                &format!("rendezvous at {host}:{port} (rank {rank} of {world})"),
            )?;
        }
        Ok(Self {
            ptr,
            rank,
            world,
            backend,
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of processes.
    pub fn world_size(&self) -> usize {
        self.world
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn raw(t: &Tensor) -> *mut c_void {
        // tch's C_tensor is torch-sys's `torch::Tensor*`; the shim takes it as such. A shallow
        // clone shares storage, so in-place collectives on it write into `t`.
        t.as_ptr() as *mut c_void
    }

    fn contiguous(t: &Tensor, what: &str) -> Result<()> {
        if !t.is_contiguous() {
            bail!("c10d {what}: tensor must be contiguous");
        }
        Ok(())
    }

    /// In place over all ranks.
    pub fn all_reduce(&self, t: &Tensor, op: ReduceOp) -> Result<()> {
        Self::contiguous(t, "all_reduce")?;
        let mut err = std::ptr::null_mut();
        let op = match op {
            ReduceOp::Sum => 0,
            ReduceOp::Max => 1,
        };
        // SAFETY: live group and tensor; the call blocks until the collective is done.
        let rc = unsafe { ffi::rf_pg_allreduce(self.ptr, Self::raw(t), op, &mut err) };
        check(rc, err, "all_reduce")
    }

    /// Concatenation over ranks (in rank order, along dim 0) of every rank's `t`; all ranks must
    /// pass the same shape. No autograd: the result is a new leaf.
    pub fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        let input = t.detach().contiguous();
        let mut shape = input.size();
        if shape.is_empty() {
            shape = vec![1];
        }
        shape[0] *= self.world as i64;
        let out = Tensor::empty(shape.as_slice(), (input.kind(), input.device()));
        let mut err = std::ptr::null_mut();
        // SAFETY: live group and tensors; blocking.
        let rc =
            unsafe { ffi::rf_pg_allgather(self.ptr, Self::raw(&out), Self::raw(&input), &mut err) };
        check(rc, err, "all_gather")?;
        Ok(out)
    }

    /// In place, from `root`.
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        Self::contiguous(t, "broadcast")?;
        let mut err = std::ptr::null_mut();
        // SAFETY: live group and tensor; blocking.
        let rc = unsafe { ffi::rf_pg_broadcast(self.ptr, Self::raw(t), root as c_int, &mut err) };
        check(rc, err, "broadcast")
    }

    /// Waits for every rank.
    pub fn barrier(&self) -> Result<()> {
        let mut err = std::ptr::null_mut();
        // SAFETY: live group; blocking.
        let rc = unsafe { ffi::rf_pg_barrier(self.ptr, &mut err) };
        check(rc, err, "barrier")
    }
}

// SAFETY: the c10d backend may be used from any thread, one call at a time; `&self` methods
// only issue blocking collectives, and the trainer drives them from one thread.
unsafe impl Send for ProcessGroup {}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: created by rf_pg_new, freed once.
        unsafe { ffi::rf_pg_free(self.ptr) }
    }
}
