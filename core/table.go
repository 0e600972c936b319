package core

import (
	"fmt"
	"time"
)

// Table is a typed header map compatible with AMQP 0-9-1 field tables.
//
// Values are restricted to the AMQP field types: bool, int8, uint8, int16,
// uint16, int32, uint32, int64, float32, float64, Decimal, string, []byte,
// []any (array), time.Time (timestamp), Table (nested table) and nil (void).
// Adapters convert their own header forms to and from these types; Validate
// reports any other value.
type Table map[string]any

// Decimal is the AMQP decimal field type: Value × 10^-Scale.
type Decimal struct {
	Scale uint8
	Value int32
}

// Clone returns a deep copy of t (nested tables and arrays are copied; byte
// slices and strings are shared, since messages are immutable).
func (t Table) Clone() Table {
	if t == nil {
		return nil
	}
	c := make(Table, len(t))
	for k, v := range t {
		c[k] = cloneValue(v)
	}
	return c
}

func cloneValue(v any) any {
	switch x := v.(type) {
	case Table:
		return x.Clone()
	case []any:
		a := make([]any, len(x))
		for i := range x {
			a[i] = cloneValue(x[i])
		}
		return a
	default:
		return v
	}
}

// Validate checks that every value in t is of an AMQP field type.
func (t Table) Validate() error {
	for k, v := range t {
		if err := validateValue(v, 0); err != nil {
			return fmt.Errorf("header %q: %w", k, err)
		}
	}
	return nil
}

const maxTableDepth = 32

func validateValue(v any, depth int) error {
	if depth > maxTableDepth {
		return Errorf(InvalidArgument, "nesting deeper than %d", maxTableDepth)
	}
	switch x := v.(type) {
	case nil, bool, int8, uint8, int16, uint16, int32, uint32, int64, float32, float64,
		Decimal, string, []byte, time.Time:
		return nil
	case Table:
		for k, e := range x {
			if err := validateValue(e, depth+1); err != nil {
				return fmt.Errorf("%q: %w", k, err)
			}
		}
		return nil
	case []any:
		for i, e := range x {
			if err := validateValue(e, depth+1); err != nil {
				return fmt.Errorf("[%d]: %w", i, err)
			}
		}
		return nil
	default:
		return Errorf(InvalidArgument, "unsupported field value type %T", v)
	}
}

// String returns t[key] when it holds a string (or []byte), else "".
func (t Table) String(key string) string {
	switch x := t[key].(type) {
	case string:
		return x
	case []byte:
		return string(x)
	}
	return ""
}

// Int returns t[key] as an int64 when it holds any integer type.
func (t Table) Int(key string) (int64, bool) {
	return AsInt(t[key])
}

// AsInt converts any AMQP integer field value to int64.
func AsInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int8:
		return int64(x), true
	case uint8:
		return int64(x), true
	case int16:
		return int64(x), true
	case uint16:
		return int64(x), true
	case int32:
		return int64(x), true
	case uint32:
		return int64(x), true
	case int64:
		return x, true
	case int:
		return int64(x), true
	case uint64:
		if x <= 1<<63-1 {
			return int64(x), true
		}
	}
	return 0, false
}
