package cluster

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/bourse-mq/bourse/core"
)

// Keys of the topology bucket. NATS KV keys allow only [-/_=.a-zA-Z0-9],
// with dots separating tokens, while entity names are any UTF-8 up to 255
// bytes, so every name is one token: "_" followed by its unpadded base64url
// (the "_" keeps the empty name a non-empty token).
//
//	v.<vhost>                     a vhost
//	x.<vhost>.<exchange>          an exchange
//	q.<vhost>.<queue>             a queue
//	b.<vhost>.<source>.<digest>   a binding; digest is a hash of its
//	                              destination, routing key and arguments
const (
	kindVHost    = "v"
	kindExchange = "x"
	kindQueue    = "q"
	kindBinding  = "b"
)

func tok(name string) string { return "_" + base64.RawURLEncoding.EncodeToString([]byte(name)) }

func untok(t string) (string, error) {
	if !strings.HasPrefix(t, "_") {
		return "", fmt.Errorf("key token %q does not start with _", t)
	}
	b, err := base64.RawURLEncoding.DecodeString(t[1:])
	return string(b), err
}

func vhostKey(vhost string) string          { return kindVHost + "." + tok(vhost) }
func exchangeKey(vhost, name string) string { return kindExchange + "." + tok(vhost) + "." + tok(name) }
func queueKey(vhost, name string) string    { return kindQueue + "." + tok(vhost) + "." + tok(name) }

func bindingKey(vhost string, b core.Binding, args string) string {
	h := sha256.New()
	for _, p := range []string{b.Dest.Kind.String(), b.Dest.Name, b.Key, args} {
		fmt.Fprintf(h, "%d:%s", len(p), p)
	}
	return kindBinding + "." + tok(vhost) + "." + tok(b.Source) + "." + hex.EncodeToString(h.Sum(nil)[:16])
}

// Values are JSON in the shape of one object of RabbitMQ's definitions
// export, except "arguments", which is core's typed encoding (each value a
// one-key object naming its AMQP type: {"x-max-length":{"I":10}}) so that
// a redeclare compares by AMQP value on every node.

type vhostDef struct {
	Name string `json:"name"`
}

type exchangeDef struct {
	Name       string          `json:"name"`
	VHost      string          `json:"vhost"`
	Type       string          `json:"type"`
	Durable    bool            `json:"durable"`
	AutoDelete bool            `json:"auto_delete"`
	Internal   bool            `json:"internal"`
	Arguments  json.RawMessage `json:"arguments"`
}

type queueDef struct {
	Name       string          `json:"name"`
	VHost      string          `json:"vhost"`
	Durable    bool            `json:"durable"`
	AutoDelete bool            `json:"auto_delete"`
	Arguments  json.RawMessage `json:"arguments"`
}

type bindingDef struct {
	Source          string          `json:"source"`
	VHost           string          `json:"vhost"`
	Destination     string          `json:"destination"`
	DestinationType string          `json:"destination_type"`
	RoutingKey      string          `json:"routing_key"`
	Arguments       json.RawMessage `json:"arguments"`
}

func encArgs(t core.Table) (json.RawMessage, error) {
	if len(t) == 0 {
		return json.RawMessage("{}"), nil
	}
	s, err := core.EncodeTyped(t)
	if err != nil {
		return nil, core.Wrap(core.PreconditionFailed, err, "arguments")
	}
	return json.RawMessage(s), nil
}

func decArgs(r json.RawMessage) (core.Table, error) {
	if len(r) == 0 || string(r) == "{}" || string(r) == "null" {
		return nil, nil
	}
	return core.DecodeTyped(string(r))
}

// entry is one decoded value of the bucket: the topology a node applies.
type entry struct {
	raw      []byte // the value as stored
	kind     string
	vhost    string
	exchange core.ExchangeInfo
	queue    core.QueueInfo
	binding  core.Binding
}

