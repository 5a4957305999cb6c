//! Who this process is in a data-parallel run, from the environment a launcher sets.
//!
//! torchrun (and `torch.distributed.launch`, and most cluster wrappers) set `RANK`, `WORLD_SIZE`,
//! `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`; SLURM's `srun` sets `SLURM_PROCID`,
//! `SLURM_NTASKS`, `SLURM_LOCALID` and the node list, from which the rendezvous address can be
//! derived (first node of the job, a port from the job id) when `MASTER_ADDR`/`MASTER_PORT` are
//! not exported. torchrun's variables win when both are present (torchrun inside an sbatch job).

use anyhow::{bail, Context, Result};

/// This process's place in the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Global rank, `0..world_size`.
    pub rank: usize,
    /// Number of processes.
    pub world_size: usize,
    /// Rank on this node (picks the GPU).
    pub local_rank: usize,
    /// Rendezvous host (rank 0's TCPStore).
    pub master_addr: String,
    /// Rendezvous port.
    pub master_port: u16,
    /// `"torchrun"` or `"slurm"`, for messages.
    pub source: &'static str,
}

impl Launch {
    /// Rank 0 writes checkpoints and logs.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// From the process environment; `None` for a single-process run.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    }

    /// From any variable lookup (tests). `None` when no launcher variables are set or the world
    /// has one process.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let num = |k: &str| -> Result<Option<usize>> {
            get(k)
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .with_context(|| format!("{k}={v:?} is not a non-negative integer"))
                })
                .transpose()
        };
        let (rank, world, local, source) = if let Some(world) = num("WORLD_SIZE")? {
            let rank = num("RANK")?.context(
                "WORLD_SIZE is set but RANK is not (launch with torchrun, which sets both)",
            )?;
            let local = num("LOCAL_RANK")?.unwrap_or(0);
            (rank, world, local, "torchrun")
        } else if let Some(world) = num("SLURM_NTASKS")?.or(num("SLURM_NPROCS")?) {
            let rank = num("SLURM_PROCID")?.context(
                "SLURM_NTASKS is set but SLURM_PROCID is not: start one process per GPU with srun",
            )?;
            (rank, world, num("SLURM_LOCALID")?.unwrap_or(0), "slurm")
        } else {
            return Ok(None);
        };
        if world == 0 || rank >= world {
            bail!("{source}: rank {rank} is not below the world size {world}");
        }
        if world == 1 {
            return Ok(None);
        }
        let master_addr = match get("MASTER_ADDR") {
            Some(a) => a.trim().to_string(),
            None if source == "slurm" => {
                let list = get("SLURM_JOB_NODELIST")
                    .or_else(|| get("SLURM_NODELIST"))
                    .context(
                        "MASTER_ADDR is not set and SLURM gives no node list to derive it from: \
                         export MASTER_ADDR (the first node's hostname) in the job script",
                    )?;
                first_host(&list).with_context(|| {
                    format!("cannot read the first host of SLURM_JOB_NODELIST={list:?}: export MASTER_ADDR")
                })?
            }
            None => bail!(
                "MASTER_ADDR is not set: a {world}-process run needs the rendezvous host \
                 (torchrun sets it; or export MASTER_ADDR=<rank 0's host>)"
            ),
        };
        let master_port = match get("MASTER_PORT") {
            Some(p) => p
                .trim()
                .parse::<u16>()
                .with_context(|| format!("MASTER_PORT={p:?} is not a port number"))?,
            None if source == "slurm" => {
                let job = num("SLURM_JOB_ID")?.context(
                    "MASTER_PORT is not set and there is no SLURM_JOB_ID to derive it from: \
                     export MASTER_PORT",
                )?;
                slurm_port(job)
            }
            None => bail!(
                "MASTER_PORT is not set: a {world}-process run needs the rendezvous port \
                 (torchrun sets it; or export MASTER_PORT=29500)"
            ),
        };
        Ok(Some(Self {
            rank,
            world_size: world,
            local_rank: local,
            master_addr,
            master_port,
            source,
        }))
    }
}

