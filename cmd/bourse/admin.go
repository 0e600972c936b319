package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// apiClient talks to the management API of a running broker.
type apiClient struct {
	url, user, pass string
	http            *http.Client
}

func addAPIFlags(cmd *cobra.Command, c *apiClient) {
	f := cmd.PersistentFlags()
	f.StringVar(&c.url, "url", "http://127.0.0.1:15672", "the broker's HTTP listener")
	f.StringVar(&c.user, "user", "guest", "user name")
	f.StringVar(&c.pass, "pass", "guest", "password")
}

func (c *apiClient) do(method, path string, body any) ([]byte, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, strings.TrimRight(c.url, "/")+"/api/"+path, r)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(c.user, c.pass)
	req.Header.Set("Content-Type", "application/json")
	if c.http == nil {
		c.http = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the broker at %s (is it running? --url): %w", c.url, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		var e struct{ Reason string }
		_ = json.Unmarshal(out, &e)
		if e.Reason == "" {
			e.Reason = strings.TrimSpace(string(out))
		}
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, e.Reason)
	}
	return out, nil
}

func newDefinitionsCmd() *cobra.Command {
	c := &apiClient{}
	cmd := &cobra.Command{Use: "definitions", Short: "export or import the broker's definitions (RabbitMQ's JSON format)"}
	addAPIFlags(cmd, c)
	var vhost string
	cmd.PersistentFlags().StringVar(&vhost, "vhost", "", "only this vhost (default: all)")
	path := func() string {
		if vhost == "" {
			return "definitions"
		}
		return "definitions/" + url.PathEscape(vhost)
	}
	cmd.AddCommand(&cobra.Command{
		Use: "export [FILE]", Short: "write the definitions as JSON to FILE (default: standard output)", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := c.do("GET", path(), nil)
			if err != nil {
				return err
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, b, "", "  "); err != nil {
				return err
			}
			if len(args) == 0 || args[0] == "-" {
				_, err = cmd.OutOrStdout().Write(pretty.Bytes())
				return err
			}
			return os.WriteFile(args[0], pretty.Bytes(), 0o600)
		},
	}, &cobra.Command{
		Use: "import FILE", Short: "import definitions from FILE (- for standard input)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var b []byte
			var err error
			if args[0] == "-" {
				b, err = io.ReadAll(cmd.InOrStdin())
			} else {
				b, err = os.ReadFile(args[0])
			}
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if err := json.Unmarshal(b, &raw); err != nil {
				return fmt.Errorf("%s is not JSON: %w", args[0], err)
			}
			if _, err := c.do("POST", path(), raw); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "definitions imported")
			return nil
		},
	})
	return cmd
}

