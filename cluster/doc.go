// Package cluster is Bourse's NATS JetStream backplane. It implements the
// router's interfaces; the adapters never import it, and only cmd/bourse
// wires it in.
//
// It does three things: it replicates the topology (router.Replicator,
// topology.go), it keeps the messages of shared durable queues in
// JetStream (router.SharedQueues, queues.go), and it keeps streams in
// JetStream (router.SharedStreams, streams.go).
//
// Topology:
//
//   - The bucket: vhosts, durable exchanges, durable non-exclusive queues
//     and the bindings between them are keys of the KV bucket
//     "bourse_topology" (key layout in records.go), each value one object
//     in the shape of RabbitMQ's definitions JSON. History is 1; replicas
//     3 on a cluster of three nodes or more.
//   - Declares are compare-and-set (KV Create): the first writer of a name
//     wins, every other declare is compared with the recorded object by the
//     router's own equivalence rules, so a conflict is PreconditionFailed
//     (406) on any node.
//   - Every node watches the whole bucket and applies each change to its
//     broker (Broker.Apply…) in the bucket's order. A change made on this
//     node returns only once this node's watcher has applied its revision
//     (read-your-writes); a delete, which has no revision of its own,
//     waits for the stream's last sequence. Sync does the same on demand:
//     the router calls it before it answers NotFound.
//   - Start returns once the initial replay is applied and the watcher has
//     caught up with the stream leader's last sequence: a node is ready
//     only with the whole topology.
//   - Deletes cascade from the deleting node (bindings first, then the
//     object, then a sweep for bindings made meanwhile). A binding whose
//     ends are missing on a node is parked and applied if they appear, as
//     a node replaying from scratch would.
//   - The watcher is an ordered consumer on one JetStream server; if that
//     server dies the client notices late, so a change waiting more than a
//     second makes the watcher resubscribe from the last applied revision.
//
// Messages of shared queues (durable, not exclusive, not x-queue-type
// stream):
//
//   - Each such queue is a JetStream stream with WorkQueue retention,
//     named QueueStream (bourse_q_<readable part>_<digest>), subject
//     QueueSubject (bourse.q.<vhost token>.<queue token>), file storage,
//     R3 when the cluster has three nodes or more, else R1. The declaring
//     node creates it (and its consumer) before it records the queue in
//     the bucket, so any node that sees the queue can publish to it; the
//     deleting node deletes it after removing the queue (a vhost delete
//     deletes its queues' streams).
//   - Publish: each node routes with its own (replicated) bindings, and
//     the router hands the shared target queues to Queues.Publish instead
//     of enqueueing locally. The message (the journal's codec,
//     storage/record: properties, headers, body) goes to each queue's
//     subject with one Nats-Msg-Id; a failed publish is retried with the
//     same id (deduplicated within two minutes) until the timeout. The
//     publisher's confirm (AMQP confirm, MQTT PUBACK, STOMP RECEIPT) is
//     given once every target's PubAck has come.
//   - Consume: each stream has one durable pull consumer, "bourse",
//     shared by every node, so JetStream spreads messages over the nodes
//     that pull (competing consumers across nodes). A node pulls only
//     while its own consumers of the queue have credit (their free
//     prefetch; 128 at a time for one without prefetch or with no-ack)
//     and feeds the messages to its router queue (queue.Remote), which
//     delivers them as any queue does. The consumer's MaxAckPending is
//     unlimited: prefetch is enforced by Bourse, per consumer.
//   - Settle: ack (or a no-ack delivery) acks in JetStream (a plain ack:
//     one lost on the way means a redelivery after AckWait, at least
//     once); reject or nack with requeue, a consumer or connection gone
//     with unacked messages, a graceful shutdown: Nak, and JetStream hands
//     the message out again at once, here or on another node; the
//     redelivered flag and the delivery count come from the JetStream
//     metadata (NumDelivered). Reject without requeue and expiry dead-
//     letter through the router (x-death, to shared or local queues), and
//     the original is terminated only once the dead letter is confirmed;
//     without a DLX it is terminated.
//   - AckWait is 30 minutes (AckWait): the messages of a node that dies
//     with messages in hand come back to the other nodes after it.
//   - basic.get pulls one message at once if the stream has one ready.
//
// Streams (x-queue-type stream):
//
//   - Each stream is a JetStream stream with limits retention, named
//     StreamName (bourse_s_<readable part>_<digest>), subject StreamSubject
//     (bourse.s.<vhost token>.<stream token>), file storage, replicas as
//     for queues; MaxBytes from x-max-length-bytes, MaxAge from x-max-age,
//     Discard old; Duplicates from x-stream-dedup-window (default two
//     minutes, at most MaxAge). The declaring node creates it before it
//     records the stream in the bucket; the deleting node deletes it, and
//     the stream's named offsets, after removing the stream.
//   - A record's offset is its JetStream sequence minus one, the same on
//     every node. Publish: the router appends to the stream's queue as on
//     one node, and the queue's log (streamLog) publishes to JetStream with
//     Nats-Msg-Id = a digest of the message id (a random id without one,
//     or with x-stream-dedup-window 0), so JetStream deduplicates across
//     nodes; the confirm comes with the PubAck (retried with the same id
//     until the timeout). The node's own deduplication is off.
//   - Reading: every node keeps its own segment log of the stream (the
//     single-node format, storage's ReplicaLog), empty until a reader
//     comes: a consumer (AMQP, STOMP, MQTT) or the fetch endpoint calls
//     Follow, which starts an ordered consumer copying the JetStream
//     stream into the local log, each record at its sequence minus one
//     with JetStream's timestamp, and from then on follows new appends.
//     Readers read the local log as on one node (sendfile included). A
//     consumer's start ("first", "next", "last", an offset) is resolved
//     against JetStream's bounds, read when it subscribes; a time waits
//     until the copy holds a record at or after it, or all of the stream
//     (at most the timeout, then the copy's end, which is no later than
//     the exact offset); the fetch endpoint waits until the copy holds
//     what JetStream held (at most 10 s, then 503).
//   - The copy starts over at JetStream's first offset when it does not
//     fit: it is past JetStream's last sequence, before its first, or its
//     last record differs from JetStream's at that sequence (a copy left
//     from a deleted stream of the same name). When JetStream's retention
//     passes the copy (a gap in the sequences), it starts over too.
//   - Retention: JetStream's limits decide; the local copy has no limits
//     of its own, and every second a copying node reads the stream's first
//     sequence and deletes its local segments wholly below it
//     (TrimBefore). A reader's "first" is JetStream's first offset.
//   - Named offsets (x-stream-consumer-name, HTTP …/offsets/{name}) are
//     keys of the KV bucket OffsetsBucket (bourse_stream_offsets), written
//     within 100 ms of an ack (at-least-once across a node's crash, as on
//     one node) and at shutdown, read when a named reader subscribes, so
//     a reader resumes on any node.
//
// What is not shared yet: message counts (declare-ok, management API),
// purge, x-max-length/overflow, priorities and single active consumer
// act on each node's own share only; x-message-ttl counts from the
// publish but is enforced only on messages a node pulled. A message a node
// pulled for a consumer that left before it arrived comes back flagged
// redelivered. Transient and exclusive queues, and MQTT sessions and
// retained messages stay per node. A node that started copying a stream
// copies it until the stream is deleted or the node stops, readers or
// not; a stream's counts and sizes on a node are its copy's, and 0
// before a reader came there.
//
// In embedded mode (Node with ModeEmbedded) the process runs a nats-server
// with JetStream and SyncAlways (sync_interval: always), so that a
// JetStream acknowledgement means fsynced, and talks to it in process.
package cluster
