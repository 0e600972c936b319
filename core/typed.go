package core

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// TypedHeaders is the name of the one header (STOMP) or user property
// (MQTT 5) that carries the AMQP types of headers whose values are not plain
// strings, so that a message crossing a string-only protocol and coming back
// keeps every header value with its type (nested tables and arrays included).
// The plain-string rendering of those headers travels too, for readers that
// ignore this one.
const TypedHeaders = "x-bourse-typed"

// EncodeTyped encodes t as JSON in which every value is a one-key object
// naming its AMQP field type letter: {"count":{"l":"5"},"ok":{"t":true}}.
// 64-bit integers are strings so that JSON readers lose no precision.
func EncodeTyped(t Table) (string, error) {
	obj, err := typedTable(t, 0)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(obj)
	return string(b), err
}

func typedTable(t Table, depth int) (map[string]any, error) {
	if depth > maxTableDepth {
		return nil, Errorf(InvalidArgument, "nesting deeper than %d", maxTableDepth)
	}
	out := make(map[string]any, len(t))
	for k, v := range t {
		tv, err := typedValue(v, depth)
		if err != nil {
			return nil, fmt.Errorf("header %q: %w", k, err)
		}
		out[k] = tv
	}
	return out, nil
}

func typedValue(v any, depth int) (map[string]any, error) {
	switch x := v.(type) {
	case nil:
		return map[string]any{"V": nil}, nil
	case bool:
		return map[string]any{"t": x}, nil
	case int8:
		return map[string]any{"b": x}, nil
	case uint8:
		return map[string]any{"B": x}, nil
	case int16:
		return map[string]any{"s": x}, nil
	case uint16:
		return map[string]any{"u": x}, nil
	case int32:
		return map[string]any{"I": x}, nil
	case uint32:
		return map[string]any{"i": x}, nil
	case int64:
		return map[string]any{"l": strconv.FormatInt(x, 10)}, nil
	case float32:
		return map[string]any{"f": strconv.FormatFloat(float64(x), 'g', -1, 32)}, nil
	case float64:
		return map[string]any{"d": strconv.FormatFloat(x, 'g', -1, 64)}, nil
	case Decimal:
		return map[string]any{"D": []any{x.Scale, x.Value}}, nil
	case string:
		return map[string]any{"S": x}, nil
	case []byte:
		return map[string]any{"x": base64.StdEncoding.EncodeToString(x)}, nil
	case time.Time:
		return map[string]any{"T": x.Unix()}, nil
	case Table:
		t, err := typedTable(x, depth+1)
		return map[string]any{"F": t}, err
	case []any:
		a := make([]any, len(x))
		for i, e := range x {
			tv, err := typedValue(e, depth+1)
			if err != nil {
				return nil, err
			}
			a[i] = tv
		}
		return map[string]any{"A": a}, nil
	}
	return nil, Errorf(InvalidArgument, "unsupported field value type %T", v)
}

// DecodeTyped reverses EncodeTyped. Bad input is an InvalidArgument error.
func DecodeTyped(s string) (Table, error) {
	var raw map[string]map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return nil, Wrap(InvalidArgument, err, "%s is not valid typed JSON", TypedHeaders)
	}
	return untypedTable(raw, 0)
}

func untypedTable(raw map[string]map[string]json.RawMessage, depth int) (Table, error) {
	if depth > maxTableDepth {
		return nil, Errorf(InvalidArgument, "nesting deeper than %d", maxTableDepth)
	}
	t := make(Table, len(raw))
	for k, tv := range raw {
		v, err := untypedValue(tv, depth)
		if err != nil {
			return nil, fmt.Errorf("header %q: %w", k, err)
		}
		t[k] = v
	}
	return t, nil
}

