// Package mqtt is Bourse's MQTT 3.1, 3.1.1 and 5.0 adapter. mochi-mqtt
// (github.com/mochi-mqtt/server/v2) speaks the protocol; a mochi hook, the
// bridge, connects it to the router, so that MQTT, AMQP and STOMP clients
// exchange messages through amq.topic.
//
// # Who does what
//
// mochi decodes and validates packets, runs keep-alive, topic aliases,
// packet ids, the QoS 2 handshakes, SUBACK/UNSUBACK reason codes and $SYS.
// validate.go adds the checks mochi leaves out (will flags and topic,
// empty topic filters, unknown topic aliases, wildcard response topics)
// and corrects the CONNACK codes of unsupported protocol versions.
// The bridge (hook.go) owns everything that touches a message:
// authentication and vhost selection, publishes, subscriptions, delivery
// acknowledgements, retained messages, wills and sessions.
//
// # One delivery path
//
// Every application message goes through the router, MQTT to MQTT included:
//
//   - OnPublish routes the PUBLISH to amq.topic (routing key: the topic with
//     '/' and '.' swapped) and stops mochi there (packets.ErrRejectPacket, or
//     CodeSuccessIgnore for QoS 0): mochi neither acks, nor retains, nor fans
//     it out. mochi's topic index still records subscriptions (for SUBACK and
//     UNSUBACK codes and session takeover) but only ever fans out $SYS, and
//     wills are taken from mochi at CONNECT, so no message reaches a client
//     twice.
//   - Each subscription has its own router queue bound to amq.topic with the
//     filter as a pattern ('+' → '*', '#' → '#', literal levels swapped):
//     "mqtt-subscription-<client id>-<hash of the filter>", or
//     "mqtt-shared-<group>-<hash>" for $share/group/filter, shared by every
//     member so that the queue's round robin splits the load. A message
//     matching n subscriptions is delivered n times, each with its own
//     subscription identifier; no-local and the '$' rule for leading
//     wildcards are applied when it is written.
//   - $SYS filters are the exception: mochi serves them from its own index.
//
// # Acknowledgements
//
// PUBACK (QoS 1) and PUBREC (QoS 2) are sent when the router's Confirm has
// fired, which storage will delay until the message is durable: the bridge
// keeps a FIFO of owed acks per connection (pendingAck) and writes them in
// the order the publishes arrived ([MQTT-4.6.0-2]). Confirms may come from
// any goroutine. When owed acks reach the receive maximum the reader stops
// reading that client (backpressure instead of disconnection). MQTT 5 acks
// carry the reason (0x10 no matching subscribers, 0x97 quota exceeded, …);
// an MQTT 3 client whose message was refused is disconnected, as it cannot
// be told otherwise. Inbound QoS 2 state (which ids await PUBREL) lives in
// the session, so a duplicate PUBLISH is answered with PUBREC and never
// routed twice.
//
// Towards subscribers, a QoS 1 delivery is acked to its queue on PUBACK and
// a QoS 2 delivery on PUBREC (the client owns the message from then on; a
// reconnect before PUBCOMP must not deliver it again); a client error code
// rejects it without requeue. QoS 0 deliveries are acked once written.
// Deliveries a connection holds when it ends are requeued and removed from
// mochi's in-flight store, so a resumed session gets them from the router,
// flagged DUP.
//
// # Sessions
//
// A session (session.go) maps a client id to its subscriptions. Clean
// sessions use exclusive queues that go with the connection; persistent
// ones (MQTT 3 clean session 0, MQTT 5 session expiry > 0) keep non-exclusive
// queues that collect messages while the client is away, until the session
// expires (mochi's expiry loop, capped by Options.MaxSessionExpiry). Outside
// the default vhost mochi's client id is prefixed with the vhost, so clients
// of different vhosts never take each other's sessions over.
//
// With Options.Store (persist.go), persistent sessions survive a restart:
// their queues are durable (QoS 1/2 messages wait in the journal), each
// session (client, vhost, expiry, subscriptions with their options) and each
// retained message is saved within 100 ms of a change, in one transaction
// per tick, and at start the sessions are rebuilt and handed to mochi as
// stored clients, so a returning client gets "session present" and mochi's
// expiry still ends sessions that are not resumed (counting from the
// restart). MQTT queues no restored session uses are deleted at start.
// Not saved: mochi's in-flight window (unacknowledged deliveries come back
// from the queues instead, flagged DUP) and delayed wills.
//
// # In a cluster
//
// With Options.Cluster (cluster.go; the cluster package implements it,
// cmd/bourse wires it in) the records above are the cluster's, and:
//
//   - Retained messages: every node follows the retained bucket
//     (WatchRecords) into its own index, so a retained publish or clear on
//     one node reaches every node's next subscriber, within the 100 ms save
//     tick and the bucket's replication. A change of this node not yet
//     written wins over what the bucket says; when changes of one topic
//     cross, every node ends with the bucket's last one. While a change of
//     this node is being written, the bucket's echo of its previous one
//     may stand for a moment (a subscriber then gets the previous message).
//   - Sessions: every CONNECT claims its client id in the cluster (Claim)
//     under a per-key lock. A session held by another node is let go there
//     first: its connection is closed (MQTT 5: DISCONNECT 0x8E), its
//     deliveries go back to their queues, its record is written, and the
//     node forgets it without deleting its queues. This node then reads the
//     record (adoptSession), rebuilds the session and gives mochi an offline
//     client for it, so that CONNACK says session present (or, for a clean
//     start, the session ends and its queues go). The queues of persistent
//     sessions are the cluster's shared queues, so what was queued while the
//     client was away is delivered wherever it comes back. Racing claims:
//     the later one in the bucket wins, and the other connection is closed.
//   - A node restores, at start, only the sessions it still holds; it
//     deletes no MQTT queue at start; a $share group's queue stays when the
//     node's last member leaves (other nodes count their own members).
//   - Not shared: inbound QoS 2 state (a PUBLISH resent to another node
//     after PUBREC there is routed again); a delayed will lives on the node
//     that holds the session, and is lost if that node dies.
//
// # Goroutines
//
// Per connection: the reader (Server.serveConn, which runs mochi's client
// lifecycle itself, attach.go, and in which mochi decodes packets and calls
// the hook), a writer started on demand that exits once everything is
// written, and mochi's WriteLoop only for a client subscribed to $SYS (the
// only messages mochi sends through its own channel). An idle connection
// is one goroutine whose stack shrinks to 4 KiB (it waits for the next
// packet in shallow frames) and no read buffer (pipe.Read borrows a pooled
// one while data arrives): about 9 KiB of Go memory, 14.6 KiB of RSS in
// the bench (TestIdleConnectionMemory, bench conn-scale-mqtt). mochi writes through pipe, which appends to the connection's
// buffer; the writer encodes queued deliveries, owed acks and that buffer,
// and writes them to the socket in one write per batch. Deliver (called
// under a queue's lock) only appends to the connection's outbound queue,
// bounded by Options.MaxOutboundBytes and by the in-flight window (the
// client's Receive Maximum, at most Options.MaxInflight); when either is
// full it refuses, and the writer Kicks the refused subscriptions once it
// has drained below half.
//
// Lock order: session.mu → router/queue locks → conn.mu → mochi's client
// lock → conn.wmu. Server.sessMu and Server.sharedMu are taken alone or
// under session.mu. Nothing calls into the router while holding conn.mu.
//
// # Mapping (DESIGN.md's table, RabbitMQ's names)
//
//	MQTT                          router message (AMQP 0-9-1 view)
//	topic a/b.c                   exchange amq.topic, routing key a.b/c
//	filter a/+/#                  binding a.*.#
//	QoS 0 / 1 / 2                 delivery mode 1 / 2 / 2, header x-mqtt-publish-qos (int8)
//	RETAIN                        header x-mqtt-retain = true (for Retain As Published)
//	Content Type                  content_type
//	Correlation Data (≤255 B)     correlation_id; longer: header x-correlation-id
//	Response Topic r/t            reply_to r.t and header x-reply-to-topic r.t
//	Message Expiry Interval s     expiration s×1000 (back: remaining time, rounded up)
//	Payload Format Indicator      header x-mqtt-payload-format-indicator (int8)
//	User Property k=v             header k (a repeated key: an array of its values)
//	x-amqp-message-id, -type, -app-id, -user-id, -content-encoding,
//	-cluster-id, -priority, -timestamp (unix s)   the AMQP properties of those names
//	x-bourse-typed                the AMQP types of non-string headers (core.TypedHeaders)
//
// Towards a subscriber, QoS = min(subscription QoS, x-mqtt-publish-qos or
// 1 for persistent, 0 for transient messages). MQTT 3 subscribers get the
// payload alone. A topic whose routing key is reply_to
// amq.rabbitmq.reply-to.* goes to the default exchange, so MQTT repliers
// reach AMQP direct reply-to requesters.
//
// What does not map exactly: expiration below a second (rounded up); AMQP
// header keys or string values that are not valid MQTT strings (NUL,
// invalid UTF-8: they travel only in x-bourse-typed, with invalid UTF-8
// replaced); a persistent message delivered at QoS 0 comes back transient if
// republished at QoS 0; the order of distinct user property keys (sorted);
// a literal MQTT level "*" in a filter (an AMQP wildcard); routing keys
// containing '+', '#' or NUL (never delivered to MQTT).
//
// # Limits inherited from mochi
//
// mochi keeps one in-flight map per client for both directions, so a
// client's QoS > 0 PUBLISH reusing the id of one of the server's in-flight
// deliveries drops that entry (mochi does the same on its own). mochi's
// EstablishConnection would keep two goroutines per client and a reader
// stack that can never shrink below 16 KiB (27 KiB per idle connection),
// so attach.go reproduces its lifecycle with mochi's exported API; the
// bridge being mochi's only hook, it calls the bridge directly.
package mqtt
