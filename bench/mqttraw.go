package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"
)

// Raw MQTT 3.1.1 for the many-connection scenarios: one socket per
// client and no client-library goroutines, so the bench process is not
// what limits them.

func mqttString(buf *bytes.Buffer, s string) {
	_ = binary.Write(buf, binary.BigEndian, uint16(len(s)))
	buf.WriteString(s)
}

// mqttPacket frames a packet: first byte, remaining length, body.
func mqttPacket(first byte, body []byte) []byte {
	pkt := []byte{first}
	for n := len(body); ; {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		pkt = append(pkt, d)
		if n == 0 {
			break
		}
	}
	return append(pkt, body...)
}

// rawMQTT sends a CONNECT (clean session) and waits for a successful
// CONNACK.
func rawMQTT(b *broker, id string, keepAlive uint16) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", b.mqtt, 10*time.Second)
	if err != nil {
		return nil, err
	}
	var v bytes.Buffer
	mqttString(&v, "MQTT")
	flags := byte(0x02) // clean session
	if b.name != "mosquitto" {
		flags |= 0xC0 // user name and password
	}
	v.Write([]byte{4, flags, byte(keepAlive >> 8), byte(keepAlive)})
	mqttString(&v, id)
	if b.name != "mosquitto" {
		mqttString(&v, "guest")
		mqttString(&v, "guest")
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	ack := make([]byte, 4)
	if _, err := c.Write(mqttPacket(0x10, v.Bytes())); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := io.ReadFull(c, ack); err != nil {
		c.Close()
		return nil, err
	}
	if ack[0] != 0x20 || ack[3] != 0 {
		c.Close()
		return nil, fmt.Errorf("mqtt connack % x", ack)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// mqttPublish1 frames a QoS 1 PUBLISH.
func mqttPublish1(topic string, id uint16, payload []byte) []byte {
	var v bytes.Buffer
	mqttString(&v, topic)
	v.Write([]byte{byte(id >> 8), byte(id)})
	v.Write(payload)
	return mqttPacket(0x32, v.Bytes())
}

// mqttSubscribe sends a SUBSCRIBE for filter at qos and waits for a
// granting SUBACK.
func mqttSubscribe(c net.Conn, r *bufio.Reader, filter string, qos byte) error {
	var v bytes.Buffer
	v.Write([]byte{0, 1})
	mqttString(&v, filter)
	v.WriteByte(qos)
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(mqttPacket(0x82, v.Bytes())); err != nil {
		return err
	}
	first, body, err := mqttRead(r)
	if err != nil {
		return err
	}
	if first>>4 != 9 || len(body) != 3 || body[2] > 2 {
		return fmt.Errorf("mqtt suback %x % x", first, body)
	}
	return nil
}

// mqttRead reads one packet: its first byte and its body.
func mqttRead(r *bufio.Reader) (byte, []byte, error) {
	first, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; i < 4; i++ {
		d, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(d&0x7f) * mul
		mul *= 128
		if d&0x80 == 0 {
			break
		}
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	return first, body, err
}

// mqttReceive reads PUBLISH packets until the connection ends, calls fn
// with each payload and acknowledges QoS 1 ones (flushing when no more
// input is buffered). QoS 2 is not used here.
func mqttReceive(c net.Conn, r *bufio.Reader, fn func(payload []byte)) {
	w := bufio.NewWriter(c)
	for {
		if r.Buffered() == 0 && w.Buffered() > 0 {
			if w.Flush() != nil {
				return
			}
		}
		first, body, err := mqttRead(r)
		if err != nil {
			return
		}
		if first>>4 != 3 || len(body) < 2 {
			continue
		}
		qos := (first >> 1) & 3
		p := 2 + int(binary.BigEndian.Uint16(body))
		if qos > 0 {
			if len(body) < p+2 {
				continue
			}
			id := body[p : p+2]
			p += 2
			if qos == 1 {
				w.Write([]byte{0x40, 2, id[0], id[1]})
			}
		}
		if p <= len(body) {
			fn(body[p:])
		}
	}
}
