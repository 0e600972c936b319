// Package cluster is Bourse's NATS JetStream backplane. It implements the
// router's interfaces; the adapters never import it, and only cmd/bourse
// wires it in.
//
// This first slice replicates topology only (router.Replicator):
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
// In embedded mode (Node with ModeEmbedded) the process runs a nats-server
// with JetStream and SyncAlways (sync_interval: always), so that a
// JetStream acknowledgement means fsynced, and talks to it in process.
package cluster
