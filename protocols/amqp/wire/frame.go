package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// protocolHeader is the 8-byte header that opens an AMQP 0-9-1 connection
// (§4.2.2): "AMQP", protocol id 0, then major 0, minor 9, revision 1.
const protocolHeader = "AMQP\x00\x00\x09\x01"

// ProtocolHeader is the AMQP 0-9-1 protocol header (§4.2.2). A client sends it
// first; a server that receives any other header writes it back and closes
// the connection. Do not modify it.
var ProtocolHeader = []byte(protocolHeader)

// CheckProtocolHeader reports whether h is the AMQP 0-9-1 protocol header,
// returning an error wrapping ErrProtocolHeader if it is not.
func CheckProtocolHeader(h []byte) error {
	if string(h) == protocolHeader {
		return nil
	}
	return fmt.Errorf("%w: got %q", ErrProtocolHeader, h)
}

// ReadProtocolHeader reads the 8-byte protocol header from r and checks it
// with CheckProtocolHeader. A short read returns the I/O error.
func ReadProtocolHeader(r io.Reader) error {
	var h [len(protocolHeader)]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return err
	}
	return CheckProtocolHeader(h[:])
}

// Frame layout (§4.2.3): type (octet), channel (short), size (long), payload
// of size octets, frame-end octet 0xCE. The 8 bytes around the payload count
// towards frame-max.
const (
	frameHeaderSize = 1 + 2 + 4
	frameOverhead   = frameHeaderSize + 1
)

// readChunk bounds how far ahead of received data the reader grows its
// buffer, so a large declared size cannot force a large allocation by itself.
const readChunk = 64 << 10

// Frame is one AMQP frame (§4.2.3). Type is FrameMethod, FrameHeader,
// FrameBody or FrameHeartbeat.
type Frame struct {
	Type    uint8
	Channel uint16
	Payload []byte
}

// ReadFrame reads one frame from r into a newly allocated payload.
//
// maxFrame is the negotiated frame-max: the largest frame including its 8
// bytes of header and frame-end, so payloads may be up to maxFrame-8 bytes.
// Zero means no limit (use FrameMinSize until connection.tune-ok has been
// received). A larger declared size, an unknown frame type, a heartbeat on a
// channel other than 0 or with a payload, and a missing frame-end octet are
// 501 FRAME_ERROR *Errors, detected before the payload is allocated where the
// header allows. End of input between frames is io.EOF; within a frame it is
// io.ErrUnexpectedEOF.
func ReadFrame(r *bufio.Reader, maxFrame uint32) (Frame, error) {
	return readFrame(r, maxFrame, nil)
}

// FrameReader reads frames into a payload buffer it reuses, so steady-state
// reading does not allocate. It is not safe for concurrent use.
type FrameReader struct {
	r        *bufio.Reader
	maxFrame uint32
	buf      []byte
	// OwnBodies makes large body frames (4 KiB and up) arrive in buffers
	// of their own, which the caller may keep (Owned reports it) instead
	// of copying: a message body in one frame is then never copied after
	// the socket.
	OwnBodies bool
	owned     bool
}

// Owned reports whether the last frame's Payload is the caller's to keep.
func (fr *FrameReader) Owned() bool { return fr.owned }

// NewFrameReader returns a FrameReader reading from r (wrapped in a
// bufio.Reader unless it already is one) and enforcing maxFrame as ReadFrame
// does.
func NewFrameReader(r io.Reader, maxFrame uint32) *FrameReader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReader(r)
	}
	return &FrameReader{r: br, maxFrame: maxFrame}
}

// SetMaxFrame changes the frame-max enforced by later reads, for use once
// connection.tune-ok has been negotiated.
func (fr *FrameReader) SetMaxFrame(maxFrame uint32) { fr.maxFrame = maxFrame }

// MaxFrame returns the frame-max currently enforced.
func (fr *FrameReader) MaxFrame() uint32 { return fr.maxFrame }

