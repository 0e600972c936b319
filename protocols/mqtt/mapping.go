package mqtt

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
)

// Headers the bridge adds to messages published over MQTT. AMQP and STOMP
// consumers see them (RabbitMQ's MQTT plugin set x-mqtt-publish-qos the same
// way for years); MQTT subscribers never do: they are turned back into the
// PUBLISH fields they came from.
const (
	// hdrPublishQoS carries the publisher's QoS (int8), so that an MQTT
	// subscriber gets min(publish QoS, subscription QoS) even for QoS 2,
	// which the delivery mode alone cannot express.
	hdrPublishQoS = "x-mqtt-publish-qos"
	// hdrRetain (bool true) marks a publish sent with the RETAIN flag, for
	// MQTT 5 subscriptions with Retain As Published.
	hdrRetain = "x-mqtt-retain"
	// hdrPayloadFormat carries the MQTT 5 Payload Format Indicator (int8).
	hdrPayloadFormat = "x-mqtt-payload-format-indicator"
	// hdrReplyToTopic carries the MQTT 5 Response Topic in routing-key form,
	// as RabbitMQ 3.13 does.
	hdrReplyToTopic = "x-reply-to-topic"
	// hdrCorrelationID carries MQTT 5 Correlation Data that is not a valid
	// AMQP shortstr (longer than 255 bytes), as RabbitMQ 3.13 does.
	hdrCorrelationID = "x-correlation-id"
)

// MQTT 5 user properties that carry the AMQP properties MQTT lacks.
const (
	upMessageID       = "x-amqp-message-id"
	upType            = "x-amqp-type"
	upAppID           = "x-amqp-app-id"
	upTimestamp       = "x-amqp-timestamp" // unix seconds
	upPriority        = "x-amqp-priority"
	upUserID          = "x-amqp-user-id"
	upContentEncoding = "x-amqp-content-encoding"
	upClusterID       = "x-amqp-cluster-id"
)

// swapSlashDot exchanges '/' and '.' character by character. It is its own
// inverse, and it keeps every word intact: the MQTT level "spBv1.0" becomes
// the AMQP word "spBv1/0" and back.
func swapSlashDot(s string) string {
	i := strings.IndexAny(s, "./")
	if i < 0 {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		switch b[i] {
		case '.':
			b[i] = '/'
		case '/':
			b[i] = '.'
		}
	}
	return string(b)
}

// topicToKey turns an MQTT topic name into an amq.topic routing key.
func topicToKey(topic string) string { return swapSlashDot(topic) }

// keyToTopic turns a routing key into an MQTT topic name.
func keyToTopic(key string) string { return swapSlashDot(key) }

// filterToPattern turns an MQTT topic filter (without any $share prefix)
// into an amq.topic binding pattern: '+' levels become '*', '#' stays, and
// literal levels have '/' and '.' swapped. A literal MQTT level "*" becomes
// a wildcard word: AMQP patterns cannot escape it (as in RabbitMQ).
func filterToPattern(filter string) string {
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		switch l {
		case "+":
			levels[i] = "*"
		case "#":
		default:
			levels[i] = strings.ReplaceAll(l, ".", "/")
		}
	}
	return strings.Join(levels, ".")
}

// validTopic reports whether a routing key maps to a topic an MQTT client
// can receive: a non-empty MQTT string without wildcard characters.
func validTopic(topic string) bool {
	return topic != "" && !strings.ContainsAny(topic, "+#") && mqttString(topic)
}

// splitShared splits "$share/group/filter" into its group and filter; group
// is "" for an ordinary filter. The prefix is matched as mochi matches it.
func splitShared(filter string) (group, inner string) {
	if !mochi.IsSharedFilter(filter) {
		return "", filter
	}
	rest := filter[strings.IndexByte(filter, '/')+1:]
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return "", filter // mochi refuses such a filter before we see it
	}
	return rest[:i], rest[i+1:]
}

