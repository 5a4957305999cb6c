//! Decoded chunks of the small frame-row columns (`locations`, `num_boxes`), kept across
//! reads within one process-wide byte budget, the oldest dropped first.
//!
//! Random pre-training reads touch a new features chunk per sample but share each 64-row
//! chunk of the small columns with dozens of other samples; inflating those again on every
//! read cost about a fifth of a read. A shard of 1,000 8-frame videos holds 6.9 MB of them,
//! so keeping them for every open shard (up to `data.max_open_shards`) would not be bounded:
//! the budget is.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// One column's chunks, each kept (`Some`) or not.
pub(super) type Slots = [Mutex<Option<Arc<[u8]>>>];

/// Bytes kept by the process-wide [`KEPT`].
pub const KEPT_BUDGET_BYTES: usize = 256 << 20;

/// The process-wide store the readers use.
pub(super) static KEPT: Kept = Kept::new(KEPT_BUDGET_BYTES);

/// A byte-bounded store of decoded chunks, first in first out.
pub(super) struct Kept {
    budget: usize,
    state: Mutex<State>,
}

struct State {
    /// What was kept, oldest first: the column's slots, the chunk, its bytes.
    order: VecDeque<(Weak<Slots>, usize, usize)>,
    /// Bytes in `order` (slots of readers since closed count until they leave it).
    bytes: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data are plain bytes or bookkeeping: a panic elsewhere leaves nothing half-done.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Kept {
    pub(super) const fn new(budget: usize) -> Self {
        Self {
            budget,
            state: Mutex::new(State {
                order: VecDeque::new(),
                bytes: 0,
            }),
        }
    }

    /// Empty slots for a column of `chunks` chunks.
    pub(super) fn slots(chunks: usize) -> Arc<Slots> {
        (0..chunks).map(|_| Mutex::new(None)).collect()
    }

    /// Chunk `c` if it is kept.
    pub(super) fn get(slots: &Slots, c: usize) -> Option<Arc<[u8]>> {
        lock(&slots[c]).clone()
    }

    /// Keeps `values` as chunk `c`, dropping the oldest kept chunks past the budget.
    pub(super) fn put(&self, slots: &Arc<Slots>, c: usize, values: Arc<[u8]>) {
        let n = values.len();
        if n > self.budget {
            return;
        }
        *lock(&slots[c]) = Some(values);
        let mut st = lock(&self.state);
        st.order.push_back((Arc::downgrade(slots), c, n));
        st.bytes += n;
        while st.bytes > self.budget {
            let Some((owner, c, n)) = st.order.pop_front() else {
                break;
            };
            st.bytes -= n;
            if let Some(owner) = owner.upgrade() {
                *lock(&owner[c]) = None;
            }
        }
    }

    /// Bytes counted as kept.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        lock(&self.state).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(slots: &Slots) -> Vec<usize> {
        (0..slots.len())
            .filter(|&c| Kept::get(slots, c).is_some())
            .collect()
    }

    #[test]
    fn the_oldest_chunks_go_first_past_the_budget() {
        let store = Kept::new(300);
        let (a, b) = (Kept::slots(4), Kept::slots(4));
        for c in 0..3 {
            store.put(&a, c, vec![c as u8; 100].into());
        }
        assert_eq!(kept(&a), [0, 1, 2]);
        store.put(&b, 0, vec![9; 150].into());
        // 450 bytes > 300: a's chunks 0 and 1 leave, oldest first.
        assert_eq!((kept(&a), kept(&b)), (vec![2], vec![0]));
        assert_eq!(store.bytes(), 250);
        assert_eq!(&*Kept::get(&b, 0).unwrap(), &[9; 150][..]);
        // A closed reader's chunks still count until their turn comes, then free nothing twice.
        drop(a);
        store.put(&b, 1, vec![1; 100].into());
        assert_eq!(kept(&b), [0, 1]);
        assert_eq!(store.bytes(), 250);
        // Larger than the whole budget: not kept.
        store.put(&b, 2, vec![0; 301].into());
        assert_eq!(kept(&b), [0, 1]);
    }
}