func untypedValue(tv map[string]json.RawMessage, depth int) (any, error) {
	if len(tv) != 1 {
		return nil, Errorf(InvalidArgument, "typed value must have exactly one type key")
	}
	for typ, raw := range tv {
		bad := func(err error) (any, error) {
			return nil, Wrap(InvalidArgument, err, "bad value for type %q", typ)
		}
		var err error
		switch typ {
		case "V":
			return nil, nil
		case "t":
			var x bool
			err = json.Unmarshal(raw, &x)
			if err == nil {
				return x, nil
			}
		case "b", "B", "s", "u", "I", "i":
			var n float64
			if err = json.Unmarshal(raw, &n); err == nil {
				return intOfType(typ, n)
			}
		case "l":
			var s string
			if err = json.Unmarshal(raw, &s); err == nil {
				var n int64
				if n, err = strconv.ParseInt(s, 10, 64); err == nil {
					return n, nil
				}
			}
		case "f", "d":
			var s string
			if err = json.Unmarshal(raw, &s); err == nil {
				bits := 64
				if typ == "f" {
					bits = 32
				}
				var f float64
				if f, err = strconv.ParseFloat(s, bits); err == nil {
					if typ == "f" {
						return float32(f), nil
					}
					return f, nil
				}
			}
		case "D":
			var a [2]int64
			if err = json.Unmarshal(raw, &a); err == nil {
				if a[0] < 0 || a[0] > 255 || a[1] < math.MinInt32 || a[1] > math.MaxInt32 {
					return nil, Errorf(InvalidArgument, "decimal out of range")
				}
				return Decimal{Scale: uint8(a[0]), Value: int32(a[1])}, nil
			}
		case "S":
			var s string
			if err = json.Unmarshal(raw, &s); err == nil {
				return s, nil
			}
		case "x":
			var s string
			if err = json.Unmarshal(raw, &s); err == nil {
				var b []byte
				if b, err = base64.StdEncoding.DecodeString(s); err == nil {
					return b, nil
				}
			}
		case "T":
			var n int64
			if err = json.Unmarshal(raw, &n); err == nil {
				return time.Unix(n, 0).UTC(), nil
			}
		case "F":
			var m map[string]map[string]json.RawMessage
			if err = json.Unmarshal(raw, &m); err == nil {
				return untypedTable(m, depth+1)
			}
		case "A":
			var l []map[string]json.RawMessage
			if err = json.Unmarshal(raw, &l); err == nil {
				if depth+1 > maxTableDepth {
					return nil, Errorf(InvalidArgument, "nesting deeper than %d", maxTableDepth)
				}
				a := make([]any, len(l))
				for i, e := range l {
					if a[i], err = untypedValue(e, depth+1); err != nil {
						return nil, err
					}
				}
				return a, nil
			}
		default:
			return nil, Errorf(InvalidArgument, "unknown field type %q", typ)
		}
		return bad(err)
	}
	return nil, nil
}

func intOfType(typ string, n float64) (any, error) {
	if n != math.Trunc(n) {
		return nil, Errorf(InvalidArgument, "type %q wants an integer", typ)
	}
	in := func(lo, hi float64) bool { return n >= lo && n <= hi }
	switch typ {
	case "b":
		if in(math.MinInt8, math.MaxInt8) {
			return int8(n), nil
		}
	case "B":
		if in(0, math.MaxUint8) {
			return uint8(n), nil
		}
	case "s":
		if in(math.MinInt16, math.MaxInt16) {
			return int16(n), nil
		}
	case "u":
		if in(0, math.MaxUint16) {
			return uint16(n), nil
		}
	case "I":
		if in(math.MinInt32, math.MaxInt32) {
			return int32(n), nil
		}
	case "i":
		if in(0, math.MaxUint32) {
			return uint32(n), nil
		}
	}
	return nil, Errorf(InvalidArgument, "%v out of range for type %q", n, typ)
}

// SplitHeaders separates t into the headers that are plain strings (carried
// as they are by string-only protocols) and the rest, and renders the rest as
// strings too. typed is "" when every header is a string.
func SplitHeaders(t Table) (plain map[string]string, typed string, err error) {
	plain = make(map[string]string, len(t))
	var rest Table
	for k, v := range t {
		if s, ok := v.(string); ok {
			plain[k] = s
			continue
		}
		if rest == nil {
			rest = Table{}
		}
		rest[k] = v
		plain[k] = RenderValue(v)
	}
	if rest != nil {
		typed, err = EncodeTyped(rest)
	}
	return plain, typed, err
}

// RenderValue renders a field value as a human-readable string.
func RenderValue(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case []byte:
		return string(x)
	case time.Time:
		return strconv.FormatInt(x.Unix(), 10)
	case Decimal:
		return fmt.Sprintf("%de-%d", x.Value, x.Scale)
	case Table, []any:
		s, err := EncodeTyped(Table{"v": x})
		if err != nil {
			return ""
		}
		return s
	default:
		return fmt.Sprint(x)
	}
}

// JoinHeaders rebuilds a Table from plain string headers and the optional
// typed header produced by SplitHeaders: typed values win.
func JoinHeaders(plain map[string]string, typed string) (Table, error) {
	t := make(Table, len(plain))
	for k, v := range plain {
		t[k] = v
	}
	if typed == "" {
		return t, nil
	}
	tt, err := DecodeTyped(typed)
	if err != nil {
		return t, err
	}
	for k, v := range tt {
		t[k] = v
	}
	return t, nil
}
