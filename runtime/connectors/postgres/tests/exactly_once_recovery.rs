//! The exactly-once sink's recovery against a real PostgreSQL server, with
//! several sink instances as the TaskManagers of a job would have them: a
//! subtask that recovers never touches what another subtask of its run
//! prepared, leftovers of earlier runs are rolled back by the subtask that
//! answers for them (after a rescale too), and a prepared transaction that
//! disappeared without committing fails the commit or the restore loudly.

use std::time::Duration;

use weir_core::Record;
use weir_core::checkpoint::metadata::RestoredState;
use weir_core::graph::{SnapshotCollector, SubtaskInfo};
use weir_core::operator::sink::Sink;
use weir_postgres::testing::PgServer;
use weir_postgres::{ColumnType, Guarantee, PostgresSink, PostgresSinkConfig};

type Row = Vec<i64>;
type TestSink = PostgresSink<Row, i64>;

const UID: &str = "2-sink";

fn config(pg: &PgServer) -> PostgresSinkConfig {
    PostgresSinkConfig {
        url: pg.url(),
        table: "counts".into(),
        columns: vec![("id".into(), ColumnType::BigInt), ("n".into(), ColumnType::BigInt)],
        key: vec!["id".into()],
        guarantee: Guarantee::ExactlyOnce,
        job: "j".into(),
        retry_for: Duration::from_secs(5),
    }
}

fn info(index: usize, parallelism: usize, restored: Option<RestoredState>) -> SubtaskInfo {
    SubtaskInfo {
        vertex: "postgres".into(),
        uid: UID.into(),
        index,
        parallelism,
        max_parallelism: 128,
        metrics: Default::default(),
        restored,
        snapshots: SnapshotCollector::default(),
        checkpointing: true,
        alignment: Default::default(),
        side_outputs: Default::default(),
        state_backend: Default::default(),
    }
}

/// A checkpoint's entries as every subtask of the restoring run sees them.
fn restored(entries: &[Vec<u8>]) -> Option<RestoredState> {
    Some(RestoredState { all_entries: entries.to_vec(), ..Default::default() })
}

fn sink(pg: &PgServer, index: usize, parallelism: usize, restored: Option<RestoredState>) -> TestSink {
    PostgresSink::new(config(pg), &info(index, parallelism, restored)).unwrap()
}

fn write(sink: &mut TestSink, ids: &[i64]) {
    sink.write(ids.iter().map(|&id| Record::new(0, vec![id, id * 10])).collect()).unwrap();
}

