package match

import (
	"bytes"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/bourse-mq/bourse/core"
)

// HeadersBinding is a parsed headers-exchange binding: the x-match mode and
// the (key, value) pairs that take part in matching. The zero value is mode
// "all" with no keys, which matches every message. A HeadersBinding is
// immutable and safe for concurrent use.
type HeadersBinding struct {
	anyMode bool        // x-match any / any-with-x
	withX   bool        // *-with-x: "x-" keys take part in matching
	args    []headerArg // sorted by key
}

type headerArg struct {
	key   string
	value any // nil (AMQP void): the header must be present, with any value
}

// ParseHeadersBinding parses the arguments of a headers-exchange binding, as
// RabbitMQ's rabbit_exchange_type_headers does (3.10 and later):
//
//   - "x-match" selects the mode: "all" (the default when absent), "any",
//     "all-with-x" or "any-with-x". Any other value, or a value that is not an
//     AMQP long string (Go string; RabbitMQ refuses a byte array too), is an
//     error of kind core.PreconditionFailed, which RabbitMQ answers with 406.
//   - "x-match" itself never takes part in matching. Other keys starting with
//     "x-" are ignored unless the mode is all-with-x or any-with-x.
//   - Every other key is a match condition: a binding value of nil (AMQP void)
//     requires the header to be present with any value; any other value
//     requires the header to be present and equal by AMQP value (see Match).
//
// The values are copied, so args may be reused after the call.
func ParseHeadersBinding(args core.Table) (HeadersBinding, error) {
	var b HeadersBinding
	if v, ok := args["x-match"]; ok {
		s, isStr := v.(string)
		if !isStr {
			return HeadersBinding{}, core.Errorf(core.PreconditionFailed,
				"invalid x-match field type %T (value %v); expected longstr", v, core.RenderValue(v))
		}
		switch s {
		case "all":
		case "any":
			b.anyMode = true
		case "all-with-x":
			b.withX = true
		case "any-with-x":
			b.anyMode, b.withX = true, true
		default:
			return HeadersBinding{}, core.Errorf(core.PreconditionFailed,
				"invalid x-match field value %q; expected all, any, all-with-x, or any-with-x", s)
		}
	}
	for k, v := range args.Clone() {
		if k == "x-match" || (!b.withX && strings.HasPrefix(k, "x-")) {
			continue
		}
		b.args = append(b.args, headerArg{key: k, value: v})
	}
	slices.SortFunc(b.args, func(x, y headerArg) int { return strings.Compare(x.key, y.key) })
	return b, nil
}

// Match reports whether a message with the given headers matches b, per
// RabbitMQ's headers exchange:
//
//   - all / all-with-x: every key of the binding matches. A binding with no
//     matching keys therefore matches every message.
//   - any / any-with-x: at least one key of the binding matches. A binding
//     with no matching keys therefore matches no message.
//
// A key matches when the header is present and the binding value is void
// (nil) or equal to the header value. Equality is by AMQP value, like
// Erlang's == on the decoded values that RabbitMQ compares: integers of every
// width and floats compare by numeric value (int8(1), uint32(1), int64(1) and
// 1.0 are equal), a string equals a []byte with the same bytes, decimals
// compare by scale and digits, timestamps by instant, arrays element by
// element and nested tables key by key. A header that is void (nil) equals
// only a void binding value. Unlike RabbitMQ, a timestamp never equals an
// integer: RabbitMQ's equality there is an accident of its representation.
func (b HeadersBinding) Match(headers core.Table) bool {
	if b.anyMode {
		for i := range b.args {
			a := &b.args[i]
			if v, ok := headers[a.key]; ok && (a.value == nil || ValuesEqual(a.value, v)) {
				return true
			}
		}
		return false
	}
	for i := range b.args {
		a := &b.args[i]
		v, ok := headers[a.key]
		if !ok || (a.value != nil && !ValuesEqual(a.value, v)) {
			return false
		}
	}
	return true
}

// numKind classifies a field value for numeric comparison.
type numKind uint8

const (
	notNumber numKind = iota
	intNumber
	floatNumber
)

// number returns v as an integer or a float when v is numeric.
func number(v any) (int64, float64, numKind) {
	switch x := v.(type) {
	case float32:
		return 0, float64(x), floatNumber
	case float64:
		return 0, x, floatNumber
	case uint:
		if uint64(x) <= math.MaxInt64 {
			return int64(x), 0, intNumber
		}
		return 0, 0, notNumber
	}
	if i, ok := core.AsInt(v); ok {
		return i, 0, intNumber
	}
	return 0, 0, notNumber
}

// numEqual compares two numbers exactly, whatever their types.
func numEqual(ai int64, af float64, ak numKind, bi int64, bf float64, bk numKind) bool {
	switch {
	case ak == intNumber && bk == intNumber:
		return ai == bi
	case ak == floatNumber && bk == floatNumber:
		return af == bf
	case ak == intNumber:
		return floatIsInt(bf, ai)
	default:
		return floatIsInt(af, bi)
	}
}

// floatIsInt reports whether f is exactly the integer i.
func floatIsInt(f float64, i int64) bool {
	// -2^63 ≤ f < 2^63 and integral: the conversion is exact.
	return f >= -(1<<63) && f < 1<<63 && f == math.Trunc(f) && int64(f) == i
}

// ValuesEqual compares two field values by AMQP value, as headers matching
// does: integers and floats of any width by numeric value, strings and
// byte arrays by bytes, decimals by scale and value, timestamps by instant,
// arrays and tables element by element. The router also uses it to decide
// whether a redeclare's arguments are equivalent.
func ValuesEqual(a, b any) bool {
	if ai, af, ak := number(a); ak != notNumber {
		bi, bf, bk := number(b)
		return bk != notNumber && numEqual(ai, af, ak, bi, bf, bk)
	}
	switch x := a.(type) {
	case nil:
		return b == nil
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case string:
		switch y := b.(type) {
		case string:
			return x == y
		case []byte:
			return x == string(y)
		}
	case []byte:
		switch y := b.(type) {
		case string:
			return string(x) == y
		case []byte:
			return bytes.Equal(x, y)
		}
	case core.Decimal:
		y, ok := b.(core.Decimal)
		return ok && x == y
	case time.Time:
		y, ok := b.(time.Time)
		return ok && x.Equal(y)
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !ValuesEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	case core.Table:
		return tableEqual(x, b)
	case map[string]any:
		return tableEqual(x, b)
	}
	return false
}

// tableEqual compares a nested table with b, which may be a core.Table or a
// plain map[string]any (which the AMQP encoder accepts as a table).
func tableEqual(x map[string]any, b any) bool {
	var y map[string]any
	switch t := b.(type) {
	case core.Table:
		y = t
	case map[string]any:
		y = t
	default:
		return false
	}
	if len(x) != len(y) {
		return false
	}
	for k, xv := range x {
		yv, ok := y[k]
		if !ok || !ValuesEqual(xv, yv) {
			return false
		}
	}
	return true
}
