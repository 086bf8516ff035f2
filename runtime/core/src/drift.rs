//! Watermark alignment (Flink's `withWatermarkAlignment`): source subtasks of
//! one alignment group that run ahead of the group's slowest pause.
//!
//! Two sources feeding a join or a union each race at their own speed; the
//! operator's watermark is the slower one's, so everything the faster one
//! produced waits in state (an interval join buffers it, a window keeps its
//! panes open) and memory grows with the gap. With a group and a maximum
//! drift, a source subtask whose watermark is more than the drift ahead of the
//! group's lowest stops reading until the others catch up; its task goes on
//! obeying checkpoint commands while it waits.
//!
//! A member joins when its chain is built: the timestamp assigner chained
//! after a source, or a source that assigns event time itself (in its
//! factory, [`SourceAlignment::join`] on its `SubtaskInfo::alignment`; the
//! Kafka source does). Members publish their watermark as it advances (the
//! assigner, or the source task for the watermarks its source reports); an
//! idle or finished member publishes the end of time, so that it holds
//! nobody back. Groups are shared
//! by the subtasks deployed together (every subtask of a job run in one
//! process; on a cluster, those of one TaskManager).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::time::{MAX_WATERMARK, MIN_WATERMARK, Timestamp};

/// Which sources align, and how far one may run ahead of the slowest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatermarkAlignment {
    pub group: String,
    pub max_drift: Duration,
}

/// The watermarks of one group's members.
#[derive(Default)]
struct Group {
    members: Mutex<Vec<Arc<AtomicI64>>>,
}

impl Group {
    fn lowest(&self) -> Timestamp {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members.iter().map(|m| m.load(Ordering::Relaxed)).min().unwrap_or(MAX_WATERMARK)
    }
}

/// The alignment groups of the subtasks deployed together.
#[derive(Clone, Default)]
pub struct AlignmentGroups(Arc<Mutex<HashMap<String, Arc<Group>>>>);

impl AlignmentGroups {
    fn group(&self, name: &str) -> Arc<Group> {
        let mut groups = self.0.lock().unwrap_or_else(|e| e.into_inner());
        groups.entry(name.to_string()).or_default().clone()
    }
}

/// One member of a group: where it publishes, and the drift it may not exceed.
struct Member {
    group: Arc<Group>,
    watermark: Arc<AtomicI64>,
    max_drift: i64,
}

/// A source subtask's place in its alignment group, if it has one: the
/// timestamp assigner of its chain joins and publishes, its task asks whether
/// to pause. Only a source's chain can join (the default joins nothing): an
/// aligned assigner after an exchange could not pause its source, and would
/// hold its group back.
#[derive(Clone, Default)]
pub struct SourceAlignment {
    groups: Option<AlignmentGroups>,
    member: Arc<OnceLock<Member>>,
}

impl std::fmt::Debug for SourceAlignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.member.get().is_some() { "SourceAlignment(member)" } else { "SourceAlignment(none)" })
    }
}

impl SourceAlignment {
    /// A source subtask's slot among `groups`.
    pub fn new(groups: &AlignmentGroups) -> Self {
        SourceAlignment { groups: Some(groups.clone()), member: Arc::default() }
    }

    /// Joins the group of `alignment` (once; a second call keeps the first).
    /// Outside a source's chain, nothing happens.
    pub fn join(&self, alignment: &WatermarkAlignment) {
        let Some(groups) = &self.groups else { return };
        self.member.get_or_init(|| {
            let group = groups.group(&alignment.group);
            let watermark = Arc::new(AtomicI64::new(MIN_WATERMARK));
            group.members.lock().unwrap_or_else(|e| e.into_inner()).push(watermark.clone());
            Member { group, watermark, max_drift: i64::try_from(alignment.max_drift.as_millis()).unwrap_or(i64::MAX) }
        });
    }

    /// The member's watermark advanced (or it went idle or ended: the end of time).
    pub fn publish(&self, watermark: Timestamp) {
        if let Some(m) = self.member.get() {
            m.watermark.store(watermark, Ordering::Relaxed);
        }
    }

    /// Whether the member is further ahead of its group's slowest than it may be.
    pub fn ahead(&self) -> bool {
        let Some(m) = self.member.get() else { return false };
        let own = m.watermark.load(Ordering::Relaxed);
        own != MAX_WATERMARK && own > m.group.lowest().saturating_add(m.max_drift)
    }
}

impl Drop for Member {
    /// A member that is gone (its task ended or failed) holds nobody back.
    fn drop(&mut self) {
        self.watermark.store(MAX_WATERMARK, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(groups: &AlignmentGroups, group: &str, drift_ms: u64) -> SourceAlignment {
        let m = SourceAlignment::new(groups);
        m.join(&WatermarkAlignment { group: group.into(), max_drift: Duration::from_millis(drift_ms) });
        m
    }

    #[test]
    fn a_member_pauses_beyond_the_drift_until_the_slowest_catches_up() {
        let groups = AlignmentGroups::default();
        let (fast, slow, other) = (member(&groups, "g", 10), member(&groups, "g", 10), member(&groups, "h", 10));
        fast.publish(100);
        assert!(fast.ahead(), "the slow member has no watermark yet");
        slow.publish(90);
        assert!(!fast.ahead() && !slow.ahead(), "100 is within 10 of 90");
        fast.publish(101);
        assert!(fast.ahead());
        other.publish(0);
        assert!(!other.ahead(), "another group's member does not hold this one back, nor the reverse");
        slow.publish(MAX_WATERMARK);
        assert!(!fast.ahead(), "a finished member holds nobody back");
        assert!(!SourceAlignment::default().ahead(), "a subtask in no group never pauses");
    }

    #[test]
    fn only_a_source_chain_joins() {
        let groups = AlignmentGroups::default();
        let source = member(&groups, "g", 10);
        let not_a_source = SourceAlignment::default();
        not_a_source.join(&WatermarkAlignment { group: "g".into(), max_drift: Duration::from_millis(10) });
        not_a_source.publish(0);
        source.publish(100);
        assert!(!source.ahead(), "a member outside a source's chain would hold the group back forever");
    }
}
