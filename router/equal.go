package router

import (
	"bytes"
	"math"
	"time"

	"github.com/bourse-mq/bourse/core"
)

// tablesEqual compares two argument tables by AMQP value, treating integer
// widths as equal when the values are (clients encode the same number in
// different widths).
func tablesEqual(a, b core.Table) bool {
	if len(a) != len(b) {
		return false
	}
	for k, av := range a {
		bv, ok := b[k]
		if !ok || !valuesEqual(av, bv) {
			return false
		}
	}
	return true
}

func valuesEqual(a, b any) bool {
	if ai, ok := core.AsInt(a); ok {
		bi, ok := core.AsInt(b)
		return ok && ai == bi
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
		return false
	case []byte:
		switch y := b.(type) {
		case string:
			return string(x) == y
		case []byte:
			return bytes.Equal(x, y)
		}
		return false
	case float32:
		y, ok := toFloat(b)
		return ok && float64(x) == y
	case float64:
		y, ok := toFloat(b)
		return ok && (x == y || (math.IsNaN(x) && math.IsNaN(y)))
	case core.Decimal:
		y, ok := b.(core.Decimal)
		return ok && x == y
	case time.Time:
		y, ok := b.(time.Time)
		return ok && x.Equal(y)
	case core.Table:
		y, ok := b.(core.Table)
		return ok && tablesEqual(x, y)
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !valuesEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return false
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}
