package mgmt

import (
	"net"
	"net/http"
	"strconv"

	"github.com/bourse-mq/bourse/router"
)

// channelJSON is RabbitMQ's channel object; the name is the connection's
// followed by " (number)".
func (a *API) channelJSON(c *router.Conn, ch router.ChannelStats) map[string]any {
	peerHost, peerPort, _ := net.SplitHostPort(c.Info.Peer)
	pp, _ := strconv.Atoi(peerPort)
	return map[string]any{"name": c.Info.Name + " (" + strconv.Itoa(ch.Number) + ")", "number": ch.Number, "node": a.node,
		"user": c.Info.User, "vhost": c.Info.VHost, "state": "running", "consumer_count": ch.Consumers,
		"messages_unacknowledged": ch.Unacked, "global_prefetch_count": ch.GlobalPrefetch,
		"confirm": ch.Confirm, "transactional": ch.Transactional,
		"connection_details": map[string]any{"name": c.Info.Name, "peer_host": peerHost, "peer_port": pp}}
}

// channels serves /api/channels[/{name}], /api/vhosts/{v}/channels and
// /api/connections/{name}/channels: AMQP channels (MQTT and STOMP
// connections have none to list). Users without the monitoring tag see
// their own connections' channels.
func (a *API) channels(w http.ResponseWriter, r *http.Request, vhost, conn, name string) {
	p, ok := principalOf(r)
	out := []any{}
	for _, c := range a.o.Broker.Conns() {
		if ok && !p.monitor() && c.Info.User != p.name {
			continue
		}
		if (vhost != "" && c.Info.VHost != vhost) || (conn != "" && c.Info.Name != conn) {
			continue
		}
		for _, ch := range c.Stats().ChannelList {
			j := a.channelJSON(c, ch)
			if name != "" {
				if j["name"] == name {
					writeJSON(w, http.StatusOK, j)
					return
				}
				continue
			}
			out = append(out, j)
		}
	}
	if name != "" {
		writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
		return
	}
	writeJSON(w, http.StatusOK, out)
}