// ReadFrame reads the next frame, with the checks and errors of the
// package-level ReadFrame. The returned Payload aliases the reader's buffer
// and is valid only until the next call; decode it (DecodeMethod and
// DecodeHeader copy what they keep) or copy it before reading again. The
// buffer keeps the capacity of the largest frame read, at most maxFrame.
func (fr *FrameReader) ReadFrame() (Frame, error) {
	// A large body frame goes to a buffer of its own (at most frame-max,
	// checked before anything is allocated), handed over to the caller:
	// a body that fits one frame is then never copied after the socket.
	fr.owned = false
	if !fr.OwnBodies {
		// fall through to the shared buffer
	} else if hdr, err := fr.r.Peek(frameHeaderSize); err == nil && hdr[0] == FrameBody &&
		binary.BigEndian.Uint32(hdr[3:]) >= ownedBodyMin && (fr.maxFrame == 0 || binary.BigEndian.Uint32(hdr[3:]) <= fr.maxFrame-frameOverhead) {
		f, err := readFrame(fr.r, fr.maxFrame, make([]byte, 0, binary.BigEndian.Uint32(hdr[3:])))
		fr.owned = err == nil
		return f, err
	}
	f, err := readFrame(fr.r, fr.maxFrame, fr.buf[:0])
	if cap(f.Payload) > cap(fr.buf) {
		fr.buf = f.Payload[:0]
	}
	return f, err
}

// ownedBodyMin is the body frame size from which FrameReader reads into a
// buffer of its own: copying smaller bodies costs less than allocating.
const ownedBodyMin = 4096

func readFrame(r *bufio.Reader, maxFrame uint32, buf []byte) (Frame, error) {
	hdr, err := r.Peek(frameHeaderSize)
	if err != nil {
		if len(hdr) > 0 && err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	f := Frame{Type: hdr[0], Channel: binary.BigEndian.Uint16(hdr[1:])}
	size := binary.BigEndian.Uint32(hdr[3:])
	if _, err := r.Discard(frameHeaderSize); err != nil {
		return Frame{}, err
	}

	switch f.Type {
	case FrameMethod, FrameHeader, FrameBody:
	case FrameHeartbeat:
		// §4.2.7: heartbeats travel on channel 0 and carry no payload.
		if f.Channel != 0 {
			return Frame{}, newError(FrameError, fmt.Sprintf("heartbeat frame on channel %d", f.Channel))
		}
		if size != 0 {
			return Frame{}, newError(FrameError, "heartbeat frame with a payload")
		}
	default:
		return Frame{}, newError(FrameError, fmt.Sprintf("unknown frame type %d", f.Type))
	}
	if maxFrame != 0 && (maxFrame < frameOverhead || size > maxFrame-frameOverhead) {
		return Frame{}, newError(FrameError, fmt.Sprintf("frame of %d bytes exceeds frame-max %d", uint64(size)+frameOverhead, maxFrame))
	}

	f.Payload, err = readPayload(r, buf, int(size))
	if err != nil {
		return Frame{Payload: f.Payload[:0]}, unexpected(err)
	}
	end, err := r.ReadByte()
	if err != nil {
		return Frame{Payload: f.Payload[:0]}, unexpected(err)
	}
	if end != FrameEnd {
		return Frame{Payload: f.Payload[:0]}, newError(FrameError, fmt.Sprintf("frame-end octet is 0x%02x, not 0xce", end))
	}
	return f, nil
}

// readPayload reads size bytes into buf's storage, growing it by at most
// readChunk beyond the bytes actually received.
func readPayload(r *bufio.Reader, buf []byte, size int) ([]byte, error) {
	if cap(buf) >= size {
		buf = buf[:size]
		_, err := io.ReadFull(r, buf)
		return buf, err
	}
	buf = buf[:0]
	for len(buf) < size {
		n := min(size-len(buf), readChunk)
		if cap(buf)-len(buf) < n {
			// Double, but never beyond the declared size.
			nb := make([]byte, len(buf), min(max(2*cap(buf), len(buf)+n), size))
			copy(nb, buf)
			buf = nb
		}
		start := len(buf)
		buf = buf[:start+n]
		if _, err := io.ReadFull(r, buf[start:]); err != nil {
			return buf[:start], err
		}
	}
	return buf, nil
}

// unexpected converts io.EOF inside a frame to io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
