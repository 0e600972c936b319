// Package cluster is Bourse's NATS JetStream backplane. It implements the
// router's interfaces; the adapters never import it, and only cmd/bourse
// wires it in.
//
// It replicates the topology (router.Replicator, topology.go), keeps the
// messages of shared durable queues in JetStream (router.SharedQueues,
// queues.go), keeps streams in JetStream (router.SharedStreams,
// streams.go), carries messages to the node-local queues of other nodes
// over core NATS (router.NodeFanout, fanout.go), shares users and
// permissions (users.go: the auth store's records in the KV bucket
// bourse_users, applied on every node by a watcher), and shares MQTT
// sessions and retained messages (protocols/mqtt's Cluster, mqtt.go).
//
// A node has three NATS connections: control (the topology bucket), data
// (the shared queues' JetStream traffic) and fan-out (core NATS, no echo),
// so that one slow path cannot get another's connection dropped.
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
//
//   - Publish: each node routes with its own (replicated) bindings, and
//     the router hands the shared target queues to Queues.Publish instead
//     of enqueueing locally. The message (the journal's codec,
//     storage/record: properties, headers, body) goes to each queue's
//     subject with one Nats-Msg-Id; a failed publish is retried with the
//     same id (deduplicated within two minutes) until the timeout. The
//     publisher's confirm (AMQP confirm, MQTT PUBACK, STOMP RECEIPT) is
//     given once every target's PubAck has come.
//
//   - Consume: each stream has one durable pull consumer, "bourse",
//     shared by every node, so JetStream spreads messages over the nodes
//     that pull (competing consumers across nodes). A node pulls only
//     while its own consumers of the queue have credit (their free
//     prefetch; 128 at a time for one without prefetch or with no-ack)
//     and feeds the messages to its router queue (queue.Remote), which
//     delivers them as any queue does. The consumer's MaxAckPending is
//     unlimited: prefetch is enforced by Bourse, per consumer.
//
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
//
//   - AckWait is 20 seconds (AckWait, Options.AckWait, the configuration's
//     cluster.ack_wait), and every message a node holds gets a heartbeat
//     (InProgress) every quarter of it: a consumer keeps a message as
//     long as it likes, and the messages of a node that dies or is cut
//     off come back to the others AckWait after its last beat, flagged
//     redelivered. A queue's consumer keeps the AckWait of the node that
//     created it (a redeclare does not update it); a node beats at a
//     quarter of the shortest of its own and those of the consumers it
//     has bound.
//
//   - basic.get pulls one message at once if the stream has one ready.
//
//   - Expiry with nobody consuming (limits.go, reap.go). Without a
//     dead-letter exchange JetStream expires: x-message-ttl is the stream's
//     MaxAge (at least 100 ms; Duplicates shrinks to it when shorter than
//     two minutes), every queue stream allows per-message TTLs, and
//     Publish gives a message whose own expiration comes before the
//     queue's x-message-ttl a Nats-TTL header, per target queue, rounded up
//     to whole seconds (at least one, JetStream's granularity). JetStream
//     counts from storing, the router from the publish (Arrived), so the
//     router's own expiry of pulled messages still comes first and nothing
//     expires early; JetStream also removes a message a node holds past its
//     TTL (its ack then settles nothing, a requeue drops it). With a DLX
//     and x-message-ttl, the reaper, one node holding the key "reaper" of
//     bourse_sac (created when free, renewed every 2 s, gone 6 s after its
//     holder), looks at each such queue every 250 ms to 5 s: when no node
//     holds its messages or waits to pull, it reads the consumer's next
//     message (a leader read), and if the router's rule (ExpiresAt) says
//     it expired, fetches it and has the router's queue dead-letter it
//     (ExpireRemote: x-death reason expired, terminated once the dead letter
//     is confirmed), then the next. A DLX queue without x-message-ttl keeps
//     its messages' own expiration enforced only on pulled messages.
//     Streams made before: ensure (a declare of a new queue) and each
//     node's Open, for queues whose limits or TTL JetStream enforces, update
//     a stream whose per-message TTLs are off (any other was made with its
//     queue's arguments and is left alone); a publish refused for its
//     Nats-TTL (per-message TTLs off) is stored without it and updates the
//     stream.
//
//   - Counts and purge (count.go): a shared queue's ready count is the
//     stream's messages less those its consumer has handed out unacked,
//     plus what this node holds ready; declare-ok asks JetStream at once,
//     the management API gets the last count and, when it is over 250 ms
//     old, a refresh in the background (the next request sees it). Purge
//     takes the ready messages from the consumer and terminates them
//     (JetStream's own purge would also drop the unacknowledged ones).
//
//   - Single active consumer (sac.go): a queue with
//     x-single-active-consumer has one active consumer in the cluster.
//     The node whose consumers may pull holds the queue's lease, a key of
//     the KV bucket bourse_sac (taken by compare-and-set when free,
//     renewed every 2 s while the node has consumers, expiring after 6 s);
//     the others' consumers wait, and their nodes try for the lease every
//     500 ms. On that node the router's queue picks its first consumer,
//     as on one node. When the node's last consumer goes, what it held
//     goes back to JetStream in stream order, confirmed, before the lease
//     is deleted, so the next active consumer, on any node, gets those
//     messages first and in order. A node that dies holding the lease
//     loses it after 6 s; its unacknowledged messages come back after
//     AckWait (20 s), after newer ones the next consumer already had.
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
// Fan-out to node-local queues (exclusive or non-durable queues: AMQP
// exclusive and auto-delete consumers, MQTT clean sessions, STOMP /topic
// subscriptions; and direct reply-to addresses):
//
//   - Interest: the router tells the Fanout, under the vhost's lock, of
//     each binding from an exchange to a node-local queue, of each
//     node-local queue (the default exchange routes to it by name), of
//     each reply-to address, and of the exchanges upstream of those
//     (exchange-to-exchange bindings, alternate exchanges). Each interest
//     is refcounted and maps to core NATS subjects, each subscribed while
//     an interest needs it: bourse.f.<vhost>.<exchange> (bare) and
//     bourse.f.<vhost>.<exchange>.k.<word>… (FanoutSubject; every name and
//     word a base64url token). A direct binding key is one exact subject;
//     a topic pattern maps '*' to '*' and a final '#' to the pattern
//     without it plus '.>', exactly as the router's matcher
//     (fanout_subject_test.go checks it); '#' elsewhere, fanout and
//     headers exchanges and upstream exchanges take '<exchange>.>'. So
//     the NATS servers forward a message only to the nodes whose bindings
//     may take it, filtered by routing key for direct and topic exchanges.
//     Cost: a node-local queue holds a subscription for its name, and one
//     per distinct binding key (exchanges' bare subjects are shared).
//   - Publish: the publishing node routes and delivers to its own queues
//     itself, then publishes the message once (a 17-byte header: version,
//     node id, sequence; then the storage/record codec) on the subject of
//     the exchange it was published to and its routing key, or on the
//     bare subject when CC or BCC headers add keys. In embedded mode it
//     first asks its server whether anyone in the cluster listens to that
//     subject and sends nothing if not; in nats mode it always sends.
//   - Receive: all subscriptions feed one buffered channel (8192
//     messages) read by one goroutine, which drops the extra copies when
//     several subscriptions match one message (per-sender sequence) and
//     routes the message through this node's own bindings
//     (VHost.PublishFromCluster) to its node-local queues only: never to
//     shared queues or streams (the publishing node handled those) and
//     never back to the fan-out (no loops). No echo: a node never
//     receives its own publishes, so MQTT no-local works as on one node.
//   - At most once: core NATS does not store; a message published while
//     a link or node is down, or that a node cannot take (its buffer full:
//     the NATS client drops it, the node logs it and counts it in
//     Fanout.Dropped) is lost, as RabbitMQ's transient messages across a
//     lost link. The node's other connections are not affected.
//   - Interest propagation: a subscription reaches the other servers a
//     moment after the bind-ok (as long as NATS takes to tell its routes);
//     a message published elsewhere in that moment misses the new binding.
//   - Mandatory: a mandatory message no queue on this node took is sent as
//     a request; a node that delivered it to a queue answers, and the
//     server's no-responders status says at once that nobody listens. No
//     answer within ProbeWait (1 s) means unroutable: basic.return. (A
//     node that listens but takes nothing, e.g. a headers exchange whose
//     bindings do not match, makes the publisher wait that second.)
//   - Not fanned out: dead letters (they reach the DLX's queues on the
//     node that dead-letters), publishes to an exchange this node does
//     not have (a transient exchange declared on another node only:
//     declare it on each node, or durable), and what reaches another
//     node's queues only through a binding from a transient exchange of
//     the publishing node. Alternate exchanges are chosen with this
//     node's bindings: a message that only another node's node-local
//     queue takes may also go to the alternate exchange.
//   - A message that no queue here took but that, by the interest check,
//     another node listens to is not unroutable (stats; MQTT 5 acknowledges
//     it with success, not "no matching subscribers"). In nats mode, with
//     no interest check, it is counted unroutable and MQTT 5 answers 0x10
//     (a success code too); mandatory messages are probed in both modes.
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
//   - Orphans (orphans.go): every node answers on "bourse.mqtt.alive.<node
//     token>"; every node sweeps the owners bucket, and the sessions of a
//     holder with no responders for Options.MQTTOrphanAfter are adopted
//     by a live node each (a compare-and-set against the dead holder's
//     entry), which then expires them and sends their delayed wills.
//   - The messages of persistent sessions are in their subscription
//     queues, shared queues that keep their messages in one stream for
//     all of them, SessionStream, a subject each, read by the node holding
//     the session with no JetStream consumer (sessions.go): one Raft group
//     in all, not two per subscription.
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
//   - Idle copies: each reader holds the copy while it reads (Follow's
//     release: a consumer's reading goroutine until it ends, the fetch
//     endpoint until its answer is written). StreamIdle (5 minutes,
//     Options.StreamIdle; the config's cluster.stream_idle) after the
//     last one let go, the node stops the
//     ordered consumer, waits for it, and resets the local log at its
//     next offset (Reset: every segment deleted, one empty file left).
//     The next reader starts a copy as the first did: the empty log does
//     not fit JetStream's first offset, so it starts over there. A reader
//     that comes while a copy is being stopped waits for the stop to end,
//     then starts the new copy; no reader holds the log meanwhile, so none
//     sees the reset. A copy left on disk from before the node started is
//     idle from the start. The copy's ordered consumer pulls with a 1 s
//     heartbeat: a first pull request lost (sent before the new consumer
//     reached the servers) stalls a starting copy about 2 s.
//   - Named offsets (x-stream-consumer-name, HTTP …/offsets/{name}) are
//     keys of the KV bucket OffsetsBucket (bourse_stream_offsets), written
//     within 100 ms of an ack (at-least-once across a node's crash, as on
//     one node) and at shutdown, read when a named reader subscribes, so
//     a reader resumes on any node.
//
// What is not shared yet: priorities act on each node's own share only,
// and so do x-max-length/x-max-length-bytes with a dead-letter exchange or
// reject-publish-dlx (without, drop-head and reject-publish are JetStream's
// limits on the whole queue: limits.go); and so does expiry with a DLX
// while a node holds messages of the queue (the reaper waits) or, without
// x-message-ttl, for messages' own expiration. A message a node pulled
// for a consumer that left before it arrived comes back flagged
// redelivered. Transient and exclusive queues (so clean MQTT
// sessions' subscriptions) stay on their node, reached from the others by
// the fan-out. A copy stopped for want of readers is copied again whole
// by the next reader, not from where it stopped; a stream's counts and
// sizes on a node are its copy's (0 before a reader came there; segments
// and bytes 0 once its copy stopped).
//
// In embedded mode (Node with ModeEmbedded) the process runs a nats-server
// with JetStream and SyncAlways (sync_interval: always), so that a
// JetStream acknowledgement means fsynced, and talks to it in process.
package cluster
