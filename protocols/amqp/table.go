package amqp

import (
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/protocols/amqp/wire"
)

// Field tables cross the adapter edge here. wire.Table and core.Table share
// their underlying type (map[string]any) and every scalar field type; only
// nested tables and decimals have distinct Go types on each side. So the
// top level converts for free, and only nested values are rewritten.

// tableFromWire converts a decoded table to a core.Table. It rewrites t in
// place: the decoder allocated it, and nobody else holds it.
func tableFromWire(t wire.Table) core.Table {
	if len(t) == 0 {
		return nil
	}
	for k, v := range t {
		if needsFromWire(v) {
			t[k] = valueFromWire(v)
		}
	}
	return core.Table(t)
}

func needsFromWire(v any) bool {
	switch v.(type) {
	case wire.Table, wire.Decimal, []any:
		return true
	}
	return false
}

func valueFromWire(v any) any {
	switch x := v.(type) {
	case wire.Table:
		if x == nil {
			return core.Table(nil)
		}
		return tableFromWire(x)
	case wire.Decimal:
		return core.Decimal{Scale: x.Scale, Value: x.Value}
	case []any:
		for i := range x {
			x[i] = valueFromWire(x[i])
		}
		return x
	}
	return v
}

// tableToWire converts a core.Table for encoding. Messages are immutable and
// shared, so it never modifies t: a table of scalars is converted without a
// copy, and a copy is made only when nested values must change type.
func tableToWire(t core.Table) wire.Table {
	if len(t) == 0 {
		return nil
	}
	conv := false
	for _, v := range t {
		if needsToWire(v) {
			conv = true
			break
		}
	}
	if !conv {
		return wire.Table(t)
	}
	out := make(wire.Table, len(t))
	for k, v := range t {
		out[k] = valueToWire(v)
	}
	return out
}

func needsToWire(v any) bool {
	switch x := v.(type) {
	case core.Table, core.Decimal:
		return true
	case []any:
		for _, e := range x {
			if needsToWire(e) {
				return true
			}
		}
	}
	return false
}

func valueToWire(v any) any {
	switch x := v.(type) {
	case core.Table:
		if x == nil {
			return wire.Table(nil)
		}
		out := make(wire.Table, len(x))
		for k, e := range x {
			out[k] = valueToWire(e)
		}
		return out
	case core.Decimal:
		return wire.Decimal{Scale: x.Scale, Value: x.Value}
	case []any:
		if !needsToWire(x) {
			return x
		}
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = valueToWire(e)
		}
		return out
	}
	return v
}

// propsFromWire converts decoded basic properties (headers excluded: see
// tableFromWire) to core properties.
func propsFromWire(p *wire.Properties) core.Properties {
	return core.Properties{
		ContentType:     p.ContentType,
		ContentEncoding: p.ContentEncoding,
		DeliveryMode:    p.DeliveryMode,
		Priority:        p.Priority,
		CorrelationID:   p.CorrelationID,
		ReplyTo:         p.ReplyTo,
		Expiration:      p.Expiration,
		MessageID:       p.MessageID,
		Timestamp:       p.Timestamp,
		Type:            p.Type,
		UserID:          p.UserID,
		AppID:           p.AppID,
		ClusterID:       p.ClusterID,
	}
}

// propsToWire fills dst with m's properties and headers. dst is reused by
// the writer, so every field is assigned.
func propsToWire(dst *wire.Properties, m *core.Message) {
	p := &m.Props
	*dst = wire.Properties{
		ContentType:     p.ContentType,
		ContentEncoding: p.ContentEncoding,
		Headers:         tableToWire(m.Headers),
		DeliveryMode:    p.DeliveryMode,
		Priority:        p.Priority,
		CorrelationID:   p.CorrelationID,
		ReplyTo:         p.ReplyTo,
		Expiration:      p.Expiration,
		MessageID:       p.MessageID,
		Timestamp:       p.Timestamp,
		Type:            p.Type,
		UserID:          p.UserID,
		AppID:           p.AppID,
		ClusterID:       p.ClusterID,
	}
}

// sanitizeProps makes properties encodable after an encoding failure:
// messages from other protocols may carry values AMQP cannot (a short
// string over 255 bytes, a header of an unsupported type). Headers are
// dropped and short strings clipped; the caller logs what happened.
func sanitizeProps(p *wire.Properties) {
	p.Headers = nil
	for _, s := range []*string{&p.ContentType, &p.ContentEncoding, &p.CorrelationID, &p.ReplyTo,
		&p.Expiration, &p.MessageID, &p.Type, &p.UserID, &p.AppID, &p.ClusterID} {
		*s = clip(*s, 255)
	}
}