func newListCmd() *cobra.Command {
	c := &apiClient{}
	var asJSON bool
	var vhost string
	cmd := &cobra.Command{
		Use: "list queues|streams|exchanges|bindings|vhosts|connections|users|permissions", Short: "list broker objects", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			what := args[0]
			path := map[string]string{"queues": "queues", "streams": "queues", "exchanges": "exchanges", "bindings": "bindings",
				"vhosts": "vhosts", "connections": "connections", "users": "users", "permissions": "permissions"}[what]
			if path == "" {
				return fmt.Errorf("list %s: want queues, streams, exchanges, bindings, vhosts, connections, users or permissions", what)
			}
			if vhost != "" && (what == "connections") {
				path = "vhosts/" + url.PathEscape(vhost) + "/connections"
			} else if vhost != "" && what != "vhosts" && what != "users" && what != "permissions" {
				path += "/" + url.PathEscape(vhost)
			}
			b, err := c.do("GET", path, nil)
			if err != nil {
				return err
			}
			var rows []map[string]any
			if err := json.Unmarshal(b, &rows); err != nil {
				return err
			}
			if what == "streams" || what == "queues" {
				keep := rows[:0]
				for _, r := range rows {
					if (r["type"] == "stream") == (what == "streams") {
						keep = append(keep, r)
					}
				}
				rows = keep
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			cols := map[string][]string{
				"queues":      {"vhost", "name", "type", "durable", "messages_ready", "messages_unacknowledged", "consumers"},
				"streams":     {"vhost", "name", "messages", "consumers"},
				"exchanges":   {"vhost", "name", "type", "durable", "internal"},
				"bindings":    {"vhost", "source", "destination_type", "destination", "routing_key"},
				"vhosts":      {"name", "messages"},
				"connections": {"name", "protocol", "user", "vhost", "peer_host", "channels"},
				"users":       {"name", "tags"},
				"permissions": {"user", "vhost", "configure", "write", "read"},
			}[what]
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, strings.ToUpper(strings.Join(cols, "\t")))
			sort.SliceStable(rows, func(i, j int) bool {
				return fmt.Sprint(rows[i]["name"], rows[i]["user"]) < fmt.Sprint(rows[j]["name"], rows[j]["user"])
			})
			for _, r := range rows {
				vals := make([]string, len(cols))
				for i, k := range cols {
					vals[i] = fmt.Sprint(r[k])
					if list, ok := r[k].([]any); ok {
						parts := make([]string, len(list))
						for i, x := range list {
							parts[i] = fmt.Sprint(x)
						}
						vals[i] = strings.Join(parts, ",")
					}
					if r[k] == nil {
						vals[i] = ""
					}
				}
				fmt.Fprintln(tw, strings.Join(vals, "\t"))
			}
			return tw.Flush()
		},
	}
	addAPIFlags(cmd, c)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&vhost, "vhost", "", "only this vhost")
	return cmd
}

func newDeclareCmd() *cobra.Command {
	c := &apiClient{}
	cmd := &cobra.Command{Use: "declare", Short: "declare a queue, stream, exchange or binding"}
	addAPIFlags(cmd, c)
	var vhost string
	var args []string
	cmd.PersistentFlags().StringVar(&vhost, "vhost", "/", "virtual host")
	cmd.PersistentFlags().StringArrayVar(&args, "arg", nil, "argument key=value (integers and true/false are typed); repeatable")
	parseArgs := func() (map[string]any, error) {
		out := map[string]any{}
		for _, a := range args {
			k, v, ok := strings.Cut(a, "=")
			if !ok {
				return nil, fmt.Errorf("--arg %q: want key=value", a)
			}
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				out[k] = n
			} else if b, err := strconv.ParseBool(v); err == nil {
				out[k] = b
			} else {
				out[k] = v
			}
		}
		return out, nil
	}
	var qtype string
	var transient bool
	q := &cobra.Command{
		Use: "queue NAME", Short: "declare a queue (--type stream for a stream)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			m, err := parseArgs()
			if err != nil {
				return err
			}
			if qtype != "" {
				m["x-queue-type"] = qtype
			}
			_, err = c.do("PUT", "queues/"+url.PathEscape(vhost)+"/"+url.PathEscape(a[0]), map[string]any{"durable": !transient, "arguments": m})
			if err == nil {
				fmt.Fprintf(cmd.OutOrStdout(), "queue %s declared\n", a[0])
			}
			return err
		},
	}
	q.Flags().StringVar(&qtype, "type", "", "classic (default), quorum or stream")
	q.Flags().BoolVar(&transient, "transient", false, "not durable")
	var xtype string
	x := &cobra.Command{
		Use: "exchange NAME", Short: "declare an exchange", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			m, err := parseArgs()
			if err != nil {
				return err
			}
			_, err = c.do("PUT", "exchanges/"+url.PathEscape(vhost)+"/"+url.PathEscape(a[0]), map[string]any{"type": xtype, "durable": true, "arguments": m})
			if err == nil {
				fmt.Fprintf(cmd.OutOrStdout(), "exchange %s declared\n", a[0])
			}
			return err
		},
	}
	x.Flags().StringVar(&xtype, "type", "direct", "direct, fanout, topic or headers")
	var key, destType string
	b := &cobra.Command{
		Use: "binding SOURCE DESTINATION", Short: "bind a queue (or, with --destination-type exchange, an exchange) to an exchange", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, a []string) error {
			m, err := parseArgs()
			if err != nil {
				return err
			}
			d := map[string]string{"queue": "q", "exchange": "e"}[destType]
			if d == "" {
				return fmt.Errorf("--destination-type: want queue or exchange")
			}
			_, err = c.do("POST", "bindings/"+url.PathEscape(vhost)+"/e/"+url.PathEscape(a[0])+"/"+d+"/"+url.PathEscape(a[1]), map[string]any{"routing_key": key, "arguments": m})
			if err == nil {
				fmt.Fprintf(cmd.OutOrStdout(), "%s bound to %s with key %q\n", a[1], a[0], key)
			}
			return err
		},
	}
	b.Flags().StringVar(&key, "key", "", "routing key")
	b.Flags().StringVar(&destType, "destination-type", "queue", "queue or exchange")
	cmd.AddCommand(q, x, b)
	return cmd
}

