// Package cluster is Bourse's NATS JetStream backplane. It implements the
// router's interfaces; the adapters never import it, and only cmd/bourse
// wires it in.
//
// It does three things: it replicates the topology (router.Replicator,
// topology.go), it keeps the messages of shared durable queues in
// JetStream (router.SharedQueues, queues.go), and it shares MQTT sessions
// and retained messages (protocols/mqtt's Cluster, mqtt.go).
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
// MQTT (mqtt.go):
//
//   - Buckets: "bourse_mqtt_sessions" (a persistent session's record:
//     client id, vhost, expiry, subscriptions with their options, written
//     by the node holding it), "bourse_mqtt_retained" (one key per vhost
//     and topic) and "bourse_mqtt_owners" (which node holds each session:
//     {"node": name}). Keys are the adapter's keys as one token (tok),
//     values the adapter's JSON. History 1, replicas as the topology's.
//   - Retained: every node watches the retained bucket and applies each
//     change to its index (WatchRecords; resubscribed from the last
//     revision if its consumer goes away).
//   - Takeover: a CONNECT claims the client id with a compare-and-set on
//     its owner key (Claim), then asks the previous holder, by a core NATS
//     request on "bourse.mqtt.takeover.<node token>", to let the session
//     go; the holder closes the connection (MQTT 5: DISCONNECT 0x8E),
//     gives its deliveries back, writes the record and answers, and only
//     then does the new node read the record, so CONNACK says session
//     present with the subscriptions in place. A holder that does not
//     answer within 5 s (down: no responders, at once) is passed over.
//     Racing claims are ordered by the owner key's revision: a node asked
//     by a later claim lets go (if its own claim is still being written,
//     once its revision is known, to compare), and one asked by an earlier
//     claim keeps the session, so one connection is left: the later one.
//     Reads of owner keys and session records go to the stream leader
//     (STREAM.MSG.GET, not a direct get that a lagging replica answers).
//   - The messages of persistent sessions are their subscription queues'
//     (shared queues, above): one stream and one consumer per persistent
//     subscription, each a Raft group at R3.
//
// What is not shared yet: message counts (declare-ok, management API),
// purge, x-max-length/overflow, priorities and single active consumer
// act on each node's own share only; x-message-ttl counts from the
// publish but is enforced only on messages a node pulled. A message a node
// pulled for a consumer that left before it arrived comes back flagged
// redelivered. Streams (x-queue-type stream), transient and exclusive
// queues (so clean MQTT sessions' subscriptions) stay per node.
//
// In embedded mode (Node with ModeEmbedded) the process runs a nats-server
// with JetStream and SyncAlways (sync_interval: always), so that a
// JetStream acknowledgement means fsynced, and talks to it in process.
package cluster
