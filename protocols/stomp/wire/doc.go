// Package wire is Bourse's STOMP 1.0/1.1/1.2 frame codec. It holds no broker
// state: it turns bytes into go-stomp frame.Frame values and back, so it can
// be fuzzed on its own and reused by tests as a raw client.
//
// Why not go-stomp's frame.Reader: it trusts content-length and allocates the
// whole body before reading a byte of it (up to 4 GiB), it has no limit on
// the number or size of header lines, and it unescapes header values the
// same way in every protocol version, including on CONNECT. This Reader
// enforces Limits before it allocates anything: the command and header
// section is read line by line against MaxHeaderBytes and MaxHeaders, a
// declared content-length above MaxBodyBytes is refused before any body byte
// is read, and a body is grown as its bytes arrive, never allocated up front
// from the declared length. Frames keep go-stomp's frame.Frame and
// frame.Header types, so go-stomp's client and this codec share one model.
//
// Header encoding follows each version of the specification:
//
//   - STOMP 1.0 (and Raw, used for CONNECT, STOMP and CONNECTED in every
//     version, STOMP 1.2 "Value Encoding"): no escaping. 1.0 values are
//     trimmed of leading spaces as RabbitMQ does; Raw values are not.
//   - STOMP 1.1: \n, \c and \\ are escapes; any other escape is a fatal
//     protocol error (1.1 "Value Encoding").
//   - STOMP 1.2: as 1.1, plus \r.
//
// Lines may end with LF or CR LF in every version (1.2 "Augmented BNF"
// allows CR LF; older clients send it too).
//
// Hostile input: a command line is read octet by octet and refused at the
// first octet that cannot belong to a command; a NUL in a header line is
// refused in every version (it could end the frame early for a peer that
// splits frames at NUL octets), and so are 1.1 and 1.2 headers that are not
// UTF-8. The writer never produces what the reader refuses: a NUL, and
// invalid UTF-8 in 1.1 and 1.2, are written as U+FFFD.
package wire