func newDeleteCmd() *cobra.Command {
	c := &apiClient{}
	cmd := &cobra.Command{Use: "delete queue|exchange NAME", Short: "delete a queue (or stream) or an exchange", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, a []string) error {
			kind := map[string]string{"queue": "queues", "stream": "queues", "exchange": "exchanges"}[a[0]]
			if kind == "" {
				return fmt.Errorf("delete %s: want queue or exchange", a[0])
			}
			vhost, _ := cmd.Flags().GetString("vhost")
			if _, err := c.do("DELETE", kind+"/"+url.PathEscape(vhost)+"/"+url.PathEscape(a[1]), nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s deleted\n", a[0], a[1])
			return nil
		}}
	addAPIFlags(cmd, c)
	cmd.Flags().String("vhost", "/", "virtual host")
	return cmd
}

func newStatusCmd() *cobra.Command {
	c := &apiClient{}
	var asJSON bool
	cmd := &cobra.Command{Use: "status", Short: "show the broker's node, listeners, totals and alarms", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := c.do("GET", "overview", nil)
			if err != nil {
				return err
			}
			nb, err := c.do("GET", "nodes", nil)
			if err != nil {
				return err
			}
			var ov struct {
				Node         string           `json:"node"`
				Version      string           `json:"product_version"`
				ObjectTotals map[string]int   `json:"object_totals"`
				QueueTotals  map[string]int   `json:"queue_totals"`
				Listeners    []map[string]any `json:"listeners"`
			}
			var nodes []map[string]any
			if err := json.Unmarshal(b, &ov); err != nil {
				return err
			}
			if err := json.Unmarshal(nb, &nodes); err != nil || len(nodes) == 0 {
				return fmt.Errorf("unexpected /api/nodes answer")
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"overview": json.RawMessage(b), "node": nodes[0]})
			}
			n := nodes[0]
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "node        %s (Bourse %s), up %.0f s\n", ov.Node, ov.Version, toF(n["uptime"])/1000)
			fmt.Fprintf(w, "memory      %.0f MiB of %.0f MiB limit%s\n", toF(n["mem_used"])/(1<<20), toF(n["mem_limit"])/(1<<20), alarmText(n["mem_alarm"]))
			fmt.Fprintf(w, "disk free   %.0f MiB (limit %.0f MiB)%s\n", toF(n["disk_free"])/(1<<20), toF(n["disk_free_limit"])/(1<<20), alarmText(n["disk_free_alarm"]))
			fmt.Fprintf(w, "objects     %d connections, %d queues, %d exchanges, %d consumers\n",
				ov.ObjectTotals["connections"], ov.ObjectTotals["queues"], ov.ObjectTotals["exchanges"], ov.ObjectTotals["consumers"])
			fmt.Fprintf(w, "messages    %d ready, %d unacknowledged\n", ov.QueueTotals["messages_ready"], ov.QueueTotals["messages_unacknowledged"])
			for _, l := range ov.Listeners {
				fmt.Fprintf(w, "listener    %-10v %v:%v\n", l["protocol"], l["ip_address"], l["port"])
			}
			return nil
		}}
	addAPIFlags(cmd, c)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func toF(v any) float64 {
	f, _ := v.(float64)
	return f
}