// isSysFilter reports whether filter reads mochi's $SYS tree, which mochi
// serves itself rather than through the router.
func isSysFilter(filter string) bool {
	first, _, _ := strings.Cut(filter, "/")
	return strings.EqualFold(first, mochi.SysPrefix)
}

// hashHex returns the first n bytes of SHA-256(s) in hex.
func hashHex(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:n])
}

// subscriptionQueueName names the queue of one client's subscription to
// filter: "mqtt-subscription-<client id>-<16 hex digits of the filter's
// hash>". The fixed-width suffix keeps names unambiguous whatever the client
// id contains; an id too long for a queue name is replaced by its hash.
func subscriptionQueueName(clientID, filter string) string {
	return boundedName("mqtt-subscription-", clientID, filter)
}

// sharedQueueName names the queue of a shared subscription group:
// "mqtt-shared-<group>-<16 hex digits of the filter's hash>".
func sharedQueueName(group, filter string) string {
	return boundedName("mqtt-shared-", group, filter)
}

func boundedName(prefix, owner, filter string) string {
	suffix := "-" + hashHex(filter, 8)
	if len(prefix)+len(owner)+len(suffix) > core.MaxNameLen || !utf8.ValidString(owner) {
		owner = "h" + hashHex(owner, 16)
	}
	return prefix + owner + suffix
}

// inbound is one application message as an MQTT client sent it: a PUBLISH
// or a will.
type inbound struct {
	topic   string
	payload []byte
	qos     byte
	retain  bool
	// props are the MQTT 5 properties (nil for MQTT 3.x). A live PUBLISH
	// passes them beside the inbound instead (route's props), so that the
	// decoded packet, read in place, does not escape to the heap.
	props *packets.Properties
}

// toMessage builds the router message for an MQTT publish (the DESIGN.md
// mapping; see doc.go for the table).
func toMessage(in inbound, props *packets.Properties, origin core.Origin) *core.Message {
	m := &core.Message{
		Exchange:   router.AMQTopic,
		RoutingKey: topicToKey(in.topic),
		Body:       in.payload,
		Origin:     origin,
	}
	// An MQTT requester answering an AMQP direct reply-to address reaches it
	// through the default exchange, as an AMQP replier would.
	if strings.HasPrefix(m.RoutingKey, router.ReplyToPrefix+".") {
		m.Exchange = router.DefaultExchange
	}
	m.Props.DeliveryMode = core.Transient
	if in.qos > 0 {
		m.Props.DeliveryMode = core.Persistent
	}
	var h core.Table
	if p := props; p != nil {
		h = headersFromUser(p.User, &m.Props)
		m.Props.ContentType = p.ContentType
		if len(p.CorrelationData) > 0 {
			if len(p.CorrelationData) <= core.MaxNameLen {
				m.Props.CorrelationID = string(p.CorrelationData)
			} else {
				h[hdrCorrelationID] = string(p.CorrelationData)
			}
		}
		if p.ResponseTopic != "" {
			k := topicToKey(p.ResponseTopic)
			m.Props.ReplyTo = k
			h[hdrReplyToTopic] = k
		}
		if p.MessageExpiryInterval > 0 {
			m.Props.Expiration = strconv.FormatUint(uint64(p.MessageExpiryInterval)*1000, 10)
		}
		if p.PayloadFormatFlag {
			h[hdrPayloadFormat] = int8(p.PayloadFormat)
		}
	} else {
		h = make(core.Table, 2)
	}
	h[hdrPublishQoS] = int8(in.qos)
	if in.retain {
		h[hdrRetain] = true
	}
	m.Headers = h
	return m
}

