package router

import (
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router/match"
)

// Exchange types.
const (
	Direct  = "direct"
	Fanout  = "fanout"
	Topic   = "topic"
	Headers = "headers"
)

// Topology types live in core so that storage can persist them without
// importing the router; the router re-exports them under its own names.
type (
	DestKind     = core.DestKind
	Dest         = core.Dest
	Binding      = core.Binding
	ExchangeInfo = core.ExchangeInfo
)

// Destination kinds.
const (
	ToQueue    = core.ToQueue
	ToExchange = core.ToExchange
)

// Exchange is a declared exchange with its bindings. Its binding structures
// are guarded by the owning vhost's lock.
type Exchange struct {
	ExchangeInfo
	alternate string

	nbind     int
	byKD      map[keyDest][]*bindingRec // identity index: (key, dest) → bindings (differing in args)
	destCount map[Dest]int
	direct    map[string][]Dest // routing key → destinations
	fanout    []Dest
	topic     *match.Topic[Dest]
	headers   []*bindingRec
}

type keyDest struct {
	key  string
	dest Dest
}

type bindingRec struct {
	Binding
	hb match.HeadersBinding
}

func newExchange(info ExchangeInfo) *Exchange {
	e := &Exchange{ExchangeInfo: info, byKD: map[keyDest][]*bindingRec{}, destCount: map[Dest]int{}}
	e.alternate = info.Args.String("alternate-exchange")
	switch info.Type {
	case Direct:
		e.direct = map[string][]Dest{}
	case Topic:
		e.topic = match.NewTopic[Dest]()
	}
	return e
}

func validExchangeType(t string) bool {
	switch t {
	case Direct, Fanout, Topic, Headers:
		return true
	}
	return false
}

func (e *Exchange) findBinding(b Binding) (*bindingRec, int) {
	for i, x := range e.byKD[keyDest{b.Key, b.Dest}] {
		if tablesEqual(x.Args, b.Args) {
			return x, i
		}
	}
	return nil, -1
}

// addBinding adds b; it reports false when an identical binding exists.
func (e *Exchange) addBinding(b Binding) (bool, error) {
	if x, _ := e.findBinding(b); x != nil {
		return false, nil
	}
	rec := &bindingRec{Binding: b}
	kd := keyDest{b.Key, b.Dest}
	firstKD := len(e.byKD[kd]) == 0
	switch e.Type {
	case Headers:
		hb, err := match.ParseHeadersBinding(b.Args)
		if err != nil {
			return false, err
		}
		rec.hb = hb
		e.headers = append(e.headers, rec)
	case Direct:
		if firstKD {
			e.direct[b.Key] = append(e.direct[b.Key], b.Dest)
		}
	case Fanout:
		if e.destCount[b.Dest] == 0 {
			e.fanout = append(e.fanout, b.Dest)
		}
	case Topic:
		if firstKD {
			e.topic.Add(b.Key, b.Dest)
		}
	}
	e.byKD[kd] = append(e.byKD[kd], rec)
	e.destCount[b.Dest]++
	e.nbind++
	return true, nil
}

// removeBinding removes b; it reports false when there was no such binding.
func (e *Exchange) removeBinding(b Binding) bool {
	rec, i := e.findBinding(b)
	if rec == nil {
		return false
	}
	kd := keyDest{b.Key, b.Dest}
	l := e.byKD[kd]
	l = append(l[:i], l[i+1:]...)
	lastKD := len(l) == 0
	if lastKD {
		delete(e.byKD, kd)
	} else {
		e.byKD[kd] = l
	}
	e.nbind--
	e.destCount[b.Dest]--
	lastDest := e.destCount[b.Dest] == 0
	if lastDest {
		delete(e.destCount, b.Dest)
	}
	// Other bindings may still route the same (key, dest) with other args.
	switch e.Type {
	case Headers:
		for j, x := range e.headers {
			if x == rec {
				e.headers = append(e.headers[:j], e.headers[j+1:]...)
				break
			}
		}
	case Direct:
		if lastKD {
			e.direct[b.Key] = removeDest(e.direct[b.Key], b.Dest)
			if len(e.direct[b.Key]) == 0 {
				delete(e.direct, b.Key)
			}
		}
	case Fanout:
		if lastDest {
			e.fanout = removeDest(e.fanout, b.Dest)
		}
	case Topic:
		if lastKD {
			e.topic.Remove(b.Key, b.Dest)
		}
	}
	return true
}

// bindingsTo returns the bindings whose destination is d.
func (e *Exchange) bindingsTo(d Dest) []Binding {
	if e.destCount[d] == 0 {
		return nil
	}
	var out []Binding
	for kd, l := range e.byKD {
		if kd.dest == d {
			for _, r := range l {
				out = append(out, r.Binding)
			}
		}
	}
	return out
}

// allBindings returns every binding of the exchange.
func (e *Exchange) allBindings() []Binding {
	out := make([]Binding, 0, e.nbind)
	for _, l := range e.byKD {
		for _, r := range l {
			out = append(out, r.Binding)
		}
	}
	return out
}

// match calls fn for each destination the exchange's own bindings select for
// routing key key and headers h. A destination may be reported more than
// once; the caller deduplicates.
func (e *Exchange) match(key string, h core.Table, fn func(Dest)) {
	switch e.Type {
	case Direct:
		for _, d := range e.direct[key] {
			fn(d)
		}
	case Fanout:
		for _, d := range e.fanout {
			fn(d)
		}
	case Topic:
		e.topic.Match(key, fn)
	case Headers:
		for _, b := range e.headers {
			if b.hb.Match(h) {
				fn(b.Dest)
			}
		}
	}
}

func removeDest(ds []Dest, d Dest) []Dest {
	for i, x := range ds {
		if x == d {
			return append(ds[:i], ds[i+1:]...)
		}
	}
	return ds
}