func alarmText(v any) string {
	if b, _ := v.(bool); b {
		return "  ALARM: publishers blocked"
	}
	return ""
}

func newPublishCmd() *cobra.Command {
	c := &apiClient{}
	var vhost, exchange, key string
	var props []string
	cmd := &cobra.Command{Use: "publish BODY", Short: "publish a message through the API (for tests and debugging)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			if exchange == "" {
				exchange = "amq.default"
			}
			p := map[string]any{}
			for _, kv := range props {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("--property %q: want key=value", kv)
				}
				if n, err := strconv.Atoi(v); err == nil && (k == "delivery_mode" || k == "priority") {
					p[k] = n
				} else {
					p[k] = v
				}
			}
			b, err := c.do("POST", "exchanges/"+url.PathEscape(vhost)+"/"+url.PathEscape(exchange)+"/publish",
				map[string]any{"routing_key": key, "payload": a[0], "payload_encoding": "string", "properties": p})
			if err != nil {
				return err
			}
			var res struct{ Routed bool }
			_ = json.Unmarshal(b, &res)
			if !res.Routed {
				return fmt.Errorf("published, but no queue took it (exchange %q, key %q)", exchange, key)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "routed")
			return nil
		}}
	addAPIFlags(cmd, c)
	cmd.Flags().StringVar(&vhost, "vhost", "/", "virtual host")
	cmd.Flags().StringVar(&exchange, "exchange", "", "exchange (default: the default exchange)")
	cmd.Flags().StringVar(&key, "key", "", "routing key")
	cmd.Flags().StringArrayVar(&props, "property", nil, "property key=value (content_type, message_id, delivery_mode …); repeatable")
	return cmd
}

func newGetCmd() *cobra.Command {
	c := &apiClient{}
	var vhost string
	var count int
	var ack bool
	cmd := &cobra.Command{Use: "get QUEUE", Short: "take messages from a queue through the API (requeued unless --ack)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			mode := "ack_requeue_true"
			if ack {
				mode = "ack_requeue_false"
			}
			b, err := c.do("POST", "queues/"+url.PathEscape(vhost)+"/"+url.PathEscape(a[0])+"/get",
				map[string]any{"count": count, "ackmode": mode, "encoding": "auto"})
			if err != nil {
				return err
			}
			var msgs []map[string]any
			if err := json.Unmarshal(b, &msgs); err != nil {
				return err
			}
			for _, m := range msgs {
				fmt.Fprintf(cmd.OutOrStdout(), "%v\t%v\n", m["routing_key"], m["payload"])
			}
			if len(msgs) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "(queue empty)")
			}
			return nil
		}}
	addAPIFlags(cmd, c)
	cmd.Flags().StringVar(&vhost, "vhost", "/", "virtual host")
	cmd.Flags().IntVarP(&count, "count", "n", 1, "how many")
	cmd.Flags().BoolVar(&ack, "ack", false, "remove them (default: requeue)")
	return cmd
}

// newHealthcheckCmd is for container health checks (the runtime image has
// no curl): it exits 0 when the broker answers its health endpoint.
func newHealthcheckCmd() *cobra.Command {
	var u string
	cmd := &cobra.Command{Use: "healthcheck", Short: "exit 0 when the broker's /healthz answers (for container health checks)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := &http.Client{Timeout: 3 * time.Second}
			resp, err := c.Get(u)
			if err != nil {
				return fmt.Errorf("unhealthy: %w", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("unhealthy: %s", resp.Status)
			}
			return nil
		}}
	cmd.Flags().StringVar(&u, "url", "http://127.0.0.1:15672/healthz", "health endpoint")
	return cmd
}
