//! Built-in sources that need no external system.

use std::sync::Arc;

use weir_core::checkpoint::metadata::{OperatorSnapshot, RestoredState};
use weir_core::source::{Source, SourcePoll};
use weir_core::state::codec;
use weir_core::{NO_TIMESTAMP, Record, TaskResult};

/// Emits a fixed list of items in order (non-parallel).
pub struct CollectionSource<T> {
    items: Arc<Vec<T>>,
    next: usize,
}

impl<T> CollectionSource<T> {
    pub fn new(items: Arc<Vec<T>>) -> Self {
        CollectionSource { items, next: 0 }
    }
}

impl<T: Clone + Send + Sync> Source<T> for CollectionSource<T> {
    fn poll(&mut self, out: &mut Vec<Record<T>>) -> TaskResult<SourcePoll> {
        let end = (self.next + 1024).min(self.items.len());
        out.extend(self.items[self.next..end].iter().map(|v| Record::new(NO_TIMESTAMP, v.clone())));
        self.next = end;
        Ok(if end == self.items.len() { SourcePoll::Finished } else { SourcePoll::Ready })
    }

    fn snapshot_state(&mut self) -> TaskResult<OperatorSnapshot> {
        Ok(OperatorSnapshot::of_entries(vec![codec::encode(&(self.next as u64))]))
    }

    fn restore_state(&mut self, state: RestoredState) -> TaskResult {
        // Non-parallel: the one position there is.
        if let Some(e) = state.all_entries.first() {
            self.next = codec::decode::<u64>(e, "a collection position")? as usize;
        }
        Ok(())
    }
}
