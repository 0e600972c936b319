// Package stomp is Bourse's STOMP 1.0, 1.1 and 1.2 adapter, over TCP
// (Serve) and WebSocket (WebSocketHandler: subprotocols v10.stomp,
// v11.stomp, v12.stomp; frames may share or span WebSocket messages).
//
// # Frames
//
// The codec is package wire: a reader that enforces the header-line count,
// header bytes and body size before allocating anything (a content-length
// is checked against the limit, never trusted), and header escaping per
// version (none in 1.0 and on CONNECT/CONNECTED; \n \c \\ in 1.1; also \r in
// 1.2). A malformed or oversized frame gets an ERROR frame with a message
// header and a readable body, then the connection closes.
//
// # Destinations (RabbitMQ's conventions)
//
//	/queue/x           default exchange, key x; SUBSCRIBE declares durable queue x
//	/topic/x           amq.topic, key x; each subscriber gets an exclusive auto-delete
//	                   queue, or with durable:true and an id a durable one that
//	                   survives disconnects (deleted by UNSUBSCRIBE with durable:true)
//	/exchange/E/key    exchange E, key; SUBSCRIBE binds a private queue with key
//	/amq/queue/x       existing queue x, never declared
//	/temp-queue/x      a private reply queue; reply-to is rewritten to /reply-queue/…
//	/reply-queue/x     reply to a temp queue, or to AMQP's direct reply-to
//	/stream/x          an existing stream x (read from x-stream-offset)
//
// # Properties
//
// SEND headers map to AMQP properties under RabbitMQ's names (content-type,
// content-encoding, persistent, priority, correlation-id, reply-to,
// expiration, amqp-message-id, type, user-id, app-id, timestamp); every
// other header is an AMQP header. Header values that are not strings on the
// AMQP side travel rendered as text plus, for a lossless way back, in
// core.TypedHeaders. MESSAGE frames carry the same mapping in reverse, plus
// subscription, message-id, ack (1.2), destination, redelivered and
// content-length.
//
// # Goroutines and locks
//
// Each connection has a reader goroutine (conn.serve), which reads and
// handles frames in order and owns the session state, and a writer
// goroutine (conn.writeLoop), which owns the socket's write side and
// batches frames from the outbound queue, flushing when it is empty. The
// outbound queue is bounded in bytes: a delivery that does not fit is
// refused (queue.Consumer.Deliver returns false) and the subscription is
// kicked when the writer has drained it.
//
// Lock order: a queue's lock, then subscription.mu (delivery bookkeeping)
// or outbound.mu (never both at once); conn.mu guards the subscription map
// and is never taken under a queue's lock. Nothing calls into the router
// while holding any of these.
//
// # Acknowledgements and receipts
//
// ack:auto needs no ACK from the client; client acks cumulatively (everything up to the
// acked message of that subscription); client-individual acks one. NACK
// requeues by default (requeue:false dead-letters through the queue's DLX).
// A RECEIPT for a persistent SEND is written only once the router's Confirm
// has fired (after fsync for durable queues); DISCONNECT's RECEIPT waits for
// all of them. BEGIN/COMMIT/ABORT buffer SEND, ACK and NACK per
// transaction. Heart-beats are negotiated both ways; a client silent for
// twice its promised interval (plus grace) is dropped.
package stomp
