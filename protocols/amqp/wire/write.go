package wire

import (
	"bufio"
	"encoding/binary"
	"math"
)

// The writers encode each frame in place in the free space of the
// bufio.Writer (bufio.Writer.AvailableBuffer) and hand it back with Write,
// which then only marks the bytes as buffered. No per-frame allocation occurs
// as long as a frame's header and payload fit in the free space; when less
// than minSpare bytes are free the buffer is flushed first so that they
// usually do. Frames larger than the buffer are still written correctly, at
// the cost of one temporary allocation. None of the writers flush the final
// frame: call Flush when a batch of frames is complete.

// minSpare is the free space below which a writer flushes before encoding.
const minSpare = 512

// frameBuf returns the free space of w as an empty slice.
func frameBuf(w *bufio.Writer) ([]byte, error) {
	if w.Available() < minSpare && w.Buffered() > 0 {
		if err := w.Flush(); err != nil {
			return nil, err
		}
	}
	return w.AvailableBuffer(), nil
}

// appendFrameHeader appends a frame header (§4.2.3) with a placeholder size
// for finishFrame to fill in.
func appendFrameHeader(b []byte, typ uint8, channel uint16) []byte {
	return append(b, typ, byte(channel>>8), byte(channel), 0, 0, 0, 0)
}

// finishFrame fills in the size of the frame that starts at b[0], checks it
// against frameMax (0: no limit), appends frame-end and writes the frame.
func finishFrame(w *bufio.Writer, b []byte, frameMax uint32) error {
	size := uint64(len(b) - frameHeaderSize)
	if size > math.MaxUint32-frameOverhead || (frameMax != 0 && size > uint64(frameMax)-frameOverhead) {
		return ErrFrameTooLarge
	}
	binary.BigEndian.PutUint32(b[3:frameHeaderSize], uint32(size))
	_, err := w.Write(append(b, FrameEnd))
	return err
}

// WriteMethod writes m as a method frame on channel. It does not flush. An
// encoding error leaves w unchanged.
func WriteMethod(w *bufio.Writer, channel uint16, m Method) error {
	b, err := frameBuf(w)
	if err != nil {
		return err
	}
	b, err = EncodeMethod(appendFrameHeader(b, FrameMethod, channel), m)
	if err != nil {
		return err
	}
	return finishFrame(w, b, 0)
}

// WriteHeader writes a content header frame (§4.2.6.1) announcing bodySize
// bytes of body; a nil props sends no properties. It fails with
// ErrFrameTooLarge, writing nothing, if the frame would exceed frameMax (0
// for no limit), and with ErrInvalidFrameMax if frameMax is 1 to 8.
func WriteHeader(w *bufio.Writer, channel, classID uint16, bodySize uint64, props *Properties, frameMax uint32) error {
	if frameMax != 0 && frameMax <= frameOverhead {
		return ErrInvalidFrameMax
	}
	b, err := frameBuf(w)
	if err != nil {
		return err
	}
	b, err = AppendHeader(appendFrameHeader(b, FrameHeader, channel), classID, bodySize, props)
	if err != nil {
		return err
	}
	return finishFrame(w, b, frameMax)
}

// WriteBody writes body as body frames (§4.2.6.2) of at most frameMax-8
// payload bytes each; frameMax 0 means no limit beyond the 32-bit frame size.
// An empty body writes no frames.
func WriteBody(w *bufio.Writer, channel uint16, body []byte, frameMax uint32) error {
	chunk := uint64(math.MaxUint32 - frameOverhead)
	if frameMax != 0 {
		if frameMax <= frameOverhead {
			return ErrInvalidFrameMax
		}
		chunk = uint64(frameMax - frameOverhead)
	}
	for len(body) > 0 {
		n := len(body)
		if uint64(n) > chunk {
			n = int(chunk)
		}
		b, err := frameBuf(w)
		if err != nil {
			return err
		}
		b = appendFrameHeader(b, FrameBody, channel)
		binary.BigEndian.PutUint32(b[3:frameHeaderSize], uint32(n))
		if cap(b)-len(b) > n {
			// The whole frame fits in the free space: one copy, one Write.
			b = append(b, body[:n]...)
			if _, err := w.Write(append(b, FrameEnd)); err != nil {
				return err
			}
		} else {
			// Large chunk: let bufio write it through without staging.
			if _, err := w.Write(b); err != nil {
				return err
			}
			if _, err := w.Write(body[:n]); err != nil {
				return err
			}
			if err := w.WriteByte(FrameEnd); err != nil {
				return err
			}
		}
		body = body[n:]
	}
	return nil
}

// WriteContent writes the content that follows a basic.publish,
// basic.deliver, basic.return or basic.get-ok method frame: a content header
// for len(body) bytes and the body split into frames of at most frameMax-8
// bytes (§4.2.6). frameMax is the negotiated frame-max, 0 for no limit.
func WriteContent(w *bufio.Writer, channel, classID uint16, props *Properties, body []byte, frameMax uint32) error {
	if err := WriteHeader(w, channel, classID, uint64(len(body)), props, frameMax); err != nil {
		return err
	}
	return WriteBody(w, channel, body, frameMax)
}

// WriteHeartbeat writes a heartbeat frame (§4.2.7): type 8 on channel 0 with
// an empty payload.
func WriteHeartbeat(w *bufio.Writer) error {
	b, err := frameBuf(w)
	if err != nil {
		return err
	}
	return finishFrame(w, appendFrameHeader(b, FrameHeartbeat, 0), 0)
}
