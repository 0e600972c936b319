package cluster

// Crash shuts the node's embedded nats-server down at once, as a dying
// process would for its peers: nothing this node holds is given back, no
// ack in flight is flushed. Close still has to be called.
func (n *Node) Crash() {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}

// ServerName is the embedded nats-server's name (JetStream's leader names).
func (n *Node) ServerName() string { return n.srv.Name() }

// SettlesInFlight is how many acks and terms wait for JetStream's answer.
func (n *Node) SettlesInFlight() int { return n.queues.settle.inFlight() }

// UsePlainAcks makes the node send acks without waiting for answers, as
// before they were confirmed; call it before the node is used.
func (n *Node) UsePlainAcks() { n.queues.plainAcks = true }

// LoseSettles makes the node's acks and terms, and their retries, go where
// nothing answers (as to a consumer leader that is gone) while on is true.
func (n *Node) LoseSettles(on bool) { n.queues.settle.lose.Store(on) }
