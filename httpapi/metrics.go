package httpapi

import (
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bourse-mq/bourse/router"
)

// ProtocolStats is what a protocol adapter reports for metrics.
type ProtocolStats interface {
	Stats() (connections, channels int)
}

// MetricsOptions are the sources of the broker's metrics.
type MetricsOptions struct {
	Broker    *router.Broker
	Protocols map[string]ProtocolStats // by protocol name: amqp, mqtt, stomp
	// Registry holds the process-wide collectors (runtime, journal,
	// alarms) that every format shares.
	Registry *prometheus.Registry
	// Prefix is the default family prefix: "bourse" (default) or
	// "rabbitmq". ?prefix= overrides it per scrape.
	Prefix string
}

// MountMetrics serves the broker's metrics:
//
//	/metrics                  aggregated, low cardinality (?prefix=rabbitmq for RabbitMQ's names)
//	/metrics/detailed         per queue and per stream (as RabbitMQ's per-object endpoint)
//
// With the rabbitmq prefix the families are the ones RabbitMQ's Prometheus
// plugin exports (rabbitmq_queue_messages_ready, rabbitmq_connections,
// rabbitmq_identity_info …), so stock RabbitMQ dashboards and alert rules
// work unchanged.
func (s *Server) MountMetrics(o MetricsOptions) {
	if o.Prefix == "" {
		o.Prefix = "bourse"
	}
	node, _ := os.Hostname()
	handler := func(detailed bool) http.Handler {
		regs := map[string]*prometheus.Registry{}
		for _, p := range []string{"bourse", "rabbitmq"} {
			r := prometheus.NewRegistry()
			r.MustRegister(&brokerCollector{o: o, prefix: p, detailed: detailed, node: "bourse@" + node})
			regs[p] = r
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p := r.URL.Query().Get("prefix")
			if p == "" {
				p = o.Prefix
			}
			reg := regs[p]
			if reg == nil {
				http.Error(w, "prefix: want bourse or rabbitmq\n", http.StatusBadRequest)
				return
			}
			gs := prometheus.Gatherers{reg}
			if !detailed {
				gs = append(gs, o.Registry)
			}
			promhttp.HandlerFor(gs, promhttp.HandlerOpts{ErrorLog: slogErrorLog{s.opts.Logger}}).ServeHTTP(w, r)
		})
	}
	s.metrics.Store(&handlerBox{handler(false)})
	s.mux.Handle("GET /metrics/detailed", handler(true))
}

// brokerCollector reads the broker's state at scrape time.
type brokerCollector struct {
	o        MetricsOptions
	prefix   string
	detailed bool
	node     string
}

func (c *brokerCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *brokerCollector) desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(c.prefix+"_"+name, help, labels, nil)
}

