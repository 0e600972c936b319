package queue

import "sort"

// deque is a ring buffer of entries kept in ascending seq order. Pushes at the
// back are the common case; a requeued entry goes back to its original
// position (insert by seq), as AMQP 0-9-1 asks for requeued messages.
type deque struct {
	buf  []*entry
	head int
	n    int
}

func (d *deque) len() int { return d.n }

func (d *deque) at(i int) *entry { return d.buf[(d.head+i)&(len(d.buf)-1)] }

func (d *deque) grow() {
	size := len(d.buf) * 2
	if size == 0 {
		size = 16
	}
	nb := make([]*entry, size)
	for i := 0; i < d.n; i++ {
		nb[i] = d.at(i)
	}
	d.buf, d.head = nb, 0
}

func (d *deque) pushBack(e *entry) {
	if d.n == len(d.buf) {
		d.grow()
	}
	d.buf[(d.head+d.n)&(len(d.buf)-1)] = e
	d.n++
}

func (d *deque) pushFront(e *entry) {
	if d.n == len(d.buf) {
		d.grow()
	}
	d.head = (d.head - 1) & (len(d.buf) - 1)
	d.buf[d.head] = e
	d.n++
}

func (d *deque) front() *entry {
	if d.n == 0 {
		return nil
	}
	return d.buf[d.head]
}

func (d *deque) popFront() *entry {
	if d.n == 0 {
		return nil
	}
	e := d.buf[d.head]
	d.buf[d.head] = nil
	d.head = (d.head + 1) & (len(d.buf) - 1)
	d.n--
	if d.n == 0 {
		d.head = 0
	}
	return e
}

// insert places e at its seq position. Requeues usually land at or near the
// front, so the shift is short.
func (d *deque) insert(e *entry) {
	if d.n == 0 || d.at(d.n-1).seq < e.seq {
		d.pushBack(e)
		return
	}
	if d.at(0).seq > e.seq {
		d.pushFront(e)
		return
	}
	i := sort.Search(d.n, func(i int) bool { return d.at(i).seq > e.seq })
	d.pushBack(nil)
	for j := d.n - 1; j > i; j-- {
		d.buf[(d.head+j)&(len(d.buf)-1)] = d.at(j - 1)
	}
	d.buf[(d.head+i)&(len(d.buf)-1)] = e
}

// clear removes every entry and returns them in order.
func (d *deque) clear() []*entry {
	out := make([]*entry, 0, d.n)
	for d.n > 0 {
		out = append(out, d.popFront())
	}
	return out
}
