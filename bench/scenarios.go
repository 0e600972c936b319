package main

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/go-stomp/stomp/v3"
	amqp "github.com/rabbitmq/amqp091-go"
)

// result is one run of one scenario against one broker.
type result struct {
	Scenario     string  `json:"scenario"`
	Broker       string  `json:"broker"`
	Messages     int     `json:"messages"` // delivered (conn-scale: connections opened)
	Seconds      float64 `json:"seconds"`
	MsgsPerS     float64 `json:"msgs_per_s"`
	CPUusPer     float64 `json:"broker_cpu_us_per_msg"`
	P50ms        float64 `json:"p50_ms,omitempty"`
	P99ms        float64 `json:"p99_ms,omitempty"`
	P999ms       float64 `json:"p999_ms,omitempty"`
	Missing      int     `json:"missing"`
	MsgsPerFsync float64 `json:"msgs_per_fsync,omitempty"`
	Conns        int     `json:"conns,omitempty"`
	KiBPerConn   float64 `json:"kib_per_conn,omitempty"`
	RSSBeforeMiB float64 `json:"rss_before_mib,omitempty"`
	RSSAfterMiB  float64 `json:"rss_after_mib,omitempty"`
	LoadAvg      string  `json:"loadavg"`
}

type scenario struct {
	name     string
	brokers  []string
	run      func(rc *runCtx) error
	n        int             // messages (conn-scale: connections) in a full run
	expected func(n int) int // deliveries expected from n; nil means n
	fresh    bool            // start a broker of its own for each run (not RabbitMQ)
	fsyncs   bool            // count the broker's fsyncs (Bourse's /metrics)
}

// runCtx is one run of one scenario against one broker. The scenario
// fills in what it measured; start and stop bracket the window whose wall
// time and broker CPU count (by default the whole run), so a scenario can
// leave its setup and teardown out.
type runCtx struct {
	b   *broker
	n   int
	pid int

	delivered int
	expected  int     // deliveries expected, when the scenario knows better than n
	rate      float64 // msgs/s, when the scenario measures it itself
	lat       []time.Duration

	conns               int
	kibPerConn          float64
	rssBefore, rssAfter float64 // KiB

	t0, t1 time.Time
	c0, c1 float64
}

func (rc *runCtx) start() { rc.t0, rc.c0, rc.t1 = time.Now(), cpuSeconds(rc.pid), time.Time{} }

func (rc *runCtx) stop() {
	if rc.t1.IsZero() {
		rc.t1, rc.c1 = time.Now(), cpuSeconds(rc.pid)
	}
}

// simple adapts a scenario that measures the whole run and returns its
// deliveries and latencies.
func simple(fn func(b *broker, n int) (int, []time.Duration, error)) func(*runCtx) error {
	return func(rc *runCtx) error {
		got, lat, err := fn(rc.b, rc.n)
		rc.delivered, rc.lat = got, lat
		return err
	}
}

func amqpURL(b *broker) string { return "amqp://guest:guest@" + b.amqp + "/" }

// amqpPair publishes n messages of size bytes to a fresh queue and
// consumes them; persistent adds confirms (window of 100 outstanding) and
// manual acks with prefetch 100.
func amqpPair(size int, persistent bool) func(*broker, int) (int, []time.Duration, error) {
	return func(b *broker, n int) (int, []time.Duration, error) {
		conn, err := amqp.Dial(amqpURL(b))
		if err != nil {
			return 0, nil, err
		}
		defer conn.Close()
		ch, _ := conn.Channel()
		q, err := ch.QueueDeclare("", persistent, false, !persistent, false, nil)
		if err != nil {
			return 0, nil, err
		}
		cc, _ := conn.Channel()
		if persistent {
			cc.Qos(100, 0, false)
		}
		ds, err := cc.Consume(q.Name, "", !persistent, false, false, false, nil)
		if err != nil {
			return 0, nil, err
		}
		body := make([]byte, size)
		mode := amqp.Transient
		var acks chan amqp.Confirmation
		if persistent {
			mode = amqp.Persistent
			ch.Confirm(false)
			acks = ch.NotifyPublish(make(chan amqp.Confirmation, 200))
		}
		pubErr := make(chan error, 1)
		go func() {
			outstanding := 0
			for i := 0; i < n; i++ {
				if err := ch.Publish("", q.Name, false, false, amqp.Publishing{DeliveryMode: mode, Body: body}); err != nil {
					pubErr <- err
					return
				}
				if persistent {
					outstanding++
					for outstanding >= 100 {
						<-acks
						outstanding--
					}
				}
			}
			for ; outstanding > 0; outstanding-- {
				<-acks
			}
			pubErr <- nil
		}()
		got := 0
		timeout := time.After(120 * time.Second)
		for got < n {
			select {
			case d := <-ds:
				got++
				if persistent {
					d.Ack(false)
				}
			case <-timeout:
				return got, nil, fmt.Errorf("timeout after %d of %d", got, n)
			}
		}
		if persistent {
			ch.QueueDelete(q.Name, false, false, false)
		}
		return got, nil, <-pubErr
	}
}

