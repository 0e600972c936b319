// Package amqp is Bourse's AMQP 0-9-1 server adapter: it speaks the
// protocol to clients (amqp091-go, pika, amqp-tools, … unchanged) and turns
// their methods into router calls. The wire codec is protocols/amqp/wire;
// this package owns connection and channel state and the mapping between
// AMQP and the broker, nothing else.
//
// # Files
//
//	server.go    Options, Server (New, Serve, ServeConn, Shutdown, SetBlocked)
//	conn.go      one connection: handshake, reader loop, heartbeats, close, Block
//	out.go       the outbound queue, bounded in bytes
//	writer.go    the writer goroutine and frame encoding
//	channel.go   channel state machine, method dispatch, teardown
//	topology.go  exchange.* and queue.* methods
//	deliver.go   consumers (queue.Consumer), qos, get, ack/nack/reject, recover, tags
//	publish.go   content assembly, publish, publisher confirms, transactions
//	table.go     wire.Table ↔ core.Table, basic properties ↔ core.Properties
//	errors.go    AMQP exceptions; core.Kind → reply code (replyCode, the only place)
//	auth.go      SASL PLAIN, AMQPLAIN and EXTERNAL (a verified client certificate)
//	access.go    RabbitMQ's permission checks per method (auth.Principal)
//
// # Goroutines
//
// Each connection has exactly two. The reader (conn.run) reads frames with
// a wire.FrameReader that reuses its buffer (a body that fits one frame is
// read into its own buffer and kept as the message body), handles every
// method inline,
// calls the router, and queues answers. The writer (conn.writeLoop) takes
// the whole outbound queue as a batch, encodes it into a bufio.Writer with
// reusable method structs, flushes when the queue is empty, and sends a
// heartbeat when nothing was written for half the heartbeat interval.
// Everything else happens on other goroutines' time: queue.Consumer.Deliver
// runs on whichever goroutine made the queue dispatch (a publisher, an
// acker, a TTL timer), and publisher confirms may arrive from storage.
//
// The reader detects silent peers with a read deadline of two heartbeat
// intervals (refreshed at most every quarter interval). Connections that
// announce connection.blocked get connection.blocked/unblocked from
// Server.SetBlocked; a blocked connection's reader stops at its next
// basic.publish until unblocked.
//
// # Bounded output and backpressure
//
// outbound is bounded in bytes (Options.MaxOutboundBytes). Deliver refuses
// a delivery when the bound is reached (or while another subscription of
// the connection awaits its kick); the queue then skips that subscription,
// and the writer calls Sub.Kick once it has drained to half the bound.
// Control frames (replies, confirms, returns, get-ok) are never refused;
// instead the reader stops reading while they exceed the bound, which
// pushes back on the client through TCP. Deliveries never stop the reader,
// so a client that both publishes and consumes cannot deadlock with us.
//
// # Lock order
//
//	queue lock → channel.mu → outbound.mu
//	confirms.mu → outbound.mu
//	conn.bmu → outbound.mu
//	Server.setBlockedMu → Server.mu → conn.bmu (a new connection inherits the block state)
//
// Deliver and Cancelled are called with the queue lock held (Cancelled
// without); they take channel.mu and push to outbound. Nothing in this
// package calls into a queue or the router while holding channel.mu,
// confirms.mu or outbound.mu: acks, rejects, kicks and cancels happen after
// unlocking. outbound.mu is a leaf.
//
// # Delivery tags
//
// Each channel numbers its deliveries (basic.deliver and basic.get-ok) from
// 1 under channel.mu, in the order their frames are queued, so tags on the
// wire are increasing. unackedList maps a tag to (queue, queue-local id):
// a slice in tag order, binary-searched for single acks (leaving a
// tombstone) and cut as a prefix for multiple acks, with no per-delivery
// allocation. Channel close, connection close and basic.recover requeue
// every unacknowledged delivery with Queue.Reject(id, true), so it comes
// back flagged redelivered. basic.qos global=false applies to consumers
// created afterwards (queue.ConsumeOptions.Prefetch); global=true is a
// window shared by the channel's consumers, enforced in Deliver and
// re-opened with Sub.Kick when acks free credit.
//
// # Publisher confirms and transactions
//
// In confirm mode each publish gets the channel's next sequence number and
// a router Confirm callback, which may run synchronously or later on
// another goroutine, in any order. A number is confirmed once both its
// Confirm has run and Publish has returned (so a basic.return of the same
// message is queued first, as RabbitMQ orders them); confirms go out
// strictly in sequence order, and consecutive ones of the same kind still
// in the queue merge into one multiple ack or nack. A Confirm error
// (overflow reject-publish, storage failure) is a basic.nack.
//
// In a transaction, publishes and settlements are buffered in order;
// tx.commit applies them and answers commit-ok once every publish is
// confirmed by the router; tx.rollback discards publishes and puts
// settled deliveries back among the unacknowledged. Confirm and tx modes
// exclude each other (406).
//
// # Mapping
//
// Messages are one immutable *core.Message per publish: basic properties map
// field for field onto core.Properties, headers become a core.Table (nested
// tables and decimals converted to core types; scalars shared). Outbound,
// a table of scalars is handed to the encoder without a copy. A message
// from another protocol that AMQP cannot carry (a property or routing key
// over 255 bytes, a header of another type) is repaired by the writer:
// names are clipped, or the headers dropped, with a warning in the log.
//
// Exceptions: router errors carry a core.Kind, which replyCode maps to a
// reply code; codes the specification classes as hard close the
// connection (connection.close, then close-ok is awaited for
// Options.CloseTimeout), the others close the channel (channel.close; other
// frames on it are dropped until close-ok).
//
// Connection IDs carry core.ProtoAMQP in their top byte, so they never
// collide with IDs other adapters number from their own counters.
package amqp