func (c *brokerCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	counter := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, lv...)
	}
	rabbit := c.prefix == "rabbitmq"
	if rabbit {
		gauge(c.desc("identity_info", "RabbitMQ-compatible node identity.", "rabbitmq_node", "rabbitmq_cluster", "rabbitmq_cluster_permanent_id"), 1, c.node, "bourse", "bourse")
	}
	if c.detailed {
		c.collectObjects(gauge, counter)
		return
	}
	// Connections and channels.
	var conns, chans int
	connDesc := c.desc("connections", "Open client connections.", "protocol")
	chanDesc := c.desc("channels", "Open channels (an MQTT or STOMP connection counts as one).", "protocol")
	for name, p := range c.o.Protocols {
		n, k := p.Stats()
		conns, chans = conns+n, chans+k
		if !rabbit {
			gauge(connDesc, float64(n), name)
			gauge(chanDesc, float64(k), name)
		}
	}
	if rabbit {
		gauge(c.desc("connections", "Open client connections, all protocols."), float64(conns))
		gauge(c.desc("channels", "Open channels, all protocols."), float64(chans))
	}
	// Queues, summed.
	var queues, streams, consumers, ready, unacked int
	var readyBytes int64
	var published, delivered, acked, redelivered, deadLettered, dropped uint64
	var segments int
	var streamBytes int64
	for _, vn := range c.o.Broker.VHosts() {
		v, err := c.o.Broker.VHost(vn)
		if err != nil {
			continue
		}
		for _, q := range v.Queues() {
			st := q.Stats()
			consumers += st.Consumers
			if l := q.StreamLog(); l != nil {
				streams++
				n, b := l.Size()
				segments, streamBytes = segments+n, streamBytes+b
				continue
			}
			queues++
			ready, unacked, readyBytes = ready+st.Ready, unacked+st.Unacked, readyBytes+st.ReadyBytes
			published, delivered, acked = published+st.Published, delivered+st.Delivered, acked+st.Acked
			redelivered, deadLettered, dropped = redelivered+st.Redelivered, deadLettered+st.DeadLettered, dropped+st.Dropped
		}
	}
	bs := c.o.Broker.Stats()
	gauge(c.desc("consumers", "Consumers on queues and streams."), float64(consumers))
	if rabbit {
		gauge(c.desc("queues", "Queues (streams included)."), float64(queues+streams))
		gauge(c.desc("queue_messages_ready", "Messages ready to be delivered, all queues."), float64(ready))
		gauge(c.desc("queue_messages_unacked", "Messages delivered and not yet acknowledged, all queues."), float64(unacked))
		gauge(c.desc("queue_messages", "Ready and unacknowledged messages, all queues."), float64(ready+unacked))
		gauge(c.desc("queue_messages_bytes", "Bytes of ready messages, all queues."), float64(readyBytes))
		counter(c.desc("channel_messages_published_total", "Messages published."), float64(bs.Published))
		counter(c.desc("channel_messages_confirmed_total", "Messages confirmed to publishers."), float64(bs.Confirmed))
		counter(c.desc("channel_messages_unroutable_dropped_total", "Messages published that no queue took."), float64(bs.Unroutable))
		counter(c.desc("channel_messages_delivered_total", "Deliveries to consumers (and gets)."), float64(delivered))
		counter(c.desc("channel_messages_acked_total", "Deliveries acknowledged."), float64(acked))
		counter(c.desc("channel_messages_redelivered_total", "Deliveries flagged redelivered."), float64(redelivered))
		return
	}
	gauge(c.desc("queues", "Queues (streams not included)."), float64(queues))
	gauge(c.desc("queue_messages_ready", "Messages ready to be delivered, all queues."), float64(ready))
	gauge(c.desc("queue_messages_unacked", "Messages delivered and not yet acknowledged, all queues."), float64(unacked))
	gauge(c.desc("queue_messages_ready_bytes", "Bytes of ready messages, all queues."), float64(readyBytes))
	counter(c.desc("messages_published_total", "Messages published (once each, however many queues took them)."), float64(bs.Published))
	counter(c.desc("messages_confirmed_total", "Publisher confirms given."), float64(bs.Confirmed))
	counter(c.desc("messages_unroutable_total", "Messages published that no queue took."), float64(bs.Unroutable))
	counter(c.desc("queue_messages_enqueued_total", "Messages enqueued, counted once per queue."), float64(published))
	counter(c.desc("queue_messages_delivered_total", "Deliveries to consumers (and gets)."), float64(delivered))
	counter(c.desc("queue_messages_acked_total", "Deliveries acknowledged."), float64(acked))
	counter(c.desc("queue_messages_redelivered_total", "Deliveries flagged redelivered."), float64(redelivered))
	counter(c.desc("queue_messages_dead_lettered_total", "Messages dead-lettered."), float64(deadLettered))
	counter(c.desc("queue_messages_dropped_total", "Messages dropped (expired, over a length limit, rejected) without a dead-letter exchange."), float64(dropped))
	gauge(c.desc("streams", "Streams."), float64(streams))
	gauge(c.desc("stream_segments", "Segment files of all streams."), float64(segments))
	gauge(c.desc("stream_bytes", "Bytes on disk of all streams."), float64(streamBytes))
}

// collectObjects emits per-queue and per-stream series.
func (c *brokerCollector) collectObjects(gauge, counter func(*prometheus.Desc, float64, ...string)) {
	l := []string{"vhost", "queue"}
	ready := c.desc("queue_messages_ready", "Messages ready to be delivered.", l...)
	unacked := c.desc("queue_messages_unacked", "Messages delivered and not yet acknowledged.", l...)
	bytes := c.desc("queue_messages_ready_bytes", "Bytes of ready messages.", l...)
	consumers := c.desc("queue_consumers", "Consumers.", l...)
	published := c.desc("queue_messages_published_total", "Messages enqueued.", l...)
	delivered := c.desc("queue_messages_delivered_total", "Deliveries.", l...)
	acked := c.desc("queue_messages_acked_total", "Acknowledgements.", l...)
	redelivered := c.desc("queue_messages_redelivered_total", "Redeliveries.", l...)
	segs := c.desc("stream_segments", "Segment files of the stream.", l...)
	sbytes := c.desc("stream_bytes", "Bytes on disk of the stream.", l...)
	lag := c.desc("stream_reader_lag", "Records a named reader has still to read.", "vhost", "queue", "reader")
	for _, vn := range c.o.Broker.VHosts() {
		v, err := c.o.Broker.VHost(vn)
		if err != nil {
			continue
		}
		for _, q := range v.Queues() {
			st := q.Stats()
			lv := []string{vn, q.Name()}
			gauge(ready, float64(st.Ready), lv...)
			gauge(unacked, float64(st.Unacked), lv...)
			gauge(bytes, float64(st.ReadyBytes), lv...)
			gauge(consumers, float64(st.Consumers), lv...)
			counter(published, float64(st.Published), lv...)
			counter(delivered, float64(st.Delivered), lv...)
			counter(acked, float64(st.Acked), lv...)
			counter(redelivered, float64(st.Redelivered), lv...)
			if sl := q.StreamLog(); sl != nil {
				n, b := sl.Size()
				gauge(segs, float64(n), lv...)
				gauge(sbytes, float64(b), lv...)
				_, next := sl.Bounds()
				for reader, off := range sl.NamedOffsets() {
					gauge(lag, float64(next-min(off, next)), vn, q.Name(), reader)
				}
			}
		}
	}
}
