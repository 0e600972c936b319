package match

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/bourse-mq/bourse/core"
)

func TestHeadersMatch(t *testing.T) {
	ts := time.Unix(1700000000, 0).UTC()
	msg := core.Table{
		"format": "pdf",
		"type":   []byte("report"),
		"size":   int64(3),
		"ratio":  float32(0.5),
		"flag":   true,
		"dec":    core.Decimal{Scale: 2, Value: 150},
		"when":   ts,
		"void":   nil,
		"list":   []any{"a", int8(1)},
		"nested": core.Table{"k": uint16(7)},
		"x-tag":  "blue",
	}
	cases := []struct {
		name string
		args core.Table
		want bool
	}{
		// all (the default): every non-x key must match.
		{"all: no keys matches everything", core.Table{}, true},
		{"all: nil args", nil, true},
		{"all: only x- keys matches everything", core.Table{"x-match": "all", "x-tag": "red"}, true},
		{"all: one key", core.Table{"format": "pdf"}, true},
		{"all: explicit", core.Table{"x-match": "all", "format": "pdf", "size": int8(3)}, true},
		{"all: one value differs", core.Table{"format": "pdf", "size": int8(4)}, false},
		{"all: one key missing", core.Table{"format": "pdf", "absent": "x"}, false},
		{"all: void is presence", core.Table{"format": nil, "void": nil}, true},
		{"all: void key missing", core.Table{"absent": nil}, false},
		{"all: x- keys ignored", core.Table{"format": "pdf", "x-tag": "red"}, true},
		// any: at least one non-x key must match.
		{"any: no keys matches nothing", core.Table{"x-match": "any"}, false},
		{"any: only x- keys matches nothing", core.Table{"x-match": "any", "x-tag": "blue"}, false},
		{"any: one of two", core.Table{"x-match": "any", "format": "doc", "size": uint8(3)}, true},
		{"any: none", core.Table{"x-match": "any", "format": "doc", "absent": "x"}, false},
		{"any: void presence", core.Table{"x-match": "any", "absent": "x", "void": nil}, true},
		{"any: void absent", core.Table{"x-match": "any", "absent": nil}, false},
		{"any: x- keys ignored", core.Table{"x-match": "any", "x-tag": "blue", "format": "doc"}, false},
		// all-with-x: x- keys (but x-match) take part.
		{"all-with-x: x key matches", core.Table{"x-match": "all-with-x", "x-tag": "blue", "format": "pdf"}, true},
		{"all-with-x: x key differs", core.Table{"x-match": "all-with-x", "x-tag": "red", "format": "pdf"}, false},
		{"all-with-x: x key missing", core.Table{"x-match": "all-with-x", "x-other": nil}, false},
		{"all-with-x: no keys", core.Table{"x-match": "all-with-x"}, true},
		// any-with-x.
		{"any-with-x: x key matches", core.Table{"x-match": "any-with-x", "x-tag": "blue", "format": "doc"}, true},
		{"any-with-x: nothing matches", core.Table{"x-match": "any-with-x", "x-tag": "red", "format": "doc"}, false},
		{"any-with-x: no keys", core.Table{"x-match": "any-with-x"}, false},
		// Type-aware equality.
		{"int widths", core.Table{"size": uint32(3), "nested": core.Table{"k": int64(7)}}, true},
		{"int vs float", core.Table{"size": 3.0}, true},
		{"int vs non-integral float", core.Table{"size": 3.5}, false},
		{"float32 vs float64", core.Table{"ratio": 0.5}, true},
		{"float vs int", core.Table{"ratio": int8(0)}, false},
		{"string vs bytes", core.Table{"format": []byte("pdf"), "type": "report"}, true},
		{"string vs int", core.Table{"format": int64(3)}, false},
		{"int vs string", core.Table{"size": "3"}, false},
		{"bool", core.Table{"flag": true}, true},
		{"bool differs", core.Table{"flag": false}, false},
		{"bool vs int", core.Table{"flag": int8(1)}, false},
		{"decimal", core.Table{"dec": core.Decimal{Scale: 2, Value: 150}}, true},
		{"decimal scale is significant", core.Table{"dec": core.Decimal{Scale: 1, Value: 15}}, false},
		{"timestamp", core.Table{"when": ts.Local()}, true},
		{"timestamp vs int", core.Table{"when": ts.Unix()}, false},
		{"array", core.Table{"list": []any{[]byte("a"), int64(1)}}, true},
		{"array differs", core.Table{"list": []any{"a"}}, false},
		{"nested map type", core.Table{"nested": map[string]any{"k": 7}}, true},
		{"nested differs", core.Table{"nested": core.Table{"k": 8}}, false},
		{"non-void value vs void header", core.Table{"void": "x"}, false},
		{"Go int", core.Table{"size": 3}, true},
		{"Go uint", core.Table{"size": uint(3)}, true},
	}
	for _, c := range cases {
		b, err := ParseHeadersBinding(c.args)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := b.Match(msg); got != c.want {
			t.Errorf("%s: Match = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestHeadersNoHeaders(t *testing.T) {
	for _, c := range []struct {
		mode string
		want bool
	}{{"all", false}, {"any", false}, {"all-with-x", false}, {"any-with-x", false}} {
		b, err := ParseHeadersBinding(core.Table{"x-match": c.mode, "k": nil})
		if err != nil {
			t.Fatal(err)
		}
		if b.Match(nil) != c.want {
			t.Errorf("%s with a key, nil headers: want %v", c.mode, c.want)
		}
	}
	var zero HeadersBinding
	if !zero.Match(nil) {
		t.Error("the zero HeadersBinding (all, no keys) must match every message")
	}
}

func TestParseHeadersBindingErrors(t *testing.T) {
	for _, v := range []any{"ALL", "none", "", []byte("all"), int32(1), nil} {
		_, err := ParseHeadersBinding(core.Table{"x-match": v, "a": "b"})
		if err == nil {
			t.Errorf("x-match %#v: want an error", v)
			continue
		}
		if !errors.Is(err, core.ErrPreconditionFailed) {
			t.Errorf("x-match %#v: error %v is not PreconditionFailed", v, err)
		}
	}
}

func TestParseHeadersBindingCopies(t *testing.T) {
	args := core.Table{"k": []any{"v"}}
	b, err := ParseHeadersBinding(args)
	if err != nil {
		t.Fatal(err)
	}
	args["k"].([]any)[0] = "changed"
	args["other"] = "x"
	if !b.Match(core.Table{"k": []any{"v"}}) {
		t.Fatal("binding changed with its args table")
	}
}

func TestValueEqualNumbers(t *testing.T) {
	cases := []struct {
		a, b any
		want bool
	}{
		{int64(math.MaxInt64), float64(math.MaxInt64), false}, // 2^63 as a float
		{int64(math.MinInt64), float64(math.MinInt64), true},
		{int64(1 << 53), float64(1 << 53), true},
		{int64(1<<53 + 1), float64(1 << 53), false},
		{math.NaN(), math.NaN(), false},
		{math.Inf(1), int64(math.MaxInt64), false},
		{uint64(math.MaxUint64), uint64(math.MaxUint64), false}, // not an AMQP type
		{float32(0.1), 0.1, false},
		{float32(0.25), 0.25, true},
	}
	for _, c := range cases {
		if got := ValuesEqual(c.a, c.b); got != c.want {
			t.Errorf("ValuesEqual(%#v, %#v) = %v", c.a, c.b, got)
		}
		if got := ValuesEqual(c.b, c.a); got != c.want {
			t.Errorf("ValuesEqual(%#v, %#v) = %v", c.b, c.a, got)
		}
	}
}
