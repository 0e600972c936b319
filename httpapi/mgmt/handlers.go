package mgmt

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"sort"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/bourse-mq/bourse/auth"
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/router/queue"
)

func (a *API) dispatch(w http.ResponseWriter, r *http.Request, p principal, parts []string) {
	n := len(parts)
	if n == 0 {
		writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
		return
	}
	get := r.Method == http.MethodGet || r.Method == http.MethodHead
	switch parts[0] {
	case "overview":
		if n == 1 && get {
			a.overview(w)
			return
		}
	case "whoami":
		if n == 1 && get {
			writeJSON(w, http.StatusOK, map[string]any{"name": p.name, "tags": p.tags, "auth_backend": "internal"})
			return
		}
	case "nodes":
		if get && (n == 1 || n == 2 && parts[1] == a.node) {
			if n == 1 {
				writeJSON(w, http.StatusOK, []any{a.nodeInfo()})
			} else {
				writeJSON(w, http.StatusOK, a.nodeInfo())
			}
			return
		}
	case "vhosts":
		if len(parts) == 3 && parts[2] == "connections" && get {
			a.listConns(w, r, parts[1])
			return
		}
		if len(parts) == 3 && parts[2] == "channels" && get {
			a.channels(w, r, parts[1], "", "")
			return
		}
		a.vhosts(w, r, parts[1:])
		return
	case "connections":
		if len(parts) == 3 && parts[2] == "channels" && get {
			a.channels(w, r, "", parts[1], "")
			return
		}
		a.connections(w, r, parts[1:])
		return
	case "channels":
		if get && n <= 2 {
			name := ""
			if n == 2 {
				name = parts[1]
			}
			a.channels(w, r, "", "", name)
			return
		}
	case "consumers":
		if get && n <= 2 {
			a.consumers(w, r, parts[1:])
			return
		}
	case "exchanges":
		a.exchanges(w, r, parts[1:])
		return
	case "queues":
		a.queues(w, r, parts[1:])
		return
	case "bindings":
		a.bindings(w, r, parts[1:])
		return
	case "definitions":
		a.definitions(w, r, parts[1:])
		return
	case "health":
		a.health(w, r, parts[1:])
		return
	case "users":
		a.users(w, r, parts[1:])
		return
	case "permissions":
		a.permissions(w, r, parts[1:], false)
		return
	case "topic-permissions":
		a.permissions(w, r, parts[1:], true)
		return
	case "aliveness-test":
		if n == 2 && get {
			a.aliveness(w, parts[1])
			return
		}
	}
	writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
}

// ---- overview and nodes ----

func (a *API) totals() (queues, exchanges, consumers, ready, unacked int, published, delivered, acked, redelivered uint64) {
	for _, vn := range a.o.Broker.VHosts() {
		v, err := a.o.Broker.VHost(vn)
		if err != nil {
			continue
		}
		exchanges += len(v.Exchanges())
		for _, q := range v.Queues() {
			st := q.Stats()
			queues++
			consumers += st.Consumers
			if !q.IsStream() {
				ready, unacked = ready+st.Ready, unacked+st.Unacked
			}
			published, delivered, acked, redelivered = published+st.Published, delivered+st.Delivered, acked+st.Acked, redelivered+st.Redelivered
		}
	}
	return
}

func (a *API) overview(w http.ResponseWriter) {
	queues, exchanges, consumers, ready, unacked, _, delivered, acked, redelivered := a.totals()
	bs := a.o.Broker.Stats()
	conns, chans := 0, 0
	for _, c := range a.o.Broker.Conns() {
		conns, chans = conns+1, chans+c.Stats().Channels
	}
	var listeners []map[string]any
	for _, l := range a.o.Listeners() {
		host, port, _ := net.SplitHostPort(l.Addr)
		pn, _ := strconv.Atoi(port)
		listeners = append(listeners, map[string]any{"node": a.node, "protocol": l.Protocol, "ip_address": host, "port": pn})
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"management_version": a.o.Version, "rabbitmq_version": "3.13.0", "product_name": "Bourse", "product_version": a.o.Version,
		"erlang_version": runtime.Version(), "statistics_level": "fine", "cluster_name": "bourse", "node": a.node,
		"exchange_types": []map[string]string{{"name": "direct"}, {"name": "fanout"}, {"name": "topic"}, {"name": "headers"}},
		"object_totals":  map[string]int{"queues": queues, "exchanges": exchanges, "consumers": consumers, "connections": conns, "channels": chans},
		"queue_totals":   map[string]int{"messages": ready + unacked, "messages_ready": ready, "messages_unacknowledged": unacked},
		"message_stats":  overviewStats(a.rates.messageStats("overview", [nCounters]uint64{bs.Published, delivered, acked, redelivered}), bs.Confirmed, bs.Unroutable),
		"listeners":      listeners,
	})
}

