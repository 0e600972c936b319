package mqtt

import (
	"strings"
	"unicode/utf8"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Checks mochi leaves out. Each returns the reason code to close the
// connection with (MQTT 5 gets it in CONNACK or DISCONNECT; MQTT 3.1.1
// clients are just disconnected, [MQTT-4.8.0-1]), or nil.

var (
	errWillQosNoFlag = packets.Code{Code: packets.ErrProtocolViolation.Code,
		Reason: "protocol violation: will qos without will flag"}
	errPasswordNoUsername = packets.Code{Code: packets.ErrProtocolViolation.Code,
		Reason: "protocol violation: password flag without username flag"}
	errWillTopic = packets.Code{Code: packets.ErrTopicNameInvalid.Code,
		Reason: "will topic is not a valid topic name"}
	errEmptyFilter = packets.Code{Code: packets.ErrMalformedPacket.Code,
		Reason: "malformed packet: empty topic filter"}
	errUnknownAlias = packets.Code{Code: packets.ErrProtocolViolation.Code,
		Reason: "protocol violation: empty topic with an unknown topic alias"}
	errResponseTopic = packets.Code{Code: packets.ErrProtocolViolation.Code,
		Reason: "protocol violation: response topic contains wildcards"}
)

// checkConnect validates what mochi's ConnectValidate does not.
func checkConnect(pk packets.Packet) *packets.Code {
	cp := &pk.Connect
	switch {
	case !cp.WillFlag && cp.WillQos != 0:
		// [MQTT-3.1.2-11] (3.1.1 and 5): no will, so will QoS 0.
		return &errWillQosNoFlag
	case pk.ProtocolVersion < 5 && cp.PasswordFlag && !cp.UsernameFlag:
		// [MQTT-3.1.2-22] (3.1.1; MQTT 5 allows a password alone).
		return &errPasswordNoUsername
	case cp.UsernameFlag && !validString(string(cp.Username)):
		// [MQTT-3.1.3-11]: a UTF-8 string ([MQTT-1.5.4-1], [MQTT-1.5.4-2]).
		return &packets.ErrMalformedUsername
	case cp.WillFlag && !validTopicName(cp.WillTopic):
		// The will topic is a topic name: no wildcards [MQTT-4.7.1-1].
		return &errWillTopic
	}
	return nil
}

// checkPacket validates packets after CONNECT.
func (h *bridge) checkPacket(cl *mochi.Client, pk packets.Packet) *packets.Code {
	switch pk.FixedHeader.Type {
	case packets.Subscribe, packets.Unsubscribe:
		for _, f := range pk.Filters {
			if f.Filter == "" {
				return &errEmptyFilter // [MQTT-4.7.3-1]
			}
		}
	case packets.Publish:
		p := &pk.Properties
		if pk.TopicName == "" && p.TopicAliasFlag && p.TopicAlias > 0 &&
			p.TopicAlias <= uint16(h.s.opts.TopicAliasMaximum) &&
			cl.State.TopicAliases.Inbound.Set(p.TopicAlias, "") == "" {
			// An empty topic must name an alias set earlier on this
			// connection (3.3.2.3.4); mochi would route it to "".
			return &errUnknownAlias
		}
		if p.ResponseTopic != "" && strings.ContainsAny(p.ResponseTopic, "+#") {
			return &errResponseTopic // [MQTT-3.3.2-14]
		}
	}
	return nil
}

func validString(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

func validTopicName(t string) bool {
	return t != "" && validString(t) && !strings.ContainsAny(t, "+#")
}

// connackCodes corrects the CONNACK reason codes mochi picks for some
// refused CONNECTs (keyed by mochi's code and reason string):
//   - an unsupported protocol level (or a protocol name that does not go
//     with it) gets 0x84 (MQTT 5), which the MQTT 3.1.1 mapping turns into
//     0x01 as [MQTT-3.1.2-2] requires;
//   - a reserved flag set and a will QoS of 3 make the CONNECT malformed
//     ([MQTT-3.1.2-3], [MQTT-3.1.2-12]): 0x81 in MQTT 5, not protocol
//     error 0x82 (MQTT 3.1.1 keeps 0x03, having no better code).
var connackCodes = map[packets.Code]byte{
	packets.ErrProtocolViolationProtocolName:    packets.ErrUnsupportedProtocolVersion.Code,
	packets.ErrProtocolViolationProtocolVersion: packets.ErrUnsupportedProtocolVersion.Code,
	packets.ErrProtocolViolationReservedBit:     packets.ErrMalformedPacket.Code,
	packets.ErrProtocolViolationQosOutOfRange:   packets.ErrMalformedPacket.Code,
}
