package router

import (
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router/queue"
)

// Restore rebuilds durable topology loaded from the metadata store. It must
// run before any client connects. It does not write back to the store.
// Entries that no longer make sense (a binding to a missing queue) are
// logged and skipped rather than failing the start.
func (b *Broker) Restore(d core.Definitions) error {
	b.mu.Lock()
	for _, name := range d.VHosts {
		if b.vhosts[name] == nil {
			b.vhosts[name] = newVHost(b, name)
		}
	}
	b.mu.Unlock()
	vhost := func(name string) *VHost {
		b.mu.Lock()
		defer b.mu.Unlock()
		v := b.vhosts[name]
		if v == nil {
			v = newVHost(b, name)
			b.vhosts[name] = v
		}
		return v
	}
	for _, e := range d.Exchanges {
		v := vhost(e.VHost)
		v.mu.Lock()
		if v.exchanges[e.Name] == nil {
			v.exchanges[e.Name] = newExchange(e.ExchangeInfo)
		}
		v.mu.Unlock()
	}
	for _, q := range d.Queues {
		args, err := queue.ParseArgs(q.Args)
		if err != nil {
			b.log.Error("skipping stored queue with invalid arguments", "vhost", q.VHost, "queue", q.Name, "err", err)
			continue
		}
		v := vhost(q.VHost)
		v.mu.Lock()
		if v.queues[q.Name] == nil {
			d := QueueDecl{QueueInfo: q.QueueInfo}
			var log queue.Log
			if args.Type == "stream" {
				if log, err = v.openStreamLocked(d, args); err != nil {
					v.mu.Unlock()
					return err
				}
			}
			v.queues[q.Name] = v.newQueueLocked(d, args, log)
		}
		v.mu.Unlock()
	}
	for _, bd := range d.Bindings {
		v := vhost(bd.VHost)
		v.mu.Lock()
		src := v.exchanges[bd.Source]
		ok := src != nil
		if ok && bd.Dest.Kind == ToQueue {
			ok = v.queues[bd.Dest.Name] != nil
		} else if ok {
			ok = v.exchanges[bd.Dest.Name] != nil
		}
		if ok {
			if _, err := src.addBinding(bd.Binding); err != nil {
				ok = false
			}
		}
		v.mu.Unlock()
		if !ok {
			b.log.Warn("skipping stored binding whose ends are missing", "vhost", bd.VHost, "source", bd.Source, "dest", bd.Dest.Name)
		}
	}
	return nil
}
