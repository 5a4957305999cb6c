//! The RegionLearner codebook's collectives ([`CodebookSync`]) over a process group: the EMA
//! update runs inside the forward pass, so every process must sum its statistics with the
//! others' there, as SyncBatchNorm does with batch statistics.

use std::cell::RefCell;
use std::rc::Rc;

use anyhow::{Context, Result};
use tch::{Kind, Tensor};

use crate::train::dist::group::{ProcessGroup, ReduceOp};
use crate::train::region_learner::CodebookSync;

/// [`CodebookSync`] on a process group. The forward pass cannot return an error, so a failed
/// collective leaves its tensor local and is kept here for [`GroupSync::check`], which the
/// trainer calls right after each forward.
pub struct GroupSync {
    pg: Rc<ProcessGroup>,
    error: RefCell<Option<anyhow::Error>>,
}

impl GroupSync {
    /// Collectives on `pg`.
    pub fn new(pg: Rc<ProcessGroup>) -> Self {
        Self {
            pg,
            error: RefCell::new(None),
        }
    }

    /// The first collective that failed since the last call, if any.
    pub fn check(&self) -> Result<()> {
        match self.error.borrow_mut().take() {
            Some(e) => Err(e.context("RegionLearner codebook statistics")),
            None => Ok(()),
        }
    }

    fn keep<T>(&self, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                let mut slot = self.error.borrow_mut();
                if slot.is_none() {
                    *slot = Some(e);
                }
                None
            }
        }
    }

    /// Rows may differ between ranks (frames per batch): gather the row counts, pad every
    /// rank's rows to the longest, gather, and keep each rank's real rows.
    fn gather_rows(&self, t: &Tensor) -> Result<Tensor> {
        let rows = t.size()[0];
        let counts = self
            .pg
            .all_gather(&Tensor::from_slice(&[rows]).to_device(t.device()))
            .context("gathering row counts")?;
        let counts: Vec<i64> = Vec::<i64>::try_from(counts.to_device(tch::Device::Cpu))?;
        let most = counts.iter().copied().max().unwrap_or(rows);
        let mut shape = t.size();
        shape[0] = most - rows;
        let padded = Tensor::cat(
            &[
                t.shallow_clone(),
                Tensor::zeros(shape.as_slice(), (t.kind(), t.device())),
            ],
            0,
        );
        let all = self.pg.all_gather(&padded).context("gathering tokens")?;
        let parts: Vec<Tensor> = counts
            .iter()
            .enumerate()
            .map(|(r, &n)| all.narrow(0, r as i64 * most, n))
            .collect();
        Ok(Tensor::cat(&parts, 0))
    }
}

impl CodebookSync for GroupSync {
    fn sum(&self, t: &Tensor) {
        let r = self.pg.all_reduce(t, ReduceOp::Sum);
        self.keep(r.context("summing EMA statistics"));
    }

    fn gather(&self, t: &Tensor) -> Tensor {
        let t = t.detach().to_kind(Kind::Float).contiguous();
        let r = self.gather_rows(&t);
        self.keep(r).unwrap_or(t)
    }

    fn broadcast(&self, t: &Tensor) {
        let r = self.pg.broadcast(t, 0);
        self.keep(r.context("copying the seeded codes"));
    }
}
