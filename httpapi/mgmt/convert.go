package mgmt

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/bourse-mq/bourse/core"
)

func osPid() int { return os.Getpid() }

// tableJSON turns a field table into plain JSON values, as RabbitMQ's API
// shows arguments and headers (timestamps as Unix seconds, byte arrays as
// strings, decimals as numbers).
func tableJSON(t core.Table) map[string]any {
	out := make(map[string]any, len(t))
	for k, v := range t {
		out[k] = valueJSON(v)
	}
	return out
}

func valueJSON(v any) any {
	switch x := v.(type) {
	case core.Table:
		return tableJSON(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = valueJSON(e)
		}
		return out
	case []byte:
		return string(x)
	case time.Time:
		return x.Unix()
	case core.Decimal:
		f, _ := strconv.ParseFloat(fmt.Sprint(x), 64)
		return f
	default:
		return x
	}
}

// jsonTable turns JSON arguments into a field table: integral numbers
// become long integers (as RabbitMQ's API does), others doubles.
func jsonTable(m map[string]any) (core.Table, error) {
	if len(m) == 0 {
		return nil, nil
	}
	t := make(core.Table, len(m))
	for k, v := range m {
		x, err := jsonValue(v)
		if err != nil {
			return nil, fmt.Errorf("argument %q: %w", k, err)
		}
		t[k] = x
	}
	return t, nil
}

func jsonValue(v any) (any, error) {
	switch x := v.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n, nil
		}
		f, err := x.Float64()
		if err != nil {
			return nil, fmt.Errorf("bad number %s", x)
		}
		return f, nil
	case float64:
		if x == float64(int64(x)) {
			return int64(x), nil
		}
		return x, nil
	case map[string]any:
		return jsonTable(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			y, err := jsonValue(e)
			if err != nil {
				return nil, err
			}
			out[i] = y
		}
		return out, nil
	case string, bool, nil:
		return x, nil
	}
	return nil, fmt.Errorf("unsupported value of type %T", v)
}

// propsJSON shows a message's properties as RabbitMQ's API does.
func propsJSON(m *core.Message) map[string]any {
	p := m.Props
	out := map[string]any{}
	set := func(k, v string) {
		if v != "" {
			out[k] = v
		}
	}
	set("content_type", p.ContentType)
	set("content_encoding", p.ContentEncoding)
	set("correlation_id", p.CorrelationID)
	set("reply_to", p.ReplyTo)
	set("expiration", p.Expiration)
	set("message_id", p.MessageID)
	set("type", p.Type)
	set("user_id", p.UserID)
	set("app_id", p.AppID)
	set("cluster_id", p.ClusterID)
	if p.DeliveryMode != 0 {
		out["delivery_mode"] = p.DeliveryMode
	}
	if p.Priority != 0 {
		out["priority"] = p.Priority
	}
	if !p.Timestamp.IsZero() {
		out["timestamp"] = p.Timestamp.Unix()
	}
	if len(m.Headers) > 0 {
		out["headers"] = tableJSON(m.Headers)
	}
	return out
}

// propsFromJSON sets a message's properties from RabbitMQ's API shape.
func propsFromJSON(in map[string]any, m *core.Message) error {
	p := &m.Props
	for k, v := range in {
		s, isStr := v.(string)
		num := func() (int64, error) {
			switch x := v.(type) {
			case json.Number:
				return x.Int64()
			case float64:
				return int64(x), nil
			}
			return 0, fmt.Errorf("property %s: want a number", k)
		}
		switch k {
		case "content_type", "content_encoding", "correlation_id", "reply_to", "expiration", "message_id", "type", "user_id", "app_id", "cluster_id":
			if !isStr {
				return fmt.Errorf("property %s: want a string", k)
			}
			*map[string]*string{"content_type": &p.ContentType, "content_encoding": &p.ContentEncoding, "correlation_id": &p.CorrelationID,
				"reply_to": &p.ReplyTo, "expiration": &p.Expiration, "message_id": &p.MessageID, "type": &p.Type,
				"user_id": &p.UserID, "app_id": &p.AppID, "cluster_id": &p.ClusterID}[k] = s
		case "delivery_mode", "priority":
			n, err := num()
			if err != nil || n < 0 || n > 255 {
				return fmt.Errorf("property %s: want 0 to 255", k)
			}
			if k == "delivery_mode" {
				p.DeliveryMode = uint8(n)
			} else {
				p.Priority = uint8(n)
			}
		case "timestamp":
			n, err := num()
			if err != nil {
				return err
			}
			p.Timestamp = time.Unix(n, 0).UTC()
		case "headers":
			h, ok := v.(map[string]any)
			if !ok {
				return fmt.Errorf("property headers: want an object")
			}
			t, err := jsonTable(h)
			if err != nil {
				return err
			}
			m.Headers = t
		default:
			return fmt.Errorf("unknown property %q", k)
		}
	}
	return nil
}
