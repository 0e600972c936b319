package amqp

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/bourse-mq/bourse/internal/testkit"
	"github.com/bourse-mq/bourse/protocols/amqp/wire"
)

// The hostile corpus: malformed input sent over real sockets while a
// well-behaved client keeps publishing and consuming. Each case must get
// the spec's answer (a protocol header, or connection.close with the right
// reply code), the socket must close, no goroutine may be left behind, and
// the good client must not notice.
//
// Reply codes follow the 0-9-1 specification where it names one, and
// RabbitMQ's choice where it does not:
//   - framing (bad size, frame-end, frame type, content header for a
//     class without content, body beyond the announced size):
//     501 FRAME_ERROR (§4.2.3, §4.2.6.1);
//   - malformed method arguments, tables and properties: 502 SYNTAX_ERROR
//     (the spec's code; RabbitMQ says 501);
//   - a heartbeat on a channel other than 0, or with a payload: 501
//     (§4.2.7; RabbitMQ says 505 for the first);
//   - a frame that is well formed but out of place (content without
//     basic.publish, a method inside content): 505 UNEXPECTED_FRAME, as
//     RabbitMQ's rabbit_reader and rabbit_command_assembler do;
//   - an unknown class or method: 540 NOT_IMPLEMENTED (RabbitMQ drops the
//     connection without a close);
//   - a channel method on channel 0, or a connection method on another
//     channel (§4.2.3): 503 COMMAND_INVALID; a channel used before
//     channel.open, or opened twice: 504 CHANNEL_ERROR.

// hostileFrameMax is the frame-max the raw clients negotiate.
const hostileFrameMax = 4096

type hostileStage int

const (
	stageFresh   hostileStage = iota // nothing sent yet
	stageStarted                     // protocol header sent, connection.start read
	stageOpened                      // connection open, frame-max hostileFrameMax
	stageChannel                     // and channel 1 open
)

type hostileWant struct {
	header        bool   // the server answers with its protocol header, then closes
	code          uint16 // connection.close reply code
	class, method uint16 // failed class and method, when they matter
	channelCode   uint16 // channel.close reply code (a soft error: the connection lives)
	eof           bool   // the socket just closes
}

type hostileCase struct {
	name  string
	stage hostileStage
	send  func(r *rawClient)
	want  hostileWant
}

func TestHostileAMQP(t *testing.T) {
	e := startServer(t, func(o *Options) {
		o.MaxMessageBytes = 1 << 20
		o.CloseTimeout = 2 * time.Second
	})
	good := startGoodClient(t, e)
	base := goleak.IgnoreCurrent()

	for _, tc := range hostileAMQPCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, e.addr)
			switch tc.stage {
			case stageStarted:
				r.write(wire.ProtocolHeader)
				expectMethod[*wire.ConnectionStart](r)
			case stageOpened, stageChannel:
				hostileHandshake(r)
				if tc.stage == stageChannel {
					r.send(1, &wire.ChannelOpen{})
					expectMethod[*wire.ChannelOpenOk](r)
				}
			}
			began := time.Now()
			tc.send(r)
			checkHostileOutcome(t, r, tc.want)
			if d := time.Since(began); d > 3*time.Second {
				t.Errorf("the answer took %v", d)
			}
			_ = r.nc.Close()
			good.VerifyNoLeak(t, base)
			good.Check(t)
		})
	}
}

func checkHostileOutcome(t *testing.T, r *rawClient, w hostileWant) {
	t.Helper()
	switch {
	case w.header:
		got := make([]byte, 8)
		_ = r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(r.nc, got); err != nil {
			t.Fatalf("want the server's protocol header: %v", err)
		}
		if string(got) != string(wire.ProtocolHeader) {
			t.Fatalf("server answered %q", got)
		}
		r.expectEOF()
	case w.eof:
		r.expectEOF()
	case w.channelCode != 0:
		cl := expectMethod[*wire.ChannelClose](r)
		if cl.ReplyCode != w.channelCode {
			t.Fatalf("want channel.close %d, got %d %q", w.channelCode, cl.ReplyCode, cl.ReplyText)
		}
		// A soft error: the connection lives on and the channel number
		// can be reused after close-ok.
		r.send(1, &wire.ChannelCloseOk{})
		r.send(1, &wire.ChannelOpen{})
		expectMethod[*wire.ChannelOpenOk](r)
		r.send(0, &wire.ConnectionClose{ReplyCode: 200})
		expectMethod[*wire.ConnectionCloseOk](r)
		r.expectEOF()
	default:
		cl := expectMethod[*wire.ConnectionClose](r)
		if cl.ReplyCode != w.code {
			t.Fatalf("want connection.close %d, got %d %q", w.code, cl.ReplyCode, cl.ReplyText)
		}
		if !strings.HasPrefix(cl.ReplyText, wire.ReplyText(w.code)) {
			t.Errorf("reply text %q does not start with %s", cl.ReplyText, wire.ReplyText(w.code))
		}
		if (w.class != 0 || w.method != 0) && (cl.FailedClassID != w.class || cl.FailedMethodID != w.method) {
			t.Errorf("close blames %d.%d, want %d.%d", cl.FailedClassID, cl.FailedMethodID, w.class, w.method)
		}
		// close-ok is what a client answers; after a framing error the
		// server may not wait for it, so a failed write is fine.
		_ = wire.WriteMethod(r.bw, 0, &wire.ConnectionCloseOk{})
		_ = r.bw.Flush()
		r.expectEOF()
	}
}

