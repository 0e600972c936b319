package wire

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/bourse-mq/bourse/protocols/amqp/wire/internal/gen/specgen"
)

const specPath = "spec/amqp-rabbitmq-0.9.1.json"

// loadSpec parses the committed JSON specification.
func loadSpec(t testing.TB) *specgen.Spec {
	t.Helper()
	src, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	var s specgen.Spec
	if err := json.Unmarshal(src, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

// specMethod is one method of the spec with its class.
type specMethod struct {
	class specgen.Class
	m     specgen.Method
}

func (sm specMethod) name() string { return sm.class.Name + "." + sm.m.Name }

func allMethods(t testing.TB) []specMethod {
	var out []specMethod
	for _, c := range loadSpec(t).Classes {
		for _, m := range c.Methods {
			out = append(out, specMethod{c, m})
		}
	}
	return out
}

// sampleTable holds one value of every field type, in the Go types the
// decoder produces, so it survives a round trip unchanged.
func sampleTable() Table {
	return Table{
		"bool":      true,
		"int8":      int8(-8),
		"uint8":     uint8(200),
		"int16":     int16(-1600),
		"uint16":    uint16(60000),
		"int32":     int32(-320000),
		"uint32":    uint32(4000000000),
		"int64":     int64(-6400000000),
		"float32":   float32(1.5),
		"float64":   float64(-2.25),
		"decimal":   Decimal{Scale: 2, Value: -12345},
		"longstr":   "long string ✓",
		"bytes":     []byte{0, 1, 2, 0xff},
		"array":     []any{int32(1), "two", nil, []any{true}, Table{"in": "array"}},
		"timestamp": time.Unix(1700000000, 0).UTC(),
		"table":     Table{"nested": Table{"deeper": int64(1)}, "x": uint8(1)},
		"void":      nil,
	}
}

// fillMethod sets every field of the method struct m points to to a
// non-zero value derived from seed.
func fillMethod(m Method, seed int) {
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		n := seed + i + 1
		switch f.Kind() {
		case reflect.Uint8:
			f.SetUint(uint64(0xa0 + n))
		case reflect.Uint16:
			f.SetUint(uint64(0xb000 + n))
		case reflect.Uint32:
			f.SetUint(uint64(0xc0000000 + n))
		case reflect.Uint64:
			f.SetUint(0xd000000000000000 + uint64(n))
		case reflect.String:
			f.SetString(fmt.Sprintf("%s-%d", v.Type().Field(i).Name, n))
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Map:
			f.Set(reflect.ValueOf(sampleTable()))
		default:
			panic("fillMethod: unhandled kind " + f.Kind().String())
		}
	}
}

// fullProperties sets every basic property.
func fullProperties() Properties {
	return Properties{
		ContentType:     "application/json",
		ContentEncoding: "gzip",
		Headers:         sampleTable(),
		DeliveryMode:    2,
		Priority:        9,
		CorrelationID:   "corr-1",
		ReplyTo:         "amq.rabbitmq.reply-to",
		Expiration:      "60000",
		MessageID:       "msg-1",
		Timestamp:       time.Unix(1700000001, 0).UTC(),
		Type:            "order.created",
		UserID:          "guest",
		AppID:           "bourse-test",
		ClusterID:       "cluster-a",
	}
}

// deepEqual is reflect.DeepEqual except that floats compare by bit pattern
// (so NaNs from fuzzed input compare equal to themselves) and times compare
// by instant and location.
func deepEqual(a, b any) bool {
	return valuesEqual(reflect.ValueOf(a), reflect.ValueOf(b))
}

var timeType = reflect.TypeFor[time.Time]()

func valuesEqual(a, b reflect.Value) bool {
	if a.IsValid() != b.IsValid() {
		return false
	}
	if !a.IsValid() {
		return true
	}
	if a.Type() != b.Type() {
		return false
	}
	if a.Type() == timeType {
		ta, tb := a.Interface().(time.Time), b.Interface().(time.Time)
		return ta.Equal(tb) && ta.Location() == tb.Location()
	}
	switch a.Kind() {
	case reflect.Float32:
		return math.Float32bits(float32(a.Float())) == math.Float32bits(float32(b.Float()))
	case reflect.Float64:
		return math.Float64bits(a.Float()) == math.Float64bits(b.Float())
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return valuesEqual(a.Elem(), b.Elem())
	case reflect.Struct:
		for i := range a.NumField() {
			if !valuesEqual(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Slice:
		if a.IsNil() != b.IsNil() || a.Len() != b.Len() {
			return false
		}
		for i := range a.Len() {
			if !valuesEqual(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Map:
		if a.IsNil() != b.IsNil() || a.Len() != b.Len() {
			return false
		}
		for _, k := range a.MapKeys() {
			bv := b.MapIndex(k)
			if !bv.IsValid() || !valuesEqual(a.MapIndex(k), bv) {
				return false
			}
		}
		return true
	default:
		return reflect.DeepEqual(a.Interface(), b.Interface())
	}
}

// mustEncode encodes m or fails the test.
func mustEncode(t testing.TB, m Method) []byte {
	t.Helper()
	b, err := EncodeMethod(nil, m)
	if err != nil {
		t.Fatalf("%s: encode: %v", m.Name(), err)
	}
	return b
}

// asError returns err as *Error or fails the test.
func asError(t testing.TB, err error) *Error {
	t.Helper()
	e, ok := err.(*Error)
	if !ok {
		t.Fatalf("error %v (%T) is not a *wire.Error", err, err)
	}
	return e
}

// allocatedBytes returns the bytes f allocates on the heap: the least over a
// few runs, since TotalAlloc is process-wide and goroutines left over from
// other tests may allocate concurrently.
func allocatedBytes(f func()) uint64 {
	var least uint64 = math.MaxUint64
	for range 5 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		least = min(least, after.TotalAlloc-before.TotalAlloc)
	}
	return least
}
