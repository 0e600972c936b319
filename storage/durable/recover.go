package durable

import (
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/bourse-mq/bourse/core"
)

type entryKey struct {
	q   qkey
	inc int // incarnation: queue-deleted records seen before, for this name
	seq uint64
}

type recMsg struct {
	msg     *core.Message
	seg     int
	refs    int // live targets after recovery
	pos     int64
	recSize int
	size    int // body size
}

// recover reads every segment, truncating a torn or corrupt tail of the
// last one, and rebuilds the index of unsettled messages.
func (s *Store) recover() (map[[2]string][]Recovered, error) {
	ns, err := s.segmentNumbers()
	if err != nil {
		return nil, err
	}
	inc := map[qkey]int{}
	entries := map[entryKey]*recMsg{}
	settled := map[entryKey]bool{}
	delivered := map[entryKey]bool{}
	for i, n := range ns {
		path := s.segPath(n)
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read journal segment %s: %w", path, err)
		}
		off := 0
		for off < len(data) {
			typ, payload, size, err := nextRecord(data[off:])
			if err == nil {
				err = s.apply(typ, payload, n, int64(off), size, inc, entries, settled, delivered)
			}
			if err != nil {
				if i == len(ns)-1 {
					s.log.Warn("journal: truncating torn or corrupt tail", "segment", path, "offset", off, "bytes_cut", len(data)-off, "err", err)
					if terr := os.Truncate(path, int64(off)); terr != nil {
						return nil, fmt.Errorf("truncate journal segment %s: %w", path, terr)
					}
				} else {
					s.log.Error("journal: corrupt record in a sealed segment; the rest of it is ignored", "segment", path, "offset", off, "err", err)
				}
				break
			}
			off += size
		}
		s.segs[n] = &segment{n: n, path: path, written: int64(min(off, len(data)))}
		s.curSeg = n
	}

	// Count each message's live targets, then give every message one
	// msgRef shared by its live targets.
	isLive := func(k entryKey) bool { return k.inc == inc[k.q] && !settled[k] }
	for k, m := range entries {
		if isLive(k) {
			m.refs++
		}
	}
	out := map[[2]string][]Recovered{}
	refs := map[*recMsg]*msgRef{}
	for k, m := range entries {
		if !isLive(k) {
			continue
		}
		name := [2]string{k.q.vhost, k.q.queue}
		out[name] = append(out[name], Recovered{Seq: k.seq, Msg: m.msg, Redelivered: delivered[k], Paged: s.opts.LazyRecovery, Size: m.size})
		ref := refs[m]
		if ref == nil {
			seg := s.segs[m.seg]
			ref = &msgRef{seg: seg, remaining: m.refs, pos: m.pos, size: m.recSize}
			seg.live++
			refs[m] = ref
		}
		if s.index[k.q] == nil {
			s.index[k.q] = map[uint64]*msgRef{}
		}
		s.index[k.q][k.seq] = ref
	}
	for _, l := range out {
		sort.Slice(l, func(i, j int) bool { return l[i].Seq < l[j].Seq })
	}
	if len(ns) > 0 {
		s.log.Info("journal recovered", "segments", len(ns), "queues", len(out), "messages", len(refs))
	}
	return out, nil
}

var errBadRecord = errors.New("unknown journal record type")

func (s *Store) apply(typ byte, payload []byte, seg int, pos int64, recSize int, inc map[qkey]int, entries map[entryKey]*recMsg, settled, delivered map[entryKey]bool) error {
	r := &reader{B: payload}
	vhost := r.String()
	switch typ {
	case recMessage:
		n := r.Uvarint()
		if r.Err != nil || n > uint64(len(payload)) {
			return errCorrupt
		}
		targets := make([]core.QueueSeq, n)
		for i := range targets {
			targets[i].Queue = r.String()
			targets[i].Seq = r.Uvarint()
		}
		var m *core.Message
		var size int
		var err error
		if s.opts.LazyRecovery {
			m, size, err = r.MessageWithoutBody()
			if err != nil {
				return errCorrupt
			}
			m.Origin.VHost = vhost
		} else if m, err = readMessage(r, vhost); err != nil {
			return err
		} else {
			size = len(m.Body)
		}
		rm := &recMsg{msg: m, seg: seg, pos: pos, recSize: recSize, size: size}
		for _, t := range targets {
			q := qkey{vhost, t.Queue}
			entries[entryKey{q, inc[q], t.Seq}] = rm
		}
	case recSettle, recDelivered:
		q := qkey{vhost, r.String()}
		n := r.Uvarint()
		if r.Err != nil || n > uint64(len(payload)) {
			return errCorrupt
		}
		for range n {
			k := entryKey{q, inc[q], r.Uvarint()}
			if typ == recSettle {
				settled[k] = true
			} else {
				delivered[k] = true
			}
		}
	case recQueueDeleted:
		q := qkey{vhost, r.String()}
		inc[q]++
	default:
		return errBadRecord
	}
	return r.Err
}