// headersFromUser turns MQTT 5 user properties into headers: the x-amqp-*
// ones set the AMQP properties MQTT lacks, x-bourse-typed restores the AMQP
// types of non-string headers, and a key repeated n times becomes an array
// of its n values (MQTT allows repeats, AMQP tables do not).
func headersFromUser(user []packets.UserProperty, p *core.Properties) core.Table {
	h := make(core.Table, len(user)+3)
	var typed string
	repeated := map[string]bool(nil)
	for _, u := range user {
		switch u.Key {
		case core.TypedHeaders:
			typed = u.Val
			continue
		case upMessageID:
			p.MessageID = u.Val
			continue
		case upType:
			p.Type = u.Val
			continue
		case upAppID:
			p.AppID = u.Val
			continue
		case upUserID:
			p.UserID = u.Val
			continue
		case upContentEncoding:
			p.ContentEncoding = u.Val
			continue
		case upClusterID:
			p.ClusterID = u.Val
			continue
		case upPriority:
			if n, err := strconv.ParseUint(u.Val, 10, 8); err == nil {
				p.Priority = uint8(n)
				continue
			}
		case upTimestamp:
			if n, err := strconv.ParseInt(u.Val, 10, 64); err == nil {
				p.Timestamp = time.Unix(n, 0).UTC()
				continue
			}
		}
		prev, seen := h[u.Key]
		switch {
		case !seen:
			h[u.Key] = u.Val
		case repeated[u.Key]:
			h[u.Key] = append(prev.([]any), u.Val)
		default:
			if repeated == nil {
				repeated = map[string]bool{}
			}
			repeated[u.Key] = true
			h[u.Key] = []any{prev, u.Val}
		}
	}
	if typed != "" {
		// A malformed typed header is dropped: the plain renderings of its
		// values are still there.
		if t, err := core.DecodeTyped(typed); err == nil {
			for k, v := range t {
				h[k] = v
			}
		}
	}
	return h
}

// messageQoS is the QoS a message was published with: the MQTT publisher's
// own (x-mqtt-publish-qos), else 1 for persistent and 0 for transient
// messages, as RabbitMQ maps AMQP delivery modes.
func messageQoS(m *core.Message) byte {
	if v, ok := m.Headers[hdrPublishQoS]; ok {
		if n, ok := core.AsInt(v); ok && n >= 0 && n <= 2 {
			return byte(n)
		}
	}
	if m.Persistent() {
		return 1
	}
	return 0
}

// retainedFlag reports whether the publisher set RETAIN.
func retainedFlag(m *core.Message) bool {
	b, _ := m.Headers[hdrRetain].(bool)
	return b
}

// internalHeader reports headers that become PUBLISH fields rather than
// user properties.
func internalHeader(k string) bool {
	switch k {
	case hdrPublishQoS, hdrRetain, hdrPayloadFormat, hdrReplyToTopic, hdrCorrelationID, core.TypedHeaders:
		return true
	}
	return false
}

// headerString returns a string or byte-array header value.
func headerString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case []byte:
		return string(x), true
	}
	return "", false
}

// expirySeconds is the MQTT 5 Message Expiry Interval of m at now: its
// expiration minus the time it has waited, rounded up to whole seconds
// ([MQTT-3.3.2-6]). ok is false when m does not expire.
func expirySeconds(m *core.Message, now time.Time) (uint32, bool) {
	ttl, ok, err := m.ExpirationTTL()
	if !ok || err != nil {
		return 0, false
	}
	if !m.Arrived.IsZero() {
		ttl -= now.Sub(m.Arrived)
	}
	secs := (ttl + time.Second - 1) / time.Second
	switch {
	case secs < 1:
		secs = 1
	case secs > math.MaxUint32:
		secs = math.MaxUint32
	}
	return uint32(secs), true
}