// amqpPersistentPublishers: p publishers each waiting for every confirm
// before the next publish (so group commit is what makes p faster than 1).
func amqpPersistentPublishers(p int) func(*broker, int) (int, []time.Duration, error) {
	return func(b *broker, n int) (int, []time.Duration, error) {
		conn, err := amqp.Dial(amqpURL(b))
		if err != nil {
			return 0, nil, err
		}
		defer conn.Close()
		ch, _ := conn.Channel()
		q, err := ch.QueueDeclare("", true, false, false, false, nil)
		if err != nil {
			return 0, nil, err
		}
		defer ch.QueueDelete(q.Name, false, false, false)
		per := n / p
		var wg sync.WaitGroup
		var confirmed atomic.Int64
		errc := make(chan error, p)
		body := make([]byte, 1024)
		for i := 0; i < p; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := amqp.Dial(amqpURL(b))
				if err != nil {
					errc <- err
					return
				}
				defer c.Close()
				pc, _ := c.Channel()
				pc.Confirm(false)
				acks := pc.NotifyPublish(make(chan amqp.Confirmation, 1))
				for j := 0; j < per; j++ {
					if err := pc.Publish("", q.Name, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body}); err != nil {
						errc <- err
						return
					}
					if a := <-acks; a.Ack {
						confirmed.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			return int(confirmed.Load()), nil, err
		}
		return int(confirmed.Load()), nil, nil
	}
}

// amqpFanout: one publisher, a fanout exchange bound to 8 queues, 8
// auto-ack consumers; n counts deliveries.
func amqpFanout(b *broker, n int) (int, []time.Duration, error) {
	conn, err := amqp.Dial(amqpURL(b))
	if err != nil {
		return 0, nil, err
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	ex := fmt.Sprintf("bench-fanout-%d", time.Now().UnixNano())
	if err := ch.ExchangeDeclare(ex, "fanout", false, true, false, false, nil); err != nil {
		return 0, nil, err
	}
	var got atomic.Int64
	for i := 0; i < 8; i++ {
		cc, _ := conn.Channel()
		q, _ := cc.QueueDeclare("", false, true, true, false, nil)
		cc.QueueBind(q.Name, "", ex, false, nil)
		ds, _ := cc.Consume(q.Name, "", true, false, false, false, nil)
		go func() {
			for range ds {
				got.Add(1)
			}
		}()
	}
	body := make([]byte, 16)
	for i := 0; i < n/8; i++ {
		if err := ch.Publish(ex, "", false, false, amqp.Publishing{Body: body}); err != nil {
			return int(got.Load()), nil, err
		}
	}
	for deadline := time.Now().Add(120 * time.Second); got.Load() < int64(n/8*8); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			return int(got.Load()), nil, fmt.Errorf("timeout")
		}
	}
	return int(got.Load()), nil, nil
}

// mqttClient connects an MQTT 3.1.1 client (paho.mqtt.golang): the
// version every broker here speaks (RabbitMQ 3.10 has no MQTT 5).
func mqttClient(b *broker, id string, onMsg func(topic string, payload []byte)) (mqtt.Client, error) {
	o := mqtt.NewClientOptions().AddBroker("tcp://" + b.mqtt).SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(false).SetKeepAlive(60 * time.Second).SetOrderMatters(false).SetMaxResumePubInFlight(64)
	if b.name != "mosquitto" {
		o.SetUsername("guest").SetPassword("guest")
	}
	if onMsg != nil {
		o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { onMsg(m.Topic(), m.Payload()) })
	}
	c := mqtt.NewClient(o)
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("mqtt connect: %v", t.Error())
	}
	return c, nil
}

