// Package cluster is Bourse's NATS JetStream backplane. It implements the
// router's interfaces; the adapters never import it, and only cmd/bourse
// wires it in.
//
// It does two things: it replicates the topology (router.Replicator,
// topology.go) and it keeps the messages of shared durable queues in
// JetStream (router.SharedQueues, queues.go).
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
//   - Settle: ack (or a no-ack delivery) and term are confirmed
//     (settle.go): each goes to JetStream as a request, pipelined off the
//     consumer's path, and is re-sent every second until JetStream answers
//     (after the ack is applied to the consumer's replicated state) or the
//     timeout; one never answered is logged and means a redelivery after
//     AckWait (at least once). Reject or nack with requeue, a consumer or
//     connection gone with unacked messages, a graceful shutdown: Nak (not
//     confirmed: a lost one means AckWait instead of at once), and
//     JetStream hands the message out again, here or on another node; the
//     redelivered flag and the delivery count come from the JetStream
//     metadata (NumDelivered). Reject without requeue and expiry dead-
//     letter through the router (x-death, to shared or local queues), and
//     the original is terminated only once the dead letter is confirmed;
//     without a DLX it is terminated.
//   - AckWait is 20 seconds (AckWait, Options.AckWait), and every message
//     a node holds gets a heartbeat (InProgress) every quarter of it: a
//     consumer keeps a message as long as it likes, and the messages of a
//     node that dies or is cut off come back to the others AckWait after
//     its last beat, flagged redelivered.
//   - basic.get pulls one message at once if the stream has one ready.
//
// Failures (failure_test.go, partition_test.go, cmd/bourse and e2e
// cluster tests):
//
//   - A publish is confirmed only once every target stream's leader has it
//     on a quorum; during a leader change the publish is retried with the
//     same Nats-Msg-Id until the timeout (10 s by default), then nacked.
//     Stopping or SIGKILLing the stream leader's node under confirmed load
//     loses no confirmed message; duplicates are possible (at least once)
//     and flagged redelivered.
//   - Declares, deletes and a starting node's topology watch retry JetStream's
//     transient errors (503 no leader, no responders) until the timeout
//     (retry.go), then fail with "JetStream unavailable from this node".
//     So a node cut off from the majority refuses writes in bounded time:
//     publishes to shared queues are nacked, declares fail (a resource
//     error, AMQP 506). Its own JetStream server rejoins when the routes
//     come back, its watcher catches up with what the majority changed,
//     and messages flow again, after an election: the cut-off node comes
//     back with a higher raft term and the leaders step down (JetStream has
//     no pre-vote), so writes pause for several seconds on healing.
//   - With two of three nodes gone, acks wait (retried) and reach the new
//     consumer leader once a node is back.
//
// Cost (README "Cluster mode"): BenchmarkClusterPublish in cmd/bourse and
// bench's cluster-persistent-16-publishers compare persistent confirmed
// publishes through one Bourse, one cluster node and three;
// BenchmarkSharedQueueAck compares confirmed and plain acks.
//
// What is not shared yet: message counts (declare-ok, management API),
// purge, x-max-length/overflow, priorities and single active consumer
// act on each node's own share only; x-message-ttl counts from the
// publish but is enforced only on messages a node pulled. A message a node
// pulled for a consumer that left before it arrived comes back flagged
// redelivered. Streams (x-queue-type stream), transient and exclusive
// queues, and MQTT sessions and retained messages stay per node.
//
// In embedded mode (Node with ModeEmbedded) the process runs a nats-server
// with JetStream and SyncAlways (sync_interval: always), so that a
// JetStream acknowledgement means fsynced, and talks to it in process.
package cluster
