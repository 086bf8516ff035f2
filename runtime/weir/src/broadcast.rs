//! A keyed stream connected with a broadcast stream (Flink's
//! `keyedStream.connect(broadcastStream).process(KeyedBroadcastProcessFunction)`):
//! every subtask receives every element of the broadcast side and keeps the
//! same broadcast state from it, which the keyed side reads (see
//! [`weir_core::operator::broadcast`]).

use std::sync::Arc;

use weir_core::Data;
use weir_core::exchange::Partitioning;
use weir_core::keygroup::hash_key;
use weir_core::operator::OperatorNode;
use weir_core::operator::broadcast::{KeyedBroadcastOperator, KeyedBroadcastProcessFunction};
use weir_core::operator::co_process::CoInput;
use weir_core::state::Key;

use crate::stream::{DataStream, KeyedStream};

impl<K: Key, A: Data> KeyedStream<K, A> {
    /// This keyed stream with `broadcast`, whose every element reaches every
    /// subtask; finish with [`BroadcastConnectedStreams::process`].
    pub fn connect_broadcast<B: Data>(self, broadcast: DataStream<B>) -> BroadcastConnectedStreams<K, A, B> {
        BroadcastConnectedStreams { keyed: self, broadcast }
    }
}

/// A keyed stream and a broadcast stream, connected.
pub struct BroadcastConnectedStreams<K, A, B> {
    keyed: KeyedStream<K, A>,
    broadcast: DataStream<B>,
}

impl<K: Key, A: Data, B: Data> BroadcastConnectedStreams<K, A, B> {
    /// Runs `function`: `process_element` per keyed record, with its key's
    /// state and timers and the broadcast state read-only;
    /// `process_broadcast_element` per broadcast element, in every subtask.
    pub fn process<Out: Data, F: KeyedBroadcastProcessFunction<K, A, B, Out> + Clone + Sync>(
        self,
        function: F,
    ) -> DataStream<Out> {
        const NAME: &str = "broadcast-process";
        let env = self.keyed.stream.env.clone();
        let keyed = self.keyed.stream.tag(&format!("{NAME}-keyed"), CoInput::<A, B>::First);
        let broadcast = self.broadcast.tag(&format!("{NAME}-broadcast"), CoInput::<A, B>::Second);
        let key = self.keyed.key.clone();
        let hash = Partitioning::Hash {
            key_hash: Arc::new({
                let key = key.clone();
                // Only keyed records take this edge; the broadcast side's edge broadcasts.
                move |v: &CoInput<A, B>| match v {
                    CoInput::First(a) => hash_key(&key(a)),
                    CoInput::Second(_) => 0,
                }
            }),
            max_parallelism: env.max_parallelism(),
        };
        let parallelism = env.parallelism();
        let node = env.graph_mut(|g| {
            let node = g.add_operator(NAME, parallelism, move |info, out| {
                let key = key.clone();
                let op = KeyedBroadcastOperator::new(function.clone(), move |a: &A| key(a), info);
                Ok(Box::new(OperatorNode::new(op, out, info)?))
            });
            for from in keyed {
                g.connect(from, node, hash.clone()).expect("stream types match by construction");
            }
            for from in broadcast {
                g.connect(from, node, Partitioning::<CoInput<A, B>>::Broadcast)
                    .expect("stream types match by construction");
            }
            node
        });
        DataStream::new(env, vec![node])
    }
}