// mqttPair: one publisher, one subscriber, 16 B messages at QoS qos.
func mqttPair(qos byte) func(*broker, int) (int, []time.Duration, error) {
	return func(b *broker, n int) (int, []time.Duration, error) {
		topic := fmt.Sprintf("bench/%d", time.Now().UnixNano())
		var got atomic.Int64
		done := make(chan struct{})
		sub, err := mqttClient(b, "sub-"+topic[6:], func(string, []byte) {
			if got.Add(1) == int64(n) {
				close(done)
			}
		})
		if err != nil {
			return 0, nil, err
		}
		defer sub.Disconnect(100)
		if t := sub.Subscribe(topic, qos, nil); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
			return 0, nil, fmt.Errorf("subscribe: %v", t.Error())
		}
		pub, err := mqttClient(b, "pub-"+topic[6:], nil)
		if err != nil {
			return 0, nil, err
		}
		defer pub.Disconnect(100)
		body := make([]byte, 16)
		// A window of in-flight publishes, as a busy device would keep.
		window := make(chan mqtt.Token, 64)
		go func() {
			for t := range window {
				t.WaitTimeout(30 * time.Second)
			}
		}()
		for i := 0; i < n; i++ {
			window <- pub.Publish(topic, qos, false, body)
		}
		close(window)
		select {
		case <-done:
		case <-time.After(60 * time.Second):
		}
		return int(got.Load()), nil, nil
	}
}

// stompQueue: SEND to /queue/x, one subscriber (ack auto).
func stompQueue(b *broker, n int) (int, []time.Duration, error) {
	conn, err := stomp.Dial("tcp", b.stomp, stomp.ConnOpt.Login("guest", "guest"), stomp.ConnOpt.Host("/"))
	if err != nil {
		return 0, nil, err
	}
	defer conn.Disconnect()
	dest := fmt.Sprintf("/queue/bench-%d", time.Now().UnixNano())
	sub, err := conn.Subscribe(dest, stomp.AckAuto)
	if err != nil {
		return 0, nil, err
	}
	pc, err := stomp.Dial("tcp", b.stomp, stomp.ConnOpt.Login("guest", "guest"), stomp.ConnOpt.Host("/"))
	if err != nil {
		return 0, nil, err
	}
	defer pc.Disconnect()
	body := make([]byte, 64)
	go func() {
		for i := 0; i < n; i++ {
			if pc.Send(dest, "text/plain", body) != nil {
				return
			}
		}
	}()
	got := 0
	for got < n {
		select {
		case m := <-sub.C:
			if m.Err != nil {
				return got, nil, m.Err
			}
			got++
		case <-time.After(30 * time.Second):
			return got, nil, fmt.Errorf("timeout")
		}
	}
	return got, nil, nil
}

// mqttToAMQPLatency: MQTT QoS 0 publishes at a fixed 1,000/s, an AMQP
// consumer on a queue bound to amq.topic measures publish→delivery latency.
func mqttToAMQPLatency(b *broker, n int) (int, []time.Duration, error) {
	conn, err := amqp.Dial(amqpURL(b))
	if err != nil {
		return 0, nil, err
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	q, _ := ch.QueueDeclare("", false, true, true, false, nil)
	key := fmt.Sprintf("lat.%d", time.Now().UnixNano())
	ch.QueueBind(q.Name, key, "amq.topic", false, nil)
	ds, _ := ch.Consume(q.Name, "", true, false, false, false, nil)
	pub, err := mqttClient(b, "lat-"+key[4:], nil)
	if err != nil {
		return 0, nil, err
	}
	defer pub.Disconnect(100)
	topic := strings.ReplaceAll(key, ".", "/")
	lat := make([]time.Duration, 0, n)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for len(lat) < n {
			select {
			case d := <-ds:
				var sent int64
				fmt.Sscan(string(d.Body), &sent)
				lat = append(lat, time.Duration(time.Now().UnixNano()-sent))
			case <-time.After(10 * time.Second):
				return
			}
		}
	}()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for i := 0; i < n; i++ {
		<-tick.C
		pub.Publish(topic, 0, false, []byte(fmt.Sprint(time.Now().UnixNano())))
	}
	<-done
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return len(lat), lat, nil
}
