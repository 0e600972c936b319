// Package mgmt is Bourse's management HTTP API, shaped like RabbitMQ's
// management plugin where the concepts match, so that its clients (the
// rabbitmqadmin habits, rabbit-hole, dashboards) work unchanged: overview,
// nodes, vhosts, exchanges, queues (streams included), bindings,
// definitions export and import, publish and get for debugging, whoami and
// the health checks. Every /api/ path needs HTTP Basic credentials; writes
// need the administrator tag. Errors are JSON {"error": …, "reason": …}.
package mgmt

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/bourse-mq/bourse/auth"
	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/router"
)

// Listener is one of the broker's bound listeners, for /api/overview and
// the listener health checks.
type Listener struct {
	Protocol string // amqp, mqtt, stomp, http, amqp/ssl, mqtt/ssl, stomp/ssl, https
	Addr     string // host:port
}

// Node is what the node reports about its resources.
type Node interface {
	Alarms() (memory, disk bool)
	Used() int64
	Free() int64
	Limits() (memory, diskFree int64)
}

// Options configure the API.
type Options struct {
	Broker    *router.Broker
	Users     *auth.Store
	Node      Node
	Listeners func() []Listener
	Version   string
	// MaxBody bounds request bodies (definitions imports) [64 MiB].
	MaxBody int64
}

// API is the management API handler.
type API struct {
	o       Options
	rates   rateSampler
	node    string
	started time.Time
}

// New returns the API; mount it at /api/.
func New(o Options) *API {
	if o.MaxBody <= 0 {
		o.MaxBody = 64 << 20
	}
	if o.Listeners == nil {
		o.Listeners = func() []Listener { return nil }
	}
	host, _ := os.Hostname()
	return &API{o: o, node: "bourse@" + host, started: time.Now()}
}

// principal is the user of one request. As in RabbitMQ: administrator may
// do everything; monitoring may read everything; management and
// policymaker users see and act on the vhosts they have permissions in,
// within those permissions; users without these tags may not use the API.
type principal struct {
	name string
	tags []string
	p    *auth.Principal
}

func (p principal) admin() bool { return slices.Contains(p.tags, "administrator") }

func (p principal) monitor() bool { return p.admin() || slices.Contains(p.tags, "monitoring") }

func (p principal) canRead() bool {
	return p.monitor() || slices.Contains(p.tags, "management") || slices.Contains(p.tags, "policymaker")
}

// sees reports whether the user may see vhost's objects.
func (p principal) sees(vhost string) bool {
	return p.monitor() || p.p.CheckVHost(vhost) == nil
}

// ServeHTTP authenticates, then routes on the escaped path (vhost "/" is
// "%2F" and must not split a path).
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	if !ok {
		w.Header().Set("WWW-Authenticate", `Basic realm="Bourse Management"`)
		writeError(w, http.StatusUnauthorized, "not_authorised", "Not authorised")
		return
	}
	ap, err := a.o.Users.Authenticate(user, pass, auth.Addr(r.RemoteAddr))
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Basic realm="Bourse Management"`)
		writeError(w, http.StatusUnauthorized, "not_authorised", "Login failed")
		return
	}
	p := principal{ap.Name, ap.Tags, ap}
	if !p.canRead() {
		writeError(w, http.StatusForbidden, "not_authorised", "Not management user")
		return
	}
	parts := splitEscaped(r.URL.EscapedPath())
	if parts == nil {
		writeError(w, http.StatusBadRequest, "bad_request", "bad escape in path")
		return
	}
	if err := a.authorize(r, p, parts); err != nil {
		writeError(w, http.StatusForbidden, "access_refused", err.Error())
		return
	}
	a.dispatch(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)), p, parts)
}

// splitEscaped splits /api/a/b%2Fc into ["a", "b/c"].
func splitEscaped(p string) []string {
	p = strings.TrimPrefix(strings.TrimSuffix(p, "/"), "/api")
	p = strings.TrimPrefix(p, "/")
	if p == "" {
		return []string{}
	}
	parts := strings.Split(p, "/")
	for i, s := range parts {
		u, err := url.PathUnescape(s)
		if err != nil {
			return nil
		}
		parts[i] = u
	}
	return parts
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, errName, reason string) {
	writeJSON(w, code, map[string]string{"error": errName, "reason": reason})
}

// writeCoreError maps a core error kind to an HTTP status.
func writeCoreError(w http.ResponseWriter, err error) {
	switch core.KindOf(err) {
	case core.NotFound:
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case core.PreconditionFailed, core.InvalidArgument, core.CommandInvalid, core.FrameError:
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
	case core.AccessRefused, core.NotAllowed:
		writeError(w, http.StatusForbidden, "access_refused", err.Error())
	case core.ResourceLocked:
		writeError(w, http.StatusConflict, "resource_locked", err.Error())
	case core.NotImplemented:
		writeError(w, http.StatusNotImplemented, "not_implemented", err.Error())
	default:
		writeError(w, http.StatusInternalServerError, "internal_error", err.Error())
	}
}

func methodNotAllowed(w http.ResponseWriter, allow ...string) {
	w.Header().Set("Allow", strings.Join(allow, ", "))
	writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "Method not allowed")
}

// readBody decodes a JSON request body into v (an empty body is {}).
func (a *API) readBody(r *http.Request, v any) error {
	b, err := io.ReadAll(io.LimitReader(r.Body, a.o.MaxBody+1))
	if err != nil {
		return err
	}
	if int64(len(b)) > a.o.MaxBody {
		return fmt.Errorf("request body above %d bytes", a.o.MaxBody)
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	return dec.Decode(v)
}

func (a *API) vhost(w http.ResponseWriter, name string) *router.VHost {
	v, err := a.o.Broker.VHost(name)
	if err != nil {
		writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
		return nil
	}
	return v
}