func overviewStats(m map[string]any, confirmed, unroutable uint64) map[string]any {
	m["confirm"], m["return_unroutable"] = confirmed, unroutable
	return m
}

func (a *API) nodeInfo() map[string]any {
	info := map[string]any{"name": a.node, "type": "disc", "running": true, "uptime": time.Since(a.started).Milliseconds(),
		"processors": runtime.NumCPU(), "os_pid": strconv.Itoa(osPid()), "run_queue": 0}
	if n := a.o.Node; n != nil {
		mem, disk := n.Alarms()
		ml, dl := n.Limits()
		info["mem_used"], info["mem_limit"], info["mem_alarm"] = n.Used(), ml, mem
		info["disk_free"], info["disk_free_limit"], info["disk_free_alarm"] = n.Free(), dl, disk
	}
	return info
}

// ---- connections and consumers ----

func (a *API) connJSON(c *router.Conn) map[string]any {
	i := c.Info
	st := c.Stats()
	rates := a.rates.rates("c\x00"+i.Name, time.Now(), [nCounters]uint64{st.RecvOct, st.SendOct})
	peerHost, peerPort, _ := net.SplitHostPort(i.Peer)
	host, port, _ := net.SplitHostPort(i.Local)
	pp, _ := strconv.Atoi(peerPort)
	lp, _ := strconv.Atoi(port)
	return map[string]any{"name": i.Name, "node": a.node, "type": "network", "state": "running", "protocol": i.Protocol,
		"user": i.User, "vhost": i.VHost, "peer_host": peerHost, "peer_port": pp, "host": host, "port": lp,
		"ssl": i.Transport == "tls", "transport": i.Transport, "channels": st.Channels,
		"recv_oct": st.RecvOct, "send_oct": st.SendOct,
		"recv_oct_details": map[string]float64{"rate": rates[0]}, "send_oct_details": map[string]float64{"rate": rates[1]},
		"connected_at": i.Connected.UnixMilli(), "client_properties": map[string]any{"connection_name": i.ClientID}}
}