func encExchange(vhost string, e core.ExchangeInfo) ([]byte, error) {
	args, err := encArgs(e.Args)
	if err != nil {
		return nil, err
	}
	return json.Marshal(exchangeDef{e.Name, vhost, e.Type, e.Durable, e.AutoDelete, e.Internal, args})
}

func encQueue(vhost string, q core.QueueInfo) ([]byte, error) {
	args, err := encArgs(q.Args)
	if err != nil {
		return nil, err
	}
	return json.Marshal(queueDef{q.Name, vhost, q.Durable, q.AutoDelete, args})
}

// encBinding returns the binding's key and value.
func encBinding(vhost string, b core.Binding) (string, []byte, error) {
	args, err := encArgs(b.Args)
	if err != nil {
		return "", nil, err
	}
	v, err := json.Marshal(bindingDef{b.Source, vhost, b.Dest.Name, b.Dest.Kind.String(), b.Key, args})
	return bindingKey(vhost, b, string(args)), v, err
}

// decode reads a value of the bucket according to its key's kind.
func decode(key string, val []byte) (entry, error) {
	kind, _, _ := strings.Cut(key, ".")
	e := entry{kind: kind}
	var err error
	switch kind {
	case kindVHost:
		var d vhostDef
		if err = json.Unmarshal(val, &d); err == nil {
			e.vhost = d.Name
		}
	case kindExchange:
		var d exchangeDef
		if err = json.Unmarshal(val, &d); err != nil {
			break
		}
		e.vhost = d.VHost
		e.exchange = core.ExchangeInfo{Name: d.Name, Type: d.Type, Durable: d.Durable, AutoDelete: d.AutoDelete, Internal: d.Internal}
		e.exchange.Args, err = decArgs(d.Arguments)
	case kindQueue:
		var d queueDef
		if err = json.Unmarshal(val, &d); err != nil {
			break
		}
		e.vhost = d.VHost
		e.queue = core.QueueInfo{Name: d.Name, Durable: d.Durable, AutoDelete: d.AutoDelete}
		e.queue.Args, err = decArgs(d.Arguments)
	case kindBinding:
		var d bindingDef
		if err = json.Unmarshal(val, &d); err != nil {
			break
		}
		e.vhost = d.VHost
		kind := core.ToQueue
		if d.DestinationType == core.ToExchange.String() {
			kind = core.ToExchange
		}
		e.binding = core.Binding{Source: d.Source, Dest: core.Dest{Kind: kind, Name: d.Destination}, Key: d.RoutingKey}
		e.binding.Args, err = decArgs(d.Arguments)
	default:
		err = fmt.Errorf("unknown kind %q", kind)
	}
	if err != nil {
		return entry{}, fmt.Errorf("topology key %s: %w", key, err)
	}
	return e, nil
}

// keyNames decodes the vhost and name tokens of a vhost, exchange or queue
// key (for deletes, whose value is empty).
func keyNames(key string) (kind, vhost, name string, err error) {
	parts := strings.Split(key, ".")
	if len(parts) < 2 {
		return "", "", "", fmt.Errorf("topology key %q too short", key)
	}
	kind = parts[0]
	if vhost, err = untok(parts[1]); err != nil {
		return "", "", "", err
	}
	if len(parts) > 2 {
		if name, err = untok(parts[2]); err != nil {
			return "", "", "", err
		}
	}
	return kind, vhost, name, nil
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// sortBindingsFirst orders keys so that bindings come before queues and
// exchanges, and those before vhosts.
func sortBindingsFirst(keys []string) {
	rank := map[string]int{kindBinding: 0, kindQueue: 1, kindExchange: 1, kindVHost: 2}
	sort.Slice(keys, func(i, j int) bool {
		ri, rj := rank[keys[i][:1]], rank[keys[j][:1]]
		if ri != rj {
			return ri < rj
		}
		return keys[i] < keys[j]
	})
}
