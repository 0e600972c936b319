package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// mqttFanin: conns MQTT connections each publish 16 B at QoS 1, perSec
// times a second (phases spread evenly), to their own topic under one
// prefix; one QoS 1 subscriber of prefix/# records latency and counts
// distinct messages. n is the total; each connection sends n/conns. The
// clients are raw sockets (mqttraw.go), so 1,000 of them cost the bench
// process little. The measured window starts when every connection is up
// and ends when the subscriber has everything or 10 s after the last
// publish; msgs/s is what the subscriber received while the publishers
// ran. Connections that fail to connect count their messages as missing.
func mqttFanin(conns, perSec int) func(*runCtx) error {
	return func(rc *runCtx) error {
		b := rc.b
		per := max(rc.n/conns, 1)
		total := per * conns
		rc.expected = total
		prefix := fmt.Sprintf("fanin/%d", time.Now().UnixNano())
		var (
			mu   sync.Mutex
			seen = make([]bool, total)
			lat  = make([]time.Duration, 0, total)
			got  atomic.Int64
			all  = make(chan struct{})
		)
		sub, err := rawMQTT(b, "fanin-sub-"+prefix[6:], 600)
		if err != nil {
			return err
		}
		defer sub.Close()
		sr := bufio.NewReaderSize(sub, 64<<10)
		if err := mqttSubscribe(sub, sr, prefix+"/#", 1); err != nil {
			return err
		}
		go mqttReceive(sub, sr, func(p []byte) {
			now := time.Now().UnixNano()
			if len(p) < 16 {
				return
			}
			id := int(binary.LittleEndian.Uint32(p[8:]))*per + int(binary.LittleEndian.Uint32(p[12:]))
			mu.Lock()
			defer mu.Unlock()
			if id >= total || seen[id] {
				return
			}
			seen[id] = true
			lat = append(lat, time.Duration(now-int64(binary.LittleEndian.Uint64(p))))
			if got.Add(1) == int64(total) {
				close(all)
			}
		})
		pubs := make([]net.Conn, conns)
		var failed atomic.Int64
		var firstErr error
		var once sync.Once
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for i := range pubs {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				c, err := rawMQTT(b, fmt.Sprintf("fanin-%s-%d", prefix[6:], i), 600)
				if err != nil {
					failed.Add(1)
					once.Do(func() { firstErr = err })
					return
				}
				pubs[i] = c
				go func() { _, _ = io.Copy(io.Discard, c) }() // PUBACKs
			}()
		}
		wg.Wait()
		defer func() {
			for _, c := range pubs {
				if c != nil {
					c.Close()
				}
			}
		}()
		rc.start()
		t0 := time.Now()
		interval := time.Second / time.Duration(perSec)
		for i, c := range pubs {
			if c == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				phase := time.Duration(i) * interval / time.Duration(conns)
				topic := fmt.Sprintf("%s/%d", prefix, i)
				p := make([]byte, 16)
				for s := 0; s < per; s++ {
					if d := time.Until(t0.Add(phase + time.Duration(s)*interval)); d > 0 {
						time.Sleep(d)
					}
					binary.LittleEndian.PutUint64(p, uint64(time.Now().UnixNano()))
					binary.LittleEndian.PutUint32(p[8:], uint32(i))
					binary.LittleEndian.PutUint32(p[12:], uint32(s))
					if _, err := c.Write(mqttPublish1(topic, uint16(s%65535+1), p)); err != nil {
						return
					}
				}
			}()
		}
		wg.Wait()
		window := time.Since(t0)
		rc.rate = float64(got.Load()) / window.Seconds()
		select {
		case <-all:
		case <-time.After(10 * time.Second):
		}
		rc.stop()
		mu.Lock()
		rc.delivered, rc.lat = len(lat), append([]time.Duration(nil), lat...)
		mu.Unlock()
		if f := failed.Load(); f > 0 {
			return fmt.Errorf("%d of %d publishers could not connect (first: %v)", f, conns, firstErr)
		}
		return nil
	}
}
