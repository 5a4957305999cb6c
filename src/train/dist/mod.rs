//! Data-parallel training on libtorch's own distributed backend (c10d).
//!
//! One process per GPU (or several CPU processes), started by torchrun or SLURM ([`launch`]).
//! They meet at rank 0's TCPStore and form a Gloo (CPU) or NCCL (CUDA) process group
//! ([`group`], through `c10d_shim.cpp`). Each rank reads its slice of every global batch
//! ([`shard::rank_slice`]); the losses see the whole global batch through gathered embeddings
//! and gradients are summed ([`shard`]); a RegionLearner codebook sums its EMA statistics
//! ([`codebook`]). Rank 0 writes checkpoints and logs.

pub mod codebook;
pub mod group;
pub mod launch;
pub mod shard;

use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Result};
use tch::Device;

pub use group::{Backend, ProcessGroup};
pub use launch::Launch;

/// A joined data-parallel run.
pub struct Dist {
    /// Who this process is.
    pub launch: Launch,
    /// The process group (shared with the RegionLearner codebook's [`codebook::GroupSync`]).
    pub pg: Rc<ProcessGroup>,
}

/// How long collectives (and the rendezvous) wait for the slowest rank:
/// `REGIONFEAT_DIST_TIMEOUT_S`, default 30 min like torch.distributed (rank 0 evaluates while
/// the others wait at the next step).
pub fn timeout() -> Result<Duration> {
    match std::env::var("REGIONFEAT_DIST_TIMEOUT_S") {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(s) if s > 0 => Ok(Duration::from_secs(s)),
            _ => bail!("REGIONFEAT_DIST_TIMEOUT_S={v:?} is not a positive number of seconds"),
        },
        Err(_) => Ok(Duration::from_secs(30 * 60)),
    }
}

/// This rank's device: `cpu` stays on the CPU; `auto` and `cuda` take GPU `LOCAL_RANK` (one
/// process per GPU); `cuda:N` is refused because every rank would pick the same GPU.
pub fn rank_device(device: &str, launch: &Launch) -> Result<Device> {
    let gpu = || -> Result<Device> {
        let n = tch::Cuda::device_count() as usize;
        if launch.local_rank >= n {
            bail!(
                "LOCAL_RANK {} but this node has {n} CUDA device(s) visible to libtorch: start \
                 one process per GPU (torchrun --nproc-per-node {n}, or srun --ntasks-per-node {n})",
                launch.local_rank
            );
        }
        Ok(Device::Cuda(launch.local_rank))
    };
    match device {
        "cpu" => Ok(Device::Cpu),
        "auto" if tch::Cuda::is_available() => gpu(),
        "auto" => Ok(Device::Cpu),
        "cuda" => {
            if !tch::Cuda::is_available() {
                bail!("device = \"cuda\" but libtorch sees no CUDA device (build with --features cuda?)");
            }
            gpu()
        }
        d if d.starts_with("cuda:") => bail!(
            "device = {d:?} pins every rank to one GPU; for a data-parallel run use device = \
             \"cuda\" (rank r uses GPU LOCAL_RANK)"
        ),
        d => bail!("unknown device {d:?} (auto, cpu, cuda, cuda:N)"),
    }
}

impl Dist {
    /// Joins the run described by `launch` on `device`; checks that the global batch splits
    /// evenly over the ranks.
    pub fn join(launch: Launch, device: Device, global_batch: usize) -> Result<Self> {
        if !global_batch.is_multiple_of(launch.world_size) || global_batch < launch.world_size {
            bail!(
                "data.batch_size = {global_batch} is the global batch and must be a multiple of \
                 WORLD_SIZE = {}: each of the {} processes reads batch_size / WORLD_SIZE items \
                 per step",
                launch.world_size,
                launch.world_size
            );
        }
        let pg = Rc::new(ProcessGroup::new(
            Backend::for_device(device),
            &launch.master_addr,
            launch.master_port,
            launch.rank,
            launch.world_size,
            timeout()?,
            device,
        )?);
        Ok(Self { launch, pg })
    }

    /// Rank 0.
    pub fn is_main(&self) -> bool {
        self.launch.is_main()
    }
}
