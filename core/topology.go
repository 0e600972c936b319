package core

// DestKind says whether a binding's destination is a queue or an exchange.
type DestKind uint8

// Destination kinds.
const (
	ToQueue DestKind = iota
	ToExchange
)

func (k DestKind) String() string {
	if k == ToExchange {
		return "exchange"
	}
	return "queue"
}

// Dest is a binding destination.
type Dest struct {
	Kind DestKind
	Name string
}

// Binding is a routing rule from a source exchange to a destination.
type Binding struct {
	Source string
	Dest   Dest
	Key    string
	Args   Table
}

// ExchangeInfo describes a declared exchange.
type ExchangeInfo struct {
	Name       string
	Type       string
	Durable    bool
	AutoDelete bool
	Internal   bool
	Args       Table
}

// QueueInfo describes a declared queue.
type QueueInfo struct {
	Name       string
	Durable    bool
	Exclusive  bool
	AutoDelete bool
	Args       Table
}

// Definitions is the durable topology of a broker, as a metadata store
// returns it at start and as definitions export/import carries it.
type Definitions struct {
	VHosts    []string
	Exchanges []VHostExchange
	Queues    []VHostQueue
	Bindings  []VHostBinding
}

// VHostExchange is an exchange in a vhost.
type VHostExchange struct {
	VHost string
	ExchangeInfo
}

// VHostQueue is a queue in a vhost.
type VHostQueue struct {
	VHost string
	QueueInfo
}

// VHostBinding is a binding in a vhost.
type VHostBinding struct {
	VHost string
	Binding
}

// QueueSeq names one entry of a queue: the message at sequence number Seq
// of queue Queue. Storage records where a persistent message was enqueued
// with it.
type QueueSeq struct {
	Queue string
	Seq   uint64
}