fn ids(pg: &PgServer) -> Vec<i64> {
    let rows = pg.client().query("SELECT id FROM counts ORDER BY id", &[]).unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

fn prepared(pg: &PgServer) -> Vec<String> {
    let rows = pg.client().query("SELECT gid FROM pg_prepared_xacts ORDER BY gid", &[]).unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

fn gid(subtask: usize, checkpoint: u64) -> String {
    format!("weir:j:{UID}:{subtask}:{checkpoint}")
}

#[test]
fn a_subtask_that_recovers_leaves_the_next_checkpoint_of_another_taskmanager_alone() {
    let pg = PgServer::start();
    // Run 1, two subtasks: checkpoint 5 completes (its _metadata is written),
    // and the run dies before either subtask hears of it.
    let (mut a0, mut a1) = (sink(&pg, 0, 2, None), sink(&pg, 1, 2, None));
    write(&mut a0, &[1, 2]);
    write(&mut a1, &[3]);
    let mut entries = a0.snapshot_state(5).unwrap().entries;
    entries.extend(a1.snapshot_state(5).unwrap().entries);
    drop((a0, a1));

    // Run 2 restores checkpoint 5. TaskManager B is quicker: subtask 1 starts,
    // writes, and prepares checkpoint 6 while subtask 0 on TaskManager A is
    // still being created.
    let mut b1 = sink(&pg, 1, 2, restored(&entries));
    write(&mut b1, &[4, 5]);
    b1.snapshot_state(6).unwrap();
    assert!(prepared(&pg).contains(&gid(1, 6)));

    // Subtask 0 recovers at 5: it commits what checkpoint 5 lists, nothing more.
    let mut b0 = sink(&pg, 0, 2, restored(&entries));
    assert_eq!(prepared(&pg), [gid(1, 6)], "checkpoint 5 committed, subtask 1's checkpoint 6 untouched");
    assert_eq!(ids(&pg), [1, 2, 3]);

    // Checkpoint 6 completes: subtask 1 commits its own transaction, rows and all.
    b0.snapshot_state(6).unwrap();
    b1.notify_checkpoint_complete(6).unwrap();
    b0.notify_checkpoint_complete(6).unwrap();
    assert_eq!(ids(&pg), [1, 2, 3, 4, 5], "nothing lost");
    assert!(prepared(&pg).is_empty());
}

#[test]
fn a_commit_of_a_prepared_transaction_that_was_rolled_back_fails_naming_it() {
    let pg = PgServer::start();
    let mut s = sink(&pg, 0, 1, None);
    write(&mut s, &[1]);
    s.snapshot_state(1).unwrap();
    // Something else rolls the transaction back before the checkpoint completes.
    pg.client().batch_execute(&format!("ROLLBACK PREPARED '{}'", gid(0, 1))).unwrap();
    let e = s.notify_checkpoint_complete(1).unwrap_err().to_string();
    assert!(e.contains(&gid(0, 1)) && e.contains("rolled back") && e.contains("lost"), "{e}");

    // One committed by someone else (as recovery would) is committed: no error.
    write(&mut s, &[2]);
    s.snapshot_state(2).unwrap();
    pg.client().batch_execute(&format!("COMMIT PREPARED '{}'", gid(0, 2))).unwrap();
    s.notify_checkpoint_complete(2).unwrap();
    assert_eq!(ids(&pg), [2]);
}

#[test]
fn a_restore_whose_listed_transaction_is_gone_without_committing_fails_naming_it() {
    let pg = PgServer::start();
    let mut s = sink(&pg, 0, 1, None);
    write(&mut s, &[1]);
    let first = s.snapshot_state(1).unwrap().entries;
    s.notify_checkpoint_complete(1).unwrap();
    // Restoring a checkpoint whose transaction was committed already is the usual case.
    drop(s);
    let mut s = sink(&pg, 0, 1, restored(&first));
    write(&mut s, &[2]);
    let second = s.snapshot_state(2).unwrap().entries;
    drop(s);
    pg.client().batch_execute(&format!("ROLLBACK PREPARED '{}'", gid(0, 2))).unwrap();
    let e = PostgresSink::<Row, i64>::new(config(&pg), &info(0, 1, restored(&second))).err().unwrap().to_string();
    assert!(e.contains(&gid(0, 2)) && e.contains("lost"), "{e}");
    assert_eq!(ids(&pg), [1]);
}

#[test]
fn after_a_rescale_down_each_leftover_is_resolved_by_the_subtask_that_answers_for_it() {
    let pg = PgServer::start();
    // Run 1 at parallelism 3: checkpoint 1 completes; subtasks 1 and 2 prepare
    // checkpoint 2, which never completes; subtask 1 has rows in flight.
    let mut run1: Vec<TestSink> = (0..3).map(|i| sink(&pg, i, 3, None)).collect();
    let mut entries = Vec::new();
    for (i, s) in run1.iter_mut().enumerate() {
        write(s, &[i as i64 * 10]);
        entries.extend(s.snapshot_state(1).unwrap().entries);
    }
    for (i, s) in run1.iter_mut().enumerate().skip(1) {
        write(s, &[i as i64 * 10 + 1]);
        s.snapshot_state(2).unwrap();
    }
    drop(run1);
    let listed = [gid(0, 1), gid(1, 1), gid(2, 1)];

    // Run 2 at parallelism 2 from checkpoint 1. Subtask 1 first: only its own leftover goes.
    let mut b1 = sink(&pg, 1, 2, restored(&entries));
    let mut left: Vec<String> = listed.to_vec();
    left.push(gid(2, 2));
    left.sort();
    assert_eq!(prepared(&pg), left);
    // Subtask 0: what checkpoint 1 lists is committed (subtask 2's too), subtask 2's leftover rolled back.
    let mut b0 = sink(&pg, 0, 2, restored(&entries));
    assert!(prepared(&pg).is_empty(), "{:?}", prepared(&pg));
    assert_eq!(ids(&pg), [0, 10, 20]);
    // Checkpoint 2 of this run reuses the id of the leftover without a clash.
    write(&mut b1, &[11]);
    write(&mut b0, &[1]);
    b1.snapshot_state(2).unwrap();
    b0.snapshot_state(2).unwrap();
    b0.notify_checkpoint_complete(2).unwrap();
    b1.notify_checkpoint_complete(2).unwrap();
    assert_eq!(ids(&pg), [0, 1, 10, 11, 20]);
}