// listConns lists connections (of one vhost, or all); users without the
// monitoring or administrator tag see their own only, as in RabbitMQ.
func (a *API) listConns(w http.ResponseWriter, r *http.Request, vhost string) {
	out := []any{}
	p, ok := principalOf(r)
	for _, c := range a.o.Broker.Conns() {
		if ok && !p.monitor() && c.Info.User != p.name {
			continue
		}
		if vhost == "" || c.Info.VHost == vhost {
			out = append(out, a.connJSON(c))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) connections(w http.ResponseWriter, r *http.Request, parts []string) {
	switch {
	case len(parts) == 0 && r.Method == http.MethodGet:
		a.listConns(w, r, "")
	case len(parts) == 1:
		var found *router.Conn
		for _, c := range a.o.Broker.Conns() {
			if c.Info.Name == parts[0] {
				found = c
			}
		}
		if found == nil {
			writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
			return
		}
		switch r.Method {
		case http.MethodGet:
			writeJSON(w, http.StatusOK, a.connJSON(found))
		case http.MethodDelete:
			reason := r.Header.Get("X-Reason")
			if reason == "" {
				reason = "closed via management API"
			}
			if err := a.o.Broker.CloseConn(parts[0], reason); err != nil {
				writeCoreError(w, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		default:
			methodNotAllowed(w, "GET", "DELETE")
		}
	default:
		writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
	}
}

func (a *API) consumers(w http.ResponseWriter, r *http.Request, parts []string) {
	names, ok := a.vhostNames(r, parts, w)
	if !ok {
		return
	}
	a.listIn(w, names, func(vn string, v *router.VHost, add func(any)) {
		for _, q := range v.Queues() {
			for _, s := range q.Subscriptions() {
				add(map[string]any{"consumer_tag": s.Tag, "queue": map[string]string{"name": q.Name(), "vhost": vn},
					"ack_required": !s.NoAck, "prefetch_count": s.Prefetch, "exclusive": s.Exclusive, "active": true,
					"activity_status": "up", "priority": s.Priority, "arguments": map[string]any{}})
			}
		}
	})
}

// ---- vhosts ----

func (a *API) vhostInfo(name string) map[string]any {
	v, _ := a.o.Broker.VHost(name)
	ready, unacked := 0, 0
	if v != nil {
		for _, q := range v.Queues() {
			if !q.IsStream() {
				st := q.Stats()
				ready, unacked = ready+st.Ready, unacked+st.Unacked
			}
		}
	}
	return map[string]any{"name": name, "description": "", "tags": []string{}, "tracing": false, "default_queue_type": "classic",
		"messages": ready + unacked, "messages_ready": ready, "messages_unacknowledged": unacked, "cluster_state": map[string]string{a.node: "running"}}
}

func (a *API) vhosts(w http.ResponseWriter, r *http.Request, parts []string) {
	switch {
	case len(parts) == 0 && r.Method == http.MethodGet:
		out := []any{}
		for _, n := range visible(r, a.o.Broker.VHosts()) {
			out = append(out, a.vhostInfo(n))
		}
		writeJSON(w, http.StatusOK, out)
	case len(parts) == 1:
		name := parts[0]
		switch r.Method {
		case http.MethodGet:
			if a.vhost(w, name) != nil {
				writeJSON(w, http.StatusOK, a.vhostInfo(name))
			}
		case http.MethodPut:
			_, err := a.o.Broker.VHost(name)
			existed := err == nil
			if _, err := a.o.Broker.AddVHost(name); err != nil {
				writeCoreError(w, err)
				return
			}
			if existed {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			// As RabbitMQ's API: the creating user gets full permissions.
			if p, ok := principalOf(r); ok {
				if err := a.o.Users.SetPermissions(auth.Permission{User: p.name, VHost: name, Configure: ".*", Write: ".*", Read: ".*"}); err != nil {
					writeCoreError(w, err)
					return
				}
			}
			w.WriteHeader(http.StatusCreated)
		case http.MethodDelete:
			if err := a.o.Broker.DeleteVHost(name); err != nil {
				writeCoreError(w, err)
				return
			}
			if err := a.o.Users.VHostDeleted(name); err != nil {
				writeCoreError(w, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		default:
			methodNotAllowed(w, "GET", "PUT", "DELETE")
		}
	default:
		writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
	}
}

// ---- exchanges ----

func exchangeJSON(vhost string, e core.ExchangeInfo) map[string]any {
	name := e.Name
	return map[string]any{"name": name, "vhost": vhost, "type": e.Type, "durable": e.Durable, "auto_delete": e.AutoDelete,
		"internal": e.Internal, "arguments": tableJSON(e.Args), "user_who_performed_action": ""}
}

func (a *API) vhostNames(r *http.Request, parts []string, w http.ResponseWriter) ([]string, bool) {
	if len(parts) == 0 {
		return visible(r, a.o.Broker.VHosts()), true
	}
	if a.vhost(w, parts[0]) == nil {
		return nil, false
	}
	return []string{parts[0]}, true
}

// listIn answers a listing across the named vhosts.
func (a *API) listIn(w http.ResponseWriter, names []string, each func(vn string, v *router.VHost, add func(any))) {
	out := []any{}
	for _, vn := range names {
		if v, err := a.o.Broker.VHost(vn); err == nil {
			each(vn, v, func(x any) { out = append(out, x) })
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) exchanges(w http.ResponseWriter, r *http.Request, parts []string) {
	if len(parts) <= 1 {
		if r.Method != http.MethodGet {
			methodNotAllowed(w, "GET")
			return
		}
		names, ok := a.vhostNames(r, parts, w)
		if !ok {
			return
		}
		a.listIn(w, names, func(vn string, v *router.VHost, add func(any)) {
			for _, e := range v.Exchanges() {
				add(exchangeJSON(vn, e))
			}
		})
		return
	}
	v := a.vhost(w, parts[0])
	if v == nil {
		return
	}
	name := parts[1]
	if len(parts) == 3 && parts[2] == "publish" && r.Method == http.MethodPost {
		a.publish(w, r, v, name)
		return
	}
	if len(parts) == 4 && parts[2] == "bindings" && (parts[3] == "source" || parts[3] == "destination") && r.Method == http.MethodGet {
		out := []any{}
		for _, b := range v.Bindings() {
			if parts[3] == "source" && b.Source == name || parts[3] == "destination" && b.Dest.Kind == router.ToExchange && b.Dest.Name == name {
				out = append(out, bindingJSON(parts[0], b))
			}
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	if len(parts) != 2 {
		writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
		return
	}
	switch r.Method {
	case http.MethodGet:
		for _, e := range v.Exchanges() {
			if e.Name == name {
				writeJSON(w, http.StatusOK, exchangeJSON(parts[0], e))
				return
			}
		}
		writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
	case http.MethodPut:
		var body struct {
			Type       string         `json:"type"`
			Durable    *bool          `json:"durable"`
			AutoDelete bool           `json:"auto_delete"`
			Internal   bool           `json:"internal"`
			Arguments  map[string]any `json:"arguments"`
		}
		if err := a.readBody(r, &body); err != nil || body.Type == "" {
			writeError(w, http.StatusBadRequest, "bad_request", "want a JSON body with at least \"type\"")
			return
		}
		args, err := jsonTable(body.Arguments)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		durable := body.Durable == nil || *body.Durable
		existed := exchangeExists(v, name)
		if err := v.DeclareExchange(router.ExchangeDecl{ExchangeInfo: core.ExchangeInfo{Name: name, Type: body.Type,
			Durable: durable, AutoDelete: body.AutoDelete, Internal: body.Internal, Args: args}}); err != nil {
			writeCoreError(w, err)
			return
		}
		created(w, existed)
	case http.MethodDelete:
		if err := v.DeleteExchange(name, r.URL.Query().Get("if-unused") == "true"); err != nil {
			writeCoreError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		methodNotAllowed(w, "GET", "PUT", "DELETE")
	}
}

func exchangeExists(v *router.VHost, name string) bool {
	for _, e := range v.Exchanges() {
		if e.Name == name {
			return true
		}
	}
	return false
}

func created(w http.ResponseWriter, existed bool) {
	if existed {
		w.WriteHeader(http.StatusNoContent)
	} else {
		w.WriteHeader(http.StatusCreated)
	}
}

// ---- queues ----

func queueType(q *queue.Queue) string {
	if q.IsStream() {
		return "stream"
	}
	if t := q.Config().Args.Type; t == "quorum" {
		return t
	}
	return "classic"
}

func (a *API) queueJSON(vhost string, q *queue.Queue) map[string]any {
	node := a.node
	c := q.Config()
	st := q.Stats()
	m := map[string]any{"name": c.Name, "vhost": vhost, "durable": c.Durable, "auto_delete": c.AutoDelete, "exclusive": c.Exclusive,
		"arguments": tableJSON(c.Arguments), "type": queueType(q), "state": "running", "node": node,
		"messages": st.Ready + st.Unacked, "messages_ready": st.Ready, "messages_unacknowledged": st.Unacked,
		"message_bytes": st.ReadyBytes, "message_bytes_ready": st.ReadyBytes, "consumers": st.Consumers,
		"message_stats": a.rates.messageStats("q\x00"+vhost+"\x00"+c.Name, [nCounters]uint64{st.Published, st.Delivered, st.Acked, st.Redelivered})}
	if l := q.StreamLog(); l != nil {
		first, next := l.Bounds()
		segs, bytes := l.Size()
		m["messages_ready"], m["messages_unacknowledged"] = 0, 0
		m["messages"] = next - first
		m["stream"] = map[string]any{"first_offset": first, "next_offset": next, "segments": segs, "bytes": bytes, "named_offsets": l.NamedOffsets()}
	}
	return m
}

func (a *API) queues(w http.ResponseWriter, r *http.Request, parts []string) {
	if len(parts) <= 1 {
		if r.Method != http.MethodGet {
			methodNotAllowed(w, "GET")
			return
		}
		names, ok := a.vhostNames(r, parts, w)
		if !ok {
			return
		}
		a.listIn(w, names, func(vn string, v *router.VHost, add func(any)) {
			for _, q := range v.Queues() {
				add(a.queueJSON(vn, q))
			}
		})
		return
	}
	v := a.vhost(w, parts[0])
	if v == nil {
		return
	}
	name := parts[1]
	if len(parts) == 3 {
		switch {
		case parts[2] == "contents" && r.Method == http.MethodDelete:
			if _, err := v.PurgeQueue(name, 0); err != nil {
				writeCoreError(w, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		case parts[2] == "get" && r.Method == http.MethodPost:
			a.get(w, r, v, name)
		case parts[2] == "bindings" && r.Method == http.MethodGet:
			out := []any{}
			for _, b := range v.Bindings() {
				if b.Dest.Kind == router.ToQueue && b.Dest.Name == name {
					out = append(out, bindingJSON(parts[0], b))
				}
			}
			writeJSON(w, http.StatusOK, out)
		default:
			writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
		}
		return
	}
	if len(parts) != 2 {
		writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
		return
	}
	switch r.Method {
	case http.MethodGet:
		q, err := v.Queue(name, 0)
		if err != nil {
			writeCoreError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, a.queueJSON(parts[0], q))
	case http.MethodPut:
		var body struct {
			Durable    *bool          `json:"durable"`
			AutoDelete bool           `json:"auto_delete"`
			Arguments  map[string]any `json:"arguments"`
		}
		if err := a.readBody(r, &body); err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", "want a JSON body")
			return
		}
		args, err := jsonTable(body.Arguments)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		_, qerr := v.Queue(name, 0)
		durable := body.Durable == nil || *body.Durable
		if _, err := v.DeclareQueue(router.QueueDecl{QueueInfo: core.QueueInfo{Name: name, Durable: durable,
			AutoDelete: body.AutoDelete, Args: args}}); err != nil {
			writeCoreError(w, err)
			return
		}
		created(w, qerr == nil)
	case http.MethodDelete:
		qv := r.URL.Query()
		if _, err := v.DeleteQueue(name, qv.Get("if-unused") == "true", qv.Get("if-empty") == "true", 0); err != nil {
			writeCoreError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		methodNotAllowed(w, "GET", "PUT", "DELETE")
	}
}

// ---- bindings ----

func propertiesKey(b core.Binding) string {
	if len(b.Args) == 0 {
		if b.Key == "" {
			return "~"
		}
		return url.PathEscape(b.Key)
	}
	j, _ := json.Marshal(tableJSON(b.Args))
	h := sha256.Sum256(j)
	return url.PathEscape(b.Key) + "~" + base64.RawURLEncoding.EncodeToString(h[:8])
}

func bindingJSON(vhost string, b core.Binding) map[string]any {
	dt := "queue"
	if b.Dest.Kind == router.ToExchange {
		dt = "exchange"
	}
	return map[string]any{"source": b.Source, "vhost": vhost, "destination": b.Dest.Name, "destination_type": dt,
		"routing_key": b.Key, "arguments": tableJSON(b.Args), "properties_key": propertiesKey(b)}
}

func (a *API) bindings(w http.ResponseWriter, r *http.Request, parts []string) {
	if len(parts) <= 1 {
		if r.Method != http.MethodGet {
			methodNotAllowed(w, "GET")
			return
		}
		names, ok := a.vhostNames(r, parts, w)
		if !ok {
			return
		}
		a.listIn(w, names, func(vn string, v *router.VHost, add func(any)) {
			for _, b := range v.Bindings() {
				add(bindingJSON(vn, b))
			}
		})
		return
	}
	// /bindings/{vhost}/e/{src}/{q|e}/{dst}[/{props}]
	if len(parts) < 5 || parts[1] != "e" || (parts[3] != "q" && parts[3] != "e") {
		writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
		return
	}
	v := a.vhost(w, parts[0])
	if v == nil {
		return
	}
	kind := router.ToQueue
	if parts[3] == "e" {
		kind = router.ToExchange
	}
	src, dst := parts[2], router.Dest{Kind: kind, Name: parts[4]}
	var matching []core.Binding
	for _, b := range v.Bindings() {
		if b.Source == src && b.Dest == dst {
			matching = append(matching, b)
		}
	}
	if len(parts) == 5 {
		switch r.Method {
		case http.MethodGet:
			out := []any{}
			for _, b := range matching {
				out = append(out, bindingJSON(parts[0], b))
			}
			writeJSON(w, http.StatusOK, out)
		case http.MethodPost:
			var body struct {
				RoutingKey string         `json:"routing_key"`
				Arguments  map[string]any `json:"arguments"`
			}
			if err := a.readBody(r, &body); err != nil {
				writeError(w, http.StatusBadRequest, "bad_request", "want a JSON body")
				return
			}
			args, err := jsonTable(body.Arguments)
			if err != nil {
				writeError(w, http.StatusBadRequest, "bad_request", err.Error())
				return
			}
			b := core.Binding{Source: src, Dest: dst, Key: body.RoutingKey, Args: args}
			if err := v.Bind(b, 0); err != nil {
				writeCoreError(w, err)
				return
			}
			w.Header().Set("Location", propertiesKey(b))
			w.WriteHeader(http.StatusCreated)
		default:
			methodNotAllowed(w, "GET", "POST")
		}
		return
	}
	props := parts[5]
	var found *core.Binding
	for i, b := range matching {
		if pk, _ := url.PathUnescape(propertiesKey(b)); propertiesKey(b) == props || pk == props {
			found = &matching[i]
			break
		}
	}
	if found == nil {
		writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
		return
	}
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, bindingJSON(parts[0], *found))
	case http.MethodDelete:
		if err := v.Unbind(*found, 0); err != nil {
			writeCoreError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		methodNotAllowed(w, "GET", "DELETE")
	}
}

// ---- publish and get ----

func (a *API) publish(w http.ResponseWriter, r *http.Request, v *router.VHost, exchange string) {
	var body struct {
		Properties      map[string]any `json:"properties"`
		RoutingKey      string         `json:"routing_key"`
		Payload         string         `json:"payload"`
		PayloadEncoding string         `json:"payload_encoding"`
	}
	if err := a.readBody(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "want a JSON body")
		return
	}
	payload := []byte(body.Payload)
	switch body.PayloadEncoding {
	case "", "string":
	case "base64":
		b, err := base64.StdEncoding.DecodeString(body.Payload)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", "payload is not base64")
			return
		}
		payload = b
	default:
		writeError(w, http.StatusBadRequest, "bad_request", "payload_encoding: want string or base64")
		return
	}
	if exchange == "amq.default" {
		exchange = ""
	}
	m := &core.Message{Exchange: exchange, RoutingKey: body.RoutingKey, Body: payload,
		Origin: core.Origin{Protocol: core.ProtoHTTP, VHost: v.Name()}}
	if err := propsFromJSON(body.Properties, m); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	res, err := v.Publish(m, router.PublishOptions{FromClient: true})
	if err != nil {
		writeCoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"routed": res.Routed > 0})
}

func (a *API) get(w http.ResponseWriter, r *http.Request, v *router.VHost, name string) {
	var body struct {
		Count    int    `json:"count"`
		AckMode  string `json:"ackmode"`
		Encoding string `json:"encoding"`
		Truncate int    `json:"truncate"`
	}
	if err := a.readBody(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "want a JSON body")
		return
	}
	if body.Count <= 0 {
		body.Count = 1
	}
	requeue := false
	switch body.AckMode {
	case "ack_requeue_true", "reject_requeue_true":
		requeue = true
	case "ack_requeue_false", "reject_requeue_false":
	default:
		writeError(w, http.StatusBadRequest, "bad_request", "ackmode: want ack_requeue_true, ack_requeue_false, reject_requeue_true or reject_requeue_false")
		return
	}
	q, err := v.Queue(name, 0)
	if err != nil {
		writeCoreError(w, err)
		return
	}
	if q.IsStream() {
		writeError(w, http.StatusBadRequest, "bad_request", "a stream is read with GET /api/streams/{vhost}/{stream}/records")
		return
	}
	out := []any{}
	var taken []queue.Delivery
	for range body.Count {
		d, remaining, ok := q.Get(false)
		if !ok {
			break
		}
		taken = append(taken, d)
		payload, enc := string(d.Msg.Body), "string"
		if body.Encoding == "base64" || !utf8.Valid(d.Msg.Body) {
			payload, enc = base64.StdEncoding.EncodeToString(d.Msg.Body), "base64"
		}
		if body.Truncate > 0 && len(payload) > body.Truncate {
			payload = payload[:body.Truncate]
		}
		out = append(out, map[string]any{"payload_bytes": len(d.Msg.Body), "redelivered": d.Redelivered, "exchange": d.Msg.Exchange,
			"routing_key": d.Msg.RoutingKey, "message_count": remaining, "properties": propsJSON(d.Msg), "payload": payload, "payload_encoding": enc})
	}
	// Requeue in reverse so the messages keep their order.
	for i := len(taken) - 1; i >= 0; i-- {
		if requeue {
			q.Reject(taken[i].ID, true)
		} else if body.AckMode == "reject_requeue_false" {
			q.Reject(taken[i].ID, false)
		} else {
			q.Ack(taken[i].ID)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// ---- definitions ----

type definitions struct {
	BourseVersion    string           `json:"bourse_version,omitempty"`
	RabbitVersion    string           `json:"rabbit_version,omitempty"`
	RabbitMQVersion  string           `json:"rabbitmq_version,omitempty"`
	ProductName      string           `json:"product_name,omitempty"`
	Users            []map[string]any `json:"users"`
	VHosts           []map[string]any `json:"vhosts"`
	Permissions      []map[string]any `json:"permissions"`
	TopicPermissions []map[string]any `json:"topic_permissions"`
	Parameters       []map[string]any `json:"parameters"`
	GlobalParameters []map[string]any `json:"global_parameters"`
	Policies         []map[string]any `json:"policies"`
	Queues           []defQueue       `json:"queues"`
	Exchanges        []defExchange    `json:"exchanges"`
	Bindings         []defBinding     `json:"bindings"`
}

type defQueue struct {
	Name       string         `json:"name"`
	VHost      string         `json:"vhost,omitempty"`
	Durable    bool           `json:"durable"`
	AutoDelete bool           `json:"auto_delete"`
	Arguments  map[string]any `json:"arguments"`
}

type defExchange struct {
	Name       string         `json:"name"`
	VHost      string         `json:"vhost,omitempty"`
	Type       string         `json:"type"`
	Durable    bool           `json:"durable"`
	AutoDelete bool           `json:"auto_delete"`
	Internal   bool           `json:"internal"`
	Arguments  map[string]any `json:"arguments"`
}

type defBinding struct {
	Source          string         `json:"source"`
	VHost           string         `json:"vhost,omitempty"`
	Destination     string         `json:"destination"`
	DestinationType string         `json:"destination_type"`
	RoutingKey      string         `json:"routing_key"`
	Arguments       map[string]any `json:"arguments"`
}

// export collects the durable topology of the named vhosts, as RabbitMQ's
// definitions: transient, exclusive and built-in objects are left out.
func (a *API) export(vhosts []string, withVHost bool) definitions {
	d := definitions{BourseVersion: a.o.Version, RabbitVersion: "3.13.0", RabbitMQVersion: "3.13.0", ProductName: "Bourse",
		Users: []map[string]any{}, VHosts: []map[string]any{}, Permissions: []map[string]any{}, TopicPermissions: []map[string]any{},
		Parameters: []map[string]any{}, GlobalParameters: []map[string]any{}, Policies: []map[string]any{},
		Queues: []defQueue{}, Exchanges: []defExchange{}, Bindings: []defBinding{}}
	vh := func(n string) string {
		if withVHost {
			return n
		}
		return ""
	}
	for _, vn := range vhosts {
		v, err := a.o.Broker.VHost(vn)
		if err != nil {
			continue
		}
		if withVHost {
			d.VHosts = append(d.VHosts, map[string]any{"name": vn})
		}
		for _, e := range v.Exchanges() {
			if !e.Durable || e.Name == "" || len(e.Name) > 4 && e.Name[:4] == "amq." {
				continue
			}
			d.Exchanges = append(d.Exchanges, defExchange{e.Name, vh(vn), e.Type, e.Durable, e.AutoDelete, e.Internal, tableJSON(e.Args)})
		}
		durableQ := map[string]bool{}
		for _, q := range v.Queues() {
			c := q.Config()
			if !c.Durable || c.Exclusive {
				continue
			}
			durableQ[c.Name] = true
			d.Queues = append(d.Queues, defQueue{c.Name, vh(vn), c.Durable, c.AutoDelete, tableJSON(c.Arguments)})
		}
		for _, b := range v.Bindings() {
			if b.Source == "" {
				continue // the default exchange's implicit bindings
			}
			dt := "queue"
			if b.Dest.Kind == router.ToExchange {
				dt = "exchange"
			} else if !durableQ[b.Dest.Name] {
				continue
			}
			d.Bindings = append(d.Bindings, defBinding{b.Source, vh(vn), b.Dest.Name, dt, b.Key, tableJSON(b.Args)})
		}
	}
	return d
}

// Import applies definitions: vhosts, users and permissions (for a whole
// broker's definitions), then exchanges, queues and bindings (declared as
// RabbitMQ's import does: an existing equivalent object is kept, an
// inequivalent one is an error). Policies are not supported.
func (a *API) Import(d definitions, onlyVHost string) error {
	vhostOf := func(s string) string {
		if onlyVHost != "" {
			return onlyVHost
		}
		if s == "" {
			return core.DefaultVHost
		}
		return s
	}
	if onlyVHost == "" {
		for _, v := range d.VHosts {
			name, _ := v["name"].(string)
			if name == "" {
				return fmt.Errorf("a vhost without a name")
			}
			if _, err := a.o.Broker.AddVHost(name); err != nil {
				return err
			}
		}
		if err := a.importUsers(d); err != nil {
			return err
		}
	}
	get := func(name string) (*router.VHost, error) {
		v, err := a.o.Broker.VHost(name)
		if err != nil {
			return a.o.Broker.AddVHost(name)
		}
		return v, nil
	}
	for _, e := range d.Exchanges {
		v, err := get(vhostOf(e.VHost))
		if err != nil {
			return err
		}
		args, err := jsonTable(e.Arguments)
		if err != nil {
			return fmt.Errorf("exchange %s: %w", e.Name, err)
		}
		if err := v.DeclareExchange(router.ExchangeDecl{ExchangeInfo: core.ExchangeInfo{Name: e.Name, Type: e.Type,
			Durable: e.Durable, AutoDelete: e.AutoDelete, Internal: e.Internal, Args: args}}); err != nil {
			return fmt.Errorf("exchange %s: %w", e.Name, err)
		}
	}
	for _, q := range d.Queues {
		v, err := get(vhostOf(q.VHost))
		if err != nil {
			return err
		}
		args, err := jsonTable(q.Arguments)
		if err != nil {
			return fmt.Errorf("queue %s: %w", q.Name, err)
		}
		if _, err := v.DeclareQueue(router.QueueDecl{QueueInfo: core.QueueInfo{Name: q.Name, Durable: q.Durable,
			AutoDelete: q.AutoDelete, Args: args}}); err != nil {
			return fmt.Errorf("queue %s: %w", q.Name, err)
		}
	}
	for _, b := range d.Bindings {
		v, err := get(vhostOf(b.VHost))
		if err != nil {
			return err
		}
		args, err := jsonTable(b.Arguments)
		if err != nil {
			return fmt.Errorf("binding %s → %s: %w", b.Source, b.Destination, err)
		}
		kind := router.ToQueue
		if b.DestinationType == "exchange" {
			kind = router.ToExchange
		}
		if err := v.Bind(core.Binding{Source: b.Source, Dest: router.Dest{Kind: kind, Name: b.Destination}, Key: b.RoutingKey, Args: args}, 0); err != nil {
			return fmt.Errorf("binding %s → %s: %w", b.Source, b.Destination, err)
		}
	}
	return nil
}

func (a *API) definitions(w http.ResponseWriter, r *http.Request, parts []string) {
	if len(parts) > 1 {
		writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
		return
	}
	only := ""
	if len(parts) == 1 {
		only = parts[0]
		if a.vhost(w, only) == nil {
			return
		}
	}
	switch r.Method {
	case http.MethodGet:
		names := a.o.Broker.VHosts()
		if only != "" {
			names = []string{only}
		}
		sort.Strings(names)
		d := a.export(names, only == "")
		if only == "" {
			a.exportUsers(&d, names)
		}
		writeJSON(w, http.StatusOK, d)
	case http.MethodPost:
		var d definitions
		if err := a.readBody(r, &d); err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", "definitions: "+err.Error())
			return
		}
		if err := a.Import(d, only); err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		methodNotAllowed(w, "GET", "POST")
	}
}

// ---- health checks ----

func (a *API) health(w http.ResponseWriter, r *http.Request, parts []string) {
	if r.Method != http.MethodGet || len(parts) < 2 || parts[0] != "checks" {
		writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
		return
	}
	ok := func() { writeJSON(w, http.StatusOK, map[string]string{"status": "ok"}) }
	fail := func(reason string, extra map[string]any) {
		body := map[string]any{"status": "failed", "reason": reason}
		for k, v := range extra {
			body[k] = v
		}
		writeJSON(w, http.StatusServiceUnavailable, body)
	}
	switch parts[1] {
	case "alarms", "local-alarms":
		var alarms []map[string]string
		if a.o.Node != nil {
			mem, disk := a.o.Node.Alarms()
			if mem {
				alarms = append(alarms, map[string]string{"node": a.node, "resource": "memory"})
			}
			if disk {
				alarms = append(alarms, map[string]string{"node": a.node, "resource": "disk"})
			}
		}
		if len(alarms) > 0 {
			fail("resource alarm(s) in effect", map[string]any{"alarms": alarms})
			return
		}
		ok()
	case "virtual-hosts":
		ok() // every vhost is served by this node's router
	case "node-is-quorum-critical", "node-is-mirror-sync-critical", "certificate-expiration":
		ok() // no replicas on a single node; TLS certificates are reloaded from disk
	case "port-listener":
		if len(parts) != 3 {
			writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
			return
		}
		for _, l := range a.o.Listeners() {
			if _, port, _ := net.SplitHostPort(l.Addr); port == parts[2] {
				ok()
				return
			}
		}
		fail("no listener on port "+parts[2], map[string]any{"port": parts[2]})
		return
	case "protocol-listener":
		if len(parts) != 3 {
			writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
			return
		}
		want := parts[2]
		aliases := map[string]string{"amqp091": "amqp", "amqp0.9.1": "amqp", "amqp0-9-1": "amqp", "web-stomp": "http", "web-mqtt": "http", "https": "https"}
		if a, ok := aliases[want]; ok {
			want = a
		}
		for _, l := range a.o.Listeners() {
			if l.Protocol == want {
				ok()
				return
			}
		}
		fail("no listener for protocol "+parts[2], map[string]any{"protocol": parts[2]})
		return
	default:
		writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
	}
}

// aliveness declares a queue, publishes a message to it and gets it back,
// as RabbitMQ's /api/aliveness-test.
func (a *API) aliveness(w http.ResponseWriter, vhost string) {
	v := a.vhost(w, vhost)
	if v == nil {
		return
	}
	if _, err := v.DeclareQueue(router.QueueDecl{QueueInfo: core.QueueInfo{Name: "aliveness-test"}}); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "failed", "reason": err.Error()})
		return
	}
	token := hex.EncodeToString([]byte(time.Now().String()))
	if _, err := v.Publish(&core.Message{RoutingKey: "aliveness-test", Body: []byte(token)}, router.PublishOptions{}); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "failed", "reason": err.Error()})
		return
	}
	q, err := v.Queue("aliveness-test", 0)
	if err == nil {
		for {
			d, _, ok := q.Get(true)
			if !ok {
				break
			}
			if string(d.Msg.Body) == token {
				writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
				return
			}
		}
	}
	writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "failed", "reason": "the test message did not come back"})
}
