package mqtt

// fifo is a slice-backed queue. It releases its backing array once drained,
// so an idle connection holds no buffer.
type fifo[T any] struct {
	buf  []T
	head int
}

func (f *fifo[T]) len() int { return len(f.buf) - f.head }

func (f *fifo[T]) push(v T) {
	if f.head > 0 && f.head == len(f.buf) {
		f.buf, f.head = f.buf[:0], 0
	}
	f.buf = append(f.buf, v)
}

// peek returns the head; the queue must not be empty.
func (f *fifo[T]) peek() *T { return &f.buf[f.head] }

// pop removes the head; the queue must not be empty.
func (f *fifo[T]) pop() T {
	var zero T
	v := f.buf[f.head]
	f.buf[f.head] = zero
	f.head++
	if f.head == len(f.buf) {
		f.reset()
	}
	return v
}

// drain removes and returns everything.
func (f *fifo[T]) drain() []T {
	out := append([]T(nil), f.buf[f.head:]...)
	f.reset()
	return out
}

func (f *fifo[T]) reset() {
	if cap(f.buf) > 64 {
		f.buf = nil
	} else {
		clear(f.buf)
		f.buf = f.buf[:0]
	}
	f.head = 0
}
