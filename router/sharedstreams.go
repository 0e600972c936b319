package router

import (
	"time"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router/queue"
)

// SharedStreams keeps streams (x-queue-type stream) in the cluster, in
// cluster mode (the cluster package implements it on JetStream): a record
// appended on any node is in the cluster's copy, with one offset for every
// node, and each node's readers read a local copy of the stream that the
// cluster fills (lazily: from the first reader on). Named offsets are kept
// in the cluster too.
type SharedStreams interface {
	// Open returns the log the stream's queue uses on this node: appends
	// go to the cluster; reads come from local, which the log fills from
	// the cluster once a reader follows it (queue.Follower). It must not
	// block: it is called while the topology is applied.
	Open(vhost, name string, args queue.Args, local ReplicaLog) queue.Log
	// Closed stops the log Open returned (the stream is gone from this
	// node); its local copy is deleted next.
	Closed(log queue.Log)
}

// ReplicaLog is a stream's local copy as the cluster fills it (storage
// implements it): records come with the offset and timestamp the cluster
// gave them, the copy may start at any offset, and it is trimmed to follow
// the cluster's retention rather than by its own limits.
type ReplicaLog interface {
	queue.Log
	// AppendAt writes a record at offset, which must be the log's next
	// one; payload is a message in storage/record's encoding.
	AppendAt(offset uint64, ts time.Time, payload []byte, done func(error))
	// Reset drops every record and starts the log at base.
	Reset(base uint64) error
	// TrimBefore lets the log delete whole segments below offset.
	TrimBefore(offset uint64)
}

// localStreamConfig is the local copy's configuration of a shared stream:
// the cluster's retention, not the copy's own, decides what is kept.
func (v *VHost) localStreamConfig(args queue.Args) queue.StreamConfig {
	c := args.StreamConfig()
	if v.b.opts.SharedStreams != nil {
		c.MaxBytes, c.MaxAge = 0, 0
	}
	return c
}

// shareStream wraps a stream's local log in its cluster log (cluster
// mode); on a single node it returns log.
func (v *VHost) shareStream(name string, args queue.Args, log queue.Log) (queue.Log, error) {
	ss := v.b.opts.SharedStreams
	if ss == nil {
		return log, nil
	}
	rl, ok := log.(ReplicaLog)
	if !ok {
		return nil, core.Errorf(core.NotImplemented, "stream '%s' in vhost '%s': this node's stream store cannot hold a copy of a cluster stream", name, v.name)
	}
	return ss.Open(v.name, name, args, rl), nil
}

// unshareStream stops a shared stream's cluster log on this node.
func (v *VHost) unshareStream(q *queue.Queue) {
	if ss := v.b.opts.SharedStreams; ss != nil && q.IsStream() {
		ss.Closed(q.StreamLog())
	}
}