/// A port from the job id, so concurrent jobs on shared nodes do not collide; in 20000..40000
/// (above the usual ephemeral-port floor of privileged services, below Linux's ephemeral range).
pub fn slurm_port(job_id: usize) -> u16 {
    20_000 + (job_id % 20_000) as u16
}

/// First hostname of a SLURM node list: `gpu-[03-05,9],cpu1` → `gpu-03`, `a1,a2` → `a1`.
pub fn first_host(list: &str) -> Option<String> {
    let list = list.trim();
    let mut depth = 0;
    let end = list
        .char_indices()
        .find(|&(_, c)| {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ => {}
            }
            c == ',' && depth == 0
        })
        .map_or(list.len(), |(i, _)| i);
    let first = &list[..end];
    let host = match (first.find('['), first.find(']')) {
        (Some(a), Some(b)) if a < b => {
            let range = &first[a + 1..b];
            let start = range.split([',', '-']).next()?.trim();
            format!("{}{}{}", &first[..a], start, &first[b + 1..])
        }
        (None, None) => first.to_string(),
        _ => return None,
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Option<Launch>> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Launch::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn torchrun_variables() {
        let l = launch(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "3"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (l.rank, l.world_size, l.local_rank, l.master_port, l.source),
            (3, 8, 3, 29500, "torchrun")
        );
        assert_eq!(l.master_addr, "10.0.0.1");
        assert!(!l.is_main());
    }

    #[test]
    fn single_process_is_none() {
        assert_eq!(launch(&[]).unwrap(), None);
        assert_eq!(launch(&[("RANK", "0"), ("WORLD_SIZE", "1")]).unwrap(), None);
        assert_eq!(
            launch(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")]).unwrap(),
            None
        );
    }

    #[test]
    fn slurm_derives_address_and_port() {
        let l = launch(&[
            ("SLURM_PROCID", "9"),
            ("SLURM_NTASKS", "16"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_JOB_NODELIST", "gpu-[07-08]"),
            ("SLURM_JOB_ID", "123456"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((l.rank, l.world_size, l.local_rank), (9, 16, 1));
        assert_eq!(l.master_addr, "gpu-07");
        assert_eq!(l.master_port, slurm_port(123456));
        assert_eq!(l.source, "slurm");
    }

    #[test]
    fn torchrun_wins_over_slurm() {
        let l = launch(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1234"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((l.rank, l.world_size, l.source), (1, 2, "torchrun"));
    }

    #[test]
    fn clear_errors() {
        let e = launch(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("MASTER_ADDR"), "{e}");
        let e = launch(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("MASTER_PORT"), "{e}");
        let e = launch(&[("WORLD_SIZE", "2")]).unwrap_err().to_string();
        assert!(e.contains("RANK"), "{e}");
        let e = launch(&[("RANK", "2"), ("WORLD_SIZE", "2")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("below the world size"), "{e}");
        let e = launch(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("MASTER_ADDR"), "{e}");
        let e = launch(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_NODELIST", "n1"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("MASTER_PORT"), "{e}");
        let e = launch(&[("RANK", "x"), ("WORLD_SIZE", "2")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("RANK=\"x\""), "{e}");
    }

    #[test]
    fn node_lists() {
        assert_eq!(first_host("gpu-[03-05,9],cpu1").as_deref(), Some("gpu-03"));
        assert_eq!(first_host("a1,a2").as_deref(), Some("a1"));
        assert_eq!(first_host("node[12]").as_deref(), Some("node12"));
        assert_eq!(first_host("rack[1-2]-n").as_deref(), Some("rack1-n"));
        assert_eq!(first_host("single").as_deref(), Some("single"));
        assert_eq!(first_host("bad[1-2").as_deref(), None);
    }
}