// deliveryProperties maps a router message to MQTT 5 PUBLISH properties.
func deliveryProperties(m *core.Message, now time.Time) packets.Properties {
	var p packets.Properties
	if mqttString(m.Props.ContentType) {
		p.ContentType = m.Props.ContentType
	}
	if m.Props.CorrelationID != "" {
		p.CorrelationData = []byte(m.Props.CorrelationID)
	} else if s, ok := headerString(m.Headers[hdrCorrelationID]); ok && s != "" {
		p.CorrelationData = []byte(s)
	}
	if s, ok := headerString(m.Headers[hdrReplyToTopic]); ok && s != "" {
		p.ResponseTopic = keyToTopic(s)
	} else if m.Props.ReplyTo != "" {
		p.ResponseTopic = keyToTopic(m.Props.ReplyTo)
	}
	if !validTopic(p.ResponseTopic) {
		p.ResponseTopic = "" // not a topic an MQTT client could publish to
	}
	if secs, ok := expirySeconds(m, now); ok {
		p.MessageExpiryInterval = secs
	}
	if v, ok := m.Headers[hdrPayloadFormat]; ok {
		if n, ok := core.AsInt(v); ok && (n == 0 || n == 1) {
			p.PayloadFormat, p.PayloadFormatFlag = byte(n), true
		}
	}
	p.User = userProperties(m)
	return p
}

// userProperties renders m's headers and the AMQP properties MQTT lacks as
// MQTT 5 user properties, sorted by key. Header values that are not strings
// (or strings MQTT cannot carry: NUL, invalid UTF-8) are rendered as text
// and also travel with their AMQP types in x-bourse-typed, as
// core.SplitHeaders does for STOMP; an array of strings becomes one property
// per element.
func userProperties(m *core.Message) []packets.UserProperty {
	var out []packets.UserProperty
	var typedT core.Table
	n := 0
	for k := range m.Headers {
		if !internalHeader(k) {
			n++
		}
	}
	// Most messages between MQTT clients carry only the bridge's own
	// headers: nothing to allocate for them.
	if n > 0 {
		keys := make([]string, 0, n)
		for k := range m.Headers {
			if !internalHeader(k) {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		out = make([]packets.UserProperty, 0, len(keys)+4)
		for _, k := range keys {
			v := m.Headers[k]
			if s, ok := v.(string); ok && mqttString(s) && mqttString(k) {
				out = append(out, packets.UserProperty{Key: k, Val: s})
				continue
			}
			if typedT == nil {
				typedT = core.Table{}
			}
			typedT[k] = v
			if !mqttString(k) {
				continue // only the typed header can carry this key
			}
			if a, ok := v.([]any); ok && allStrings(a) {
				for _, e := range a {
					out = append(out, packets.UserProperty{Key: k, Val: mqttSafe(e.(string))})
				}
				continue
			}
			out = append(out, packets.UserProperty{Key: k, Val: mqttSafe(core.RenderValue(v))})
		}
	}
	if typedT != nil {
		if typed, err := core.EncodeTyped(typedT); err == nil {
			out = append(out, packets.UserProperty{Key: core.TypedHeaders, Val: typed})
		}
	}
	p := &m.Props
	add := func(k, v string) {
		if v != "" {
			out = append(out, packets.UserProperty{Key: k, Val: mqttSafe(v)})
		}
	}
	add(upMessageID, p.MessageID)
	add(upType, p.Type)
	add(upAppID, p.AppID)
	add(upUserID, p.UserID)
	add(upContentEncoding, p.ContentEncoding)
	add(upClusterID, p.ClusterID)
	if p.Priority != 0 {
		add(upPriority, strconv.Itoa(int(p.Priority)))
	}
	if !p.Timestamp.IsZero() {
		add(upTimestamp, strconv.FormatInt(p.Timestamp.Unix(), 10))
	}
	return out
}

// mqttString reports whether s is a valid MQTT UTF-8 string: valid UTF-8
// without U+0000 ([MQTT-1.5.4-1], [MQTT-1.5.4-2]) and short enough.
func mqttString(s string) bool {
	return len(s) <= 65535 && utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// mqttSafe makes s a valid MQTT string, replacing what is not.
func mqttSafe(s string) string {
	if mqttString(s) {
		return s
	}
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", "\uFFFD"), "\uFFFD")
	if len(s) > 65535 {
		s = strings.ToValidUTF8(s[:65535], "")
	}
	return s
}

func allStrings(a []any) bool {
	for _, e := range a {
		if _, ok := e.(string); !ok {
			return false
		}
	}
	return true
}