// hostileHandshake opens a connection with frame-max hostileFrameMax.
func hostileHandshake(r *rawClient) {
	r.t.Helper()
	r.write(wire.ProtocolHeader)
	expectMethod[*wire.ConnectionStart](r)
	r.send(0, &wire.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest", Locale: "en_US"})
	tune := expectMethod[*wire.ConnectionTune](r)
	r.send(0, &wire.ConnectionTuneOk{ChannelMax: tune.ChannelMax, FrameMax: hostileFrameMax})
	r.send(0, &wire.ConnectionOpen{VirtualHost: "/"})
	expectMethod[*wire.ConnectionOpenOk](r)
}

// halfClose ends the client's side of the stream.
func halfClose(r *rawClient) {
	r.t.Helper()
	if err := r.nc.(*net.TCPConn).CloseWrite(); err != nil {
		r.t.Fatal(err)
	}
}

// args concatenates encoded argument fields.
func args(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func sstr(s string) []byte {
	return append([]byte{byte(len(s))}, s...)
}

// methodPayload is a method frame payload with arbitrary argument bytes.
func methodPayload(class, method uint16, a ...[]byte) []byte {
	return args(append([][]byte{u16(class), u16(method)}, a...)...)
}

// queueDeclareWithTable is a queue.declare whose arguments table is the
// given raw bytes (length prefix included).
func queueDeclareWithTable(table []byte) []byte {
	return methodPayload(wire.ClassQueue, 10, u16(0), sstr("hq"), []byte{0}, table)
}

func nestedTable(depth int) []byte {
	t := u32(0)
	for range depth {
		entry := args(sstr("n"), []byte{'F'}, t)
		t = args(u32(uint32(len(entry))), entry)
	}
	return t
}

func publishPrefix(r *rawClient, size uint64) {
	r.t.Helper()
	r.send(1, &wire.BasicPublish{RoutingKey: "hostile-nowhere"})
	hdr, err := wire.AppendHeader(nil, wire.ClassBasic, size, &wire.Properties{})
	if err != nil {
		r.t.Fatal(err)
	}
	r.frame(wire.FrameHeader, 1, hdr)
}

func hostileAMQPCases(t testing.TB) []hostileCase {
	raw := func(b []byte) func(*rawClient) { return func(r *rawClient) { r.write(b) } }
	frame := func(typ uint8, ch uint16, p []byte) func(*rawClient) {
		return func(r *rawClient) { r.frame(typ, ch, p) }
	}
	closeWith := func(code uint16) hostileWant { return hostileWant{code: code} }
	return []hostileCase{
		// Protocol header (§4.2.2).
		{"header/wrong revision", stageFresh, raw([]byte("AMQP\x00\x00\x09\x02")), hostileWant{header: true}},
		{"header/amqp 1.0", stageFresh, raw([]byte("AMQP\x03\x01\x00\x00")), hostileWant{header: true}},
		{"header/http", stageFresh, raw([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")), hostileWant{header: true}},
		{"header/tls client hello", stageFresh, raw([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}), hostileWant{header: true}},
		{"header/truncated", stageFresh, func(r *rawClient) { r.write([]byte("AMQ")); halfClose(r) }, hostileWant{eof: true}},

		// Truncated streams: the peer goes away mid-frame.
		{"truncated/frame header in handshake", stageStarted, func(r *rawClient) {
			r.write([]byte{wire.FrameMethod, 0, 0, 0})
			halfClose(r)
		}, hostileWant{eof: true}},
		{"truncated/payload in handshake", stageStarted, func(r *rawClient) {
			r.write([]byte{wire.FrameMethod, 0, 0, 0, 0, 0, 100, 0, 10, 0, 11})
			halfClose(r)
		}, hostileWant{eof: true}},
		{"truncated/payload", stageChannel, func(r *rawClient) {
			r.write([]byte{wire.FrameMethod, 0, 1, 0, 0, 0, 100, 0, 50, 0, 10, 0, 0})
			halfClose(r)
		}, hostileWant{eof: true}},
		{"truncated/no frame-end", stageChannel, func(r *rawClient) {
			f := rawFrame(wire.FrameMethod, 1, methodPayload(wire.ClassBasic, 10, u32(0), u16(1), []byte{0}))
			r.write(f[:len(f)-1])
			halfClose(r)
		}, hostileWant{eof: true}},
		{"truncated/body", stageChannel, func(r *rawClient) {
			publishPrefix(r, 10)
			r.write(rawFrame(wire.FrameBody, 1, []byte("0123456789"))[:9])
			halfClose(r)
		}, hostileWant{eof: true}},

		// Framing (§4.2.3).
		{"frame/above negotiated frame-max", stageChannel, func(r *rawClient) {
			publishPrefix(r, 8192)
			r.frame(wire.FrameBody, 1, make([]byte, hostileFrameMax))
		}, closeWith(wire.FrameError)},
		{"frame/size 2^31 never sent", stageChannel, raw([]byte{wire.FrameBody, 0, 1, 0x7f, 0xff, 0xff, 0xff}), closeWith(wire.FrameError)},
		{"frame/size 2^32-1 in handshake", stageStarted, raw([]byte{wire.FrameMethod, 0, 0, 0xff, 0xff, 0xff, 0xff}), closeWith(wire.FrameError)},
		{"frame/bad frame-end", stageChannel, func(r *rawClient) {
			f := rawFrame(wire.FrameMethod, 1, methodPayload(wire.ClassBasic, 10, u32(0), u16(1), []byte{0}))
			f[len(f)-1] = 0x00
			r.write(f)
		}, closeWith(wire.FrameError)},
		{"frame/bad frame-end in handshake", stageStarted, func(r *rawClient) {
			p, err := wire.EncodeMethod(nil, &wire.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest"})
			if err != nil {
				r.t.Fatal(err)
			}
			f := rawFrame(wire.FrameMethod, 0, p)
			f[len(f)-1] = 'x'
			r.write(f)
		}, closeWith(wire.FrameError)},
		{"frame/unknown type", stageOpened, frame(9, 0, nil), closeWith(wire.FrameError)},
		{"frame/type 0", stageOpened, frame(0, 1, []byte{1, 2}), closeWith(wire.FrameError)},
		{"frame/garbage in handshake", stageStarted, raw([]byte("this is not an AMQP frame\r\n")), closeWith(wire.FrameError)},
		{"frame/heartbeat with payload", stageOpened, frame(wire.FrameHeartbeat, 0, []byte{1}), closeWith(wire.FrameError)},
		// §4.2.7: "A peer that receives an invalid heartbeat frame MUST
		// raise a connection exception with reply code 501 (frame error)"
		// (RabbitMQ says 505 for one on a channel).
		{"frame/heartbeat on channel 1", stageChannel, frame(wire.FrameHeartbeat, 1, nil), closeWith(wire.FrameError)},

		// Methods (§4.2.4).
		{"method/unknown class", stageChannel, frame(wire.FrameMethod, 1, methodPayload(999, 10)), hostileWant{code: wire.NotImplemented, class: 999, method: 10}},
		{"method/unknown basic method", stageChannel, frame(wire.FrameMethod, 1, methodPayload(wire.ClassBasic, 99)), hostileWant{code: wire.NotImplemented, class: 60, method: 99}},
		{"method/unknown connection method", stageOpened, frame(wire.FrameMethod, 0, methodPayload(wire.ClassConnection, 99)), hostileWant{code: wire.NotImplemented, class: 10, method: 99}},
		{"method/unknown method in handshake", stageStarted, frame(wire.FrameMethod, 0, methodPayload(7, 7)), hostileWant{code: wire.NotImplemented, class: 7, method: 7}},
		{"method/payload shorter than ids", stageChannel, frame(wire.FrameMethod, 1, []byte{0, 60, 0}), closeWith(wire.SyntaxError)},
		{"method/empty payload on channel 0", stageOpened, frame(wire.FrameMethod, 0, nil), closeWith(wire.SyntaxError)},
		{"method/queue.declare on channel 0", stageOpened, func(r *rawClient) {
			r.send(0, &wire.QueueDeclare{Queue: "hq"})
		}, hostileWant{code: wire.CommandInvalid, class: 50, method: 10}},
		{"method/basic.publish on channel 0", stageOpened, func(r *rawClient) {
			r.send(0, &wire.BasicPublish{RoutingKey: "hq"})
		}, hostileWant{code: wire.CommandInvalid, class: 60, method: 40}},
		{"method/channel.open on channel 0", stageOpened, func(r *rawClient) {
			r.send(0, &wire.ChannelOpen{})
		}, closeWith(wire.CommandInvalid)},
		{"method/channel.open twice", stageChannel, func(r *rawClient) {
			r.send(1, &wire.ChannelOpen{})
		}, hostileWant{code: wire.ChannelError, class: 20, method: 10}},
		{"method/on unopened channel", stageOpened, func(r *rawClient) {
			r.send(7, &wire.QueueDeclare{Queue: "hq"})
		}, closeWith(wire.ChannelError)},
		{"method/channel above channel-max", stageOpened, func(r *rawClient) {
			r.send(65535, &wire.ChannelOpen{})
		}, closeWith(wire.NotAllowed)},
		// §4.2.3: connection-class frames on another channel are 503.
		{"method/start-ok on channel 1", stageStarted, func(r *rawClient) {
			r.send(1, &wire.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest"})
		}, closeWith(wire.CommandInvalid)},
		{"method/connection.close on unopened channel", stageOpened, func(r *rawClient) {
			r.send(2, &wire.ConnectionClose{ReplyCode: 200})
		}, hostileWant{code: wire.CommandInvalid, class: 10, method: 50}},
		{"method/connection.open on open channel", stageChannel, func(r *rawClient) {
			r.send(1, &wire.ConnectionOpen{VirtualHost: "/"})
		}, hostileWant{code: wire.CommandInvalid, class: 10, method: 40}},
		{"method/channel method in handshake", stageStarted, func(r *rawClient) {
			r.send(1, &wire.ChannelOpen{})
		}, closeWith(wire.ChannelError)},
		{"method/wrong method in handshake", stageStarted, func(r *rawClient) {
			r.send(0, &wire.ConnectionOpen{VirtualHost: "/"})
		}, hostileWant{code: wire.CommandInvalid, class: 10, method: 40}},
		{"method/unknown sasl mechanism", stageStarted, func(r *rawClient) {
			r.send(0, &wire.ConnectionStartOk{Mechanism: "GSSAPI", Response: "x"})
		}, closeWith(wire.CommandInvalid)},

		// Argument encoding (§4.2.5): 502 SYNTAX_ERROR, nothing allocated
		// beyond the frame.
		{"args/truncated", stageChannel, frame(wire.FrameMethod, 1, methodPayload(wire.ClassQueue, 10, u16(0))), hostileWant{code: wire.SyntaxError, class: 50, method: 10}},
		{"args/trailing bytes", stageChannel, frame(wire.FrameMethod, 1, methodPayload(wire.ClassBasic, 10, u32(0), u16(1), []byte{0, 0xee})), hostileWant{code: wire.SyntaxError, class: 60, method: 10}},
		{"args/short string overrun", stageChannel, frame(wire.FrameMethod, 1, methodPayload(wire.ClassQueue, 10, u16(0), []byte{200}, []byte("hq"))), hostileWant{code: wire.SyntaxError, class: 50, method: 10}},
		{"args/short string overrun in publish", stageChannel, frame(wire.FrameMethod, 1, methodPayload(wire.ClassBasic, 40, u16(0), []byte{0}, []byte{255}, []byte("k"), []byte{0})), hostileWant{code: wire.SyntaxError, class: 60, method: 40}},
		{"args/long string 2^32-1", stageStarted, frame(wire.FrameMethod, 0, methodPayload(wire.ClassConnection, 11, u32(0), sstr("PLAIN"), u32(0xffffffff), []byte("x"))), closeWith(wire.SyntaxError)},
		{"table/bad type tag", stageChannel, frame(wire.FrameMethod, 1, queueDeclareWithTable(args(u32(4), sstr("k"), []byte{'Z', 0}))), hostileWant{code: wire.SyntaxError, class: 50, method: 10}},
		{"table/length overrun", stageChannel, frame(wire.FrameMethod, 1, queueDeclareWithTable(args(u32(1000), sstr("k"), []byte{'t', 1}))), hostileWant{code: wire.SyntaxError, class: 50, method: 10}},
		{"table/key overrun", stageChannel, frame(wire.FrameMethod, 1, queueDeclareWithTable(args(u32(3), []byte{100, 'k', 'k'}))), hostileWant{code: wire.SyntaxError, class: 50, method: 10}},
		{"table/value truncated", stageChannel, frame(wire.FrameMethod, 1, queueDeclareWithTable(args(u32(4), sstr("k"), []byte{'I', 0}))), hostileWant{code: wire.SyntaxError, class: 50, method: 10}},
		{"table/long string 2^32-1", stageChannel, frame(wire.FrameMethod, 1, queueDeclareWithTable(args(u32(7), sstr("k"), []byte{'S'}, u32(0xffffffff)))), hostileWant{code: wire.SyntaxError, class: 50, method: 10}},
		{"table/nested too deep", stageChannel, frame(wire.FrameMethod, 1, queueDeclareWithTable(nestedTable(wire.MaxNesting+5))), hostileWant{code: wire.SyntaxError, class: 50, method: 10}},
		{"table/array with bad tag", stageChannel, frame(wire.FrameMethod, 1, queueDeclareWithTable(args(u32(8), sstr("a"), []byte{'A'}, u32(1), []byte{'?'}))), hostileWant{code: wire.SyntaxError, class: 50, method: 10}},
		{"table/in client properties", stageStarted, frame(wire.FrameMethod, 0, methodPayload(wire.ClassConnection, 11, u32(4), sstr("k"), []byte{'Q', 0}, sstr("PLAIN"), u32(0), sstr("en_US"))), closeWith(wire.SyntaxError)},

		// Content (§4.2.6).
		{"content/header without publish", stageChannel, func(r *rawClient) {
			hdr, _ := wire.AppendHeader(nil, wire.ClassBasic, 3, &wire.Properties{})
			r.frame(wire.FrameHeader, 1, hdr)
		}, closeWith(wire.UnexpectedFrame)},
		{"content/body without publish", stageChannel, frame(wire.FrameBody, 1, []byte("stray")), closeWith(wire.UnexpectedFrame)},
		{"content/header on channel 0", stageOpened, func(r *rawClient) {
			hdr, _ := wire.AppendHeader(nil, wire.ClassBasic, 3, &wire.Properties{})
			r.frame(wire.FrameHeader, 0, hdr)
		}, closeWith(wire.UnexpectedFrame)},
		{"content/body on channel 0", stageOpened, frame(wire.FrameBody, 0, []byte("x")), closeWith(wire.UnexpectedFrame)},
		{"content/header on unopened channel", stageOpened, func(r *rawClient) {
			hdr, _ := wire.AppendHeader(nil, wire.ClassBasic, 3, &wire.Properties{})
			r.frame(wire.FrameHeader, 3, hdr)
		}, closeWith(wire.ChannelError)},
		{"content/header in handshake", stageStarted, frame(wire.FrameHeader, 0, make([]byte, 14)), closeWith(wire.UnexpectedFrame)},
		{"content/body where header expected", stageChannel, func(r *rawClient) {
			r.send(1, &wire.BasicPublish{RoutingKey: "hq"})
			r.frame(wire.FrameBody, 1, []byte("x"))
		}, closeWith(wire.UnexpectedFrame)},
		{"content/method where body expected", stageChannel, func(r *rawClient) {
			publishPrefix(r, 5)
			r.send(1, &wire.BasicQos{PrefetchCount: 1})
		}, hostileWant{code: wire.UnexpectedFrame, class: 60, method: 40}},
		{"content/second header", stageChannel, func(r *rawClient) {
			publishPrefix(r, 5)
			hdr, _ := wire.AppendHeader(nil, wire.ClassBasic, 5, &wire.Properties{})
			r.frame(wire.FrameHeader, 1, hdr)
		}, closeWith(wire.UnexpectedFrame)},
		{"content/body larger than declared", stageChannel, func(r *rawClient) {
			publishPrefix(r, 3)
			r.frame(wire.FrameBody, 1, []byte("toolong"))
		}, hostileWant{code: wire.FrameError, class: 60, method: 40}},
		{"content/body overflow in second frame", stageChannel, func(r *rawClient) {
			publishPrefix(r, 6)
			r.frame(wire.FrameBody, 1, []byte("abcd"))
			r.frame(wire.FrameBody, 1, []byte("efg"))
		}, hostileWant{code: wire.FrameError, class: 60, method: 40}},
		{"content/body after zero-size header", stageChannel, func(r *rawClient) {
			publishPrefix(r, 0)
			r.frame(wire.FrameBody, 1, []byte("x"))
		}, closeWith(wire.UnexpectedFrame)},
		{"content/header for class queue", stageChannel, func(r *rawClient) {
			r.send(1, &wire.BasicPublish{RoutingKey: "hq"})
			r.frame(wire.FrameHeader, 1, args(u16(wire.ClassQueue), u16(0), make([]byte, 8), u16(0)))
		}, closeWith(wire.FrameError)},
		{"content/header too short", stageChannel, func(r *rawClient) {
			r.send(1, &wire.BasicPublish{RoutingKey: "hq"})
			r.frame(wire.FrameHeader, 1, []byte{0, 60, 0})
		}, closeWith(wire.FrameError)},
		{"content/unknown property flag", stageChannel, func(r *rawClient) {
			r.send(1, &wire.BasicPublish{RoutingKey: "hq"})
			r.frame(wire.FrameHeader, 1, args(u16(wire.ClassBasic), u16(0), make([]byte, 8), u16(0x0001)))
		}, closeWith(wire.SyntaxError)},
		{"content/property overrun", stageChannel, func(r *rawClient) {
			r.send(1, &wire.BasicPublish{RoutingKey: "hq"})
			// content-type flag, short string of 50 bytes, 2 present.
			r.frame(wire.FrameHeader, 1, args(u16(wire.ClassBasic), u16(0), make([]byte, 8), u16(0x8000), []byte{50, 'a', 'b'}))
		}, closeWith(wire.SyntaxError)},
		{"content/headers table with bad tag", stageChannel, func(r *rawClient) {
			r.send(1, &wire.BasicPublish{RoutingKey: "hq"})
			r.frame(wire.FrameHeader, 1, args(u16(wire.ClassBasic), u16(0), make([]byte, 8), u16(0x2000), u32(4), sstr("k"), []byte{0xff, 0}))
		}, closeWith(wire.SyntaxError)},
		{"content/body size 2^64-1", stageChannel, func(r *rawClient) {
			r.send(1, &wire.BasicPublish{RoutingKey: "hq"})
			r.frame(wire.FrameHeader, 1, args(u16(wire.ClassBasic), u16(0), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, u16(0)))
		}, hostileWant{channelCode: wire.PreconditionFailed}},
		{"content/body size above max message size", stageChannel, func(r *rawClient) {
			publishPrefix(r, 1<<20+1)
		}, hostileWant{channelCode: wire.PreconditionFailed}},

		// Handshake values.
		{"tune/frame-max below minimum", stageStarted, func(r *rawClient) {
			r.send(0, &wire.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest"})
			expectMethod[*wire.ConnectionTune](r)
			r.send(0, &wire.ConnectionTuneOk{FrameMax: 512})
		}, closeWith(wire.NotAllowed)},
		{"tune/frame-max above the server's", stageStarted, func(r *rawClient) {
			r.send(0, &wire.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest"})
			expectMethod[*wire.ConnectionTune](r)
			r.send(0, &wire.ConnectionTuneOk{FrameMax: 1 << 30})
		}, closeWith(wire.NotAllowed)},
		{"tune/bad plain response", stageStarted, func(r *rawClient) {
			r.send(0, &wire.ConnectionStartOk{Mechanism: "PLAIN", Response: "guest"})
		}, closeWith(wire.AccessRefused)},
	}
}

// startGoodClient starts the well-behaved amqp091-go client that publishes
// and receives throughout the hostile corpus.
func startGoodClient(t *testing.T, e *env) *testkit.Live {
	t.Helper()
	conn := e.dial(t)
	ch, err := conn.Channel()
	must(t, err)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	must(t, err)
	msgs, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	must(t, err)
	return testkit.StartLive(t, func(i int) error {
		body := fmt.Sprint(i)
		if err := ch.Publish("", q.Name, false, false, amqp091.Publishing{Body: []byte(body)}); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		select {
		case d, ok := <-msgs:
			if !ok || string(d.Body) != body {
				return fmt.Errorf("round %d: got %q (open %v)", i, d.Body, ok)
			}
		case <-time.After(5 * time.Second):
			return fmt.Errorf("round %d: no delivery within 5s", i)
		}
		return nil
	})
}
