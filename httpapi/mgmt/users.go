package mgmt

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/bourse-mq/bourse/auth"
	"github.com/bourse-mq/bourse/core"
)

type principalKey struct{}

func principalOf(r *http.Request) (principal, bool) {
	p, ok := r.Context().Value(principalKey{}).(principal)
	return p, ok
}

var errAdminOnly = errors.New("administrator tag required")

// authorize applies the tag and permission rules to one request before it
// is dispatched (403 access_refused on refusal). Listings are filtered
// later, by vhostNames and the connection listings.
func (a *API) authorize(r *http.Request, p principal, parts []string) error {
	if p.admin() || len(parts) == 0 {
		return nil
	}
	get := r.Method == http.MethodGet || r.Method == http.MethodHead
	switch parts[0] {
	case "users", "permissions", "topic-permissions":
		return errAdminOnly
	case "definitions":
		if len(parts) == 1 || !get {
			return errAdminOnly // the whole broker's definitions hold password hashes
		}
	case "vhosts":
		if !get {
			return errAdminOnly
		}
	}
	vhostScoped := map[string]bool{"exchanges": true, "queues": true, "bindings": true, "consumers": true,
		"vhosts": true, "aliveness-test": true, "definitions": true}
	if vhostScoped[parts[0]] && len(parts) >= 2 && !p.sees(parts[1]) {
		return core.Errorf(core.AccessRefused, "access to vhost '%s' refused for user '%s'", parts[1], p.name)
	}
	if get {
		return nil
	}
	// Writes by non-administrators, within their vhost permissions, as
	// RabbitMQ's management plugin checks them.
	check := func(vhost string, r auth.Resource, name string, op auth.Op) error {
		return p.p.Check(vhost, r, name, op)
	}
	n := len(parts)
	switch {
	case parts[0] == "exchanges" && n == 3 && (r.Method == http.MethodPut || r.Method == http.MethodDelete):
		return check(parts[1], auth.Exchange, parts[2], auth.Configure)
	case parts[0] == "exchanges" && n == 4 && parts[3] == "publish":
		return check(parts[1], auth.Exchange, parts[2], auth.Write)
	case parts[0] == "queues" && n == 3 && (r.Method == http.MethodPut || r.Method == http.MethodDelete):
		return check(parts[1], auth.Queue, parts[2], auth.Configure)
	case parts[0] == "queues" && n == 4 && (parts[3] == "contents" || parts[3] == "get"):
		return check(parts[1], auth.Queue, parts[2], auth.Read)
	case parts[0] == "bindings" && n >= 6 && parts[2] == "e" && (parts[4] == "q" || parts[4] == "e"):
		dst := auth.Queue
		if parts[4] == "e" {
			dst = auth.Exchange
		}
		if err := check(parts[1], dst, parts[5], auth.Write); err != nil {
			return err
		}
		return check(parts[1], auth.Exchange, parts[3], auth.Read)
	case parts[0] == "connections" && n == 2 && r.Method == http.MethodDelete:
		for _, c := range a.o.Broker.Conns() {
			if c.Info.Name == parts[1] && c.Info.User == p.name {
				return nil // one's own connection
			}
		}
		return errAdminOnly
	}
	return errAdminOnly
}

// visible filters vhost names down to those the request's user sees.
func visible(r *http.Request, names []string) []string {
	p, ok := principalOf(r)
	if !ok || p.monitor() {
		return names
	}
	out := names[:0:0]
	for _, n := range names {
		if p.sees(n) {
			out = append(out, n)
		}
	}
	return out
}

// ---- users and permissions (administrators only) ----

func userJSON(u auth.User) map[string]any {
	return map[string]any{"name": u.Name, "password_hash": u.PasswordHash, "hashing_algorithm": u.Algorithm,
		"tags": u.Tags, "limits": map[string]any{}}
}

// tagsOf reads RabbitMQ's "tags": a comma-separated string (older API) or a
// list (3.9+).
func tagsOf(v any) ([]string, error) {
	switch t := v.(type) {
	case nil:
		return nil, nil
	case string:
		return strings.Split(t, ","), nil
	case []any:
		out := make([]string, 0, len(t))
		for _, x := range t {
			s, ok := x.(string)
			if !ok {
				return nil, errors.New("tags: want strings")
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, errors.New("tags: want a string or a list of strings")
}

func (a *API) users(w http.ResponseWriter, r *http.Request, parts []string) {
	st := a.o.Users
	switch {
	case len(parts) == 0 && r.Method == http.MethodGet:
		out := []any{}
		for _, u := range st.Users() {
			out = append(out, userJSON(u))
		}
		writeJSON(w, http.StatusOK, out)
	case len(parts) == 1:
		name := parts[0]
		switch r.Method {
		case http.MethodGet:
			u, ok := st.User(name)
			if !ok {
				writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
				return
			}
			writeJSON(w, http.StatusOK, userJSON(u))
		case http.MethodPut:
			var body map[string]any
			if err := a.readBody(r, &body); err != nil {
				writeError(w, http.StatusBadRequest, "bad_request", err.Error())
				return
			}
			tags, err := tagsOf(body["tags"])
			if err != nil {
				writeError(w, http.StatusBadRequest, "bad_request", err.Error())
				return
			}
			_, existed := st.User(name)
			pass, hasPass := body["password"].(string)
			hash, hasHash := body["password_hash"].(string)
			switch {
			case hasPass:
				err = st.PutUser(name, pass, tags)
			case hasHash:
				algo, _ := body["hashing_algorithm"].(string)
				err = st.PutUserHash(auth.User{Name: name, PasswordHash: hash, Algorithm: algo, Tags: tags})
			case existed:
				// Tags only: keep the password.
				u, _ := st.User(name)
				u.Tags = tags
				err = st.PutUserHash(u)
			default:
				writeError(w, http.StatusBadRequest, "bad_request", "a new user needs password or password_hash (\"\" for certificate-only users)")
				return
			}
			if err != nil {
				writeCoreError(w, err)
				return
			}
			if existed {
				w.WriteHeader(http.StatusNoContent)
			} else {
				w.WriteHeader(http.StatusCreated)
			}
		case http.MethodDelete:
			if err := st.DeleteUser(name); err != nil {
				writeCoreError(w, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		default:
			methodNotAllowed(w, "GET", "PUT", "DELETE")
		}
	case len(parts) == 2 && (parts[1] == "permissions" || parts[1] == "topic-permissions") && r.Method == http.MethodGet:
		if _, ok := st.User(parts[0]); !ok {
			writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
			return
		}
		out := []any{}
		if parts[1] == "topic-permissions" {
			for _, pm := range st.TopicPermissions() {
				if pm.User == parts[0] {
					out = append(out, topicPermJSON(pm))
				}
			}
		} else {
			for _, pm := range st.Permissions() {
				if pm.User == parts[0] {
					out = append(out, permJSON(pm))
				}
			}
		}
		writeJSON(w, http.StatusOK, out)
	default:
		writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
	}
}

func permJSON(p auth.Permission) map[string]any {
	return map[string]any{"user": p.User, "vhost": p.VHost, "configure": p.Configure, "write": p.Write, "read": p.Read}
}

func topicPermJSON(p auth.TopicPermission) map[string]any {
	return map[string]any{"user": p.User, "vhost": p.VHost, "exchange": p.Exchange, "write": p.Write, "read": p.Read}
}

// permissions serves /api/permissions[/{vhost}/{user}] and
// /api/topic-permissions[/{vhost}/{user}].
func (a *API) permissions(w http.ResponseWriter, r *http.Request, parts []string, topic bool) {
	st := a.o.Users
	if len(parts) == 0 {
		if r.Method != http.MethodGet {
			methodNotAllowed(w, "GET")
			return
		}
		out := []any{}
		if topic {
			for _, p := range st.TopicPermissions() {
				out = append(out, topicPermJSON(p))
			}
		} else {
			for _, p := range st.Permissions() {
				out = append(out, permJSON(p))
			}
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	if len(parts) != 2 {
		writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
		return
	}
	vhost, user := parts[0], parts[1]
	if a.vhost(w, vhost) == nil {
		return
	}
	switch r.Method {
	case http.MethodGet:
		out := []any{}
		if topic {
			for _, p := range st.TopicPermissions() {
				if p.VHost == vhost && p.User == user {
					out = append(out, topicPermJSON(p))
				}
			}
			writeJSON(w, http.StatusOK, out)
			return
		}
		for _, p := range st.Permissions() {
			if p.VHost == vhost && p.User == user {
				writeJSON(w, http.StatusOK, permJSON(p))
				return
			}
		}
		writeError(w, http.StatusNotFound, "not_found", "Object Not Found")
	case http.MethodPut:
		var body struct {
			Configure *string `json:"configure"`
			Write     *string `json:"write"`
			Read      *string `json:"read"`
			Exchange  string  `json:"exchange"`
		}
		if err := a.readBody(r, &body); err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		str := func(p *string) string {
			if p == nil {
				return ""
			}
			return *p
		}
		var err error
		if topic {
			if body.Exchange == "" {
				writeError(w, http.StatusBadRequest, "bad_request", "exchange is required")
				return
			}
			err = st.SetTopicPermissions(auth.TopicPermission{User: user, VHost: vhost, Exchange: body.Exchange, Write: str(body.Write), Read: str(body.Read)})
		} else {
			if body.Configure == nil || body.Write == nil || body.Read == nil {
				writeError(w, http.StatusBadRequest, "bad_request", "configure, write and read are required")
				return
			}
			err = st.SetPermissions(auth.Permission{User: user, VHost: vhost, Configure: *body.Configure, Write: *body.Write, Read: *body.Read})
		}
		if err != nil {
			writeCoreError(w, err)
			return
		}
		w.WriteHeader(http.StatusCreated)
	case http.MethodDelete:
		var err error
		if topic {
			err = st.ClearTopicPermissions(user, vhost, r.URL.Query().Get("exchange"))
		} else {
			err = st.ClearPermissions(user, vhost)
		}
		if err != nil {
			writeCoreError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		methodNotAllowed(w, "GET", "PUT", "DELETE")
	}
}

// exportUsers adds users and permissions (of the named vhosts) to d.
func (a *API) exportUsers(d *definitions, vhosts []string) {
	in := map[string]bool{}
	for _, v := range vhosts {
		in[v] = true
	}
	for _, u := range a.o.Users.Users() {
		d.Users = append(d.Users, userJSON(u))
	}
	for _, p := range a.o.Users.Permissions() {
		if in[p.VHost] {
			d.Permissions = append(d.Permissions, permJSON(p))
		}
	}
	for _, p := range a.o.Users.TopicPermissions() {
		if in[p.VHost] {
			d.TopicPermissions = append(d.TopicPermissions, topicPermJSON(p))
		}
	}
	sort.Slice(d.Users, func(i, j int) bool { return d.Users[i]["name"].(string) < d.Users[j]["name"].(string) })
}

// importUsers applies users, then permissions, from definitions (RabbitMQ's
// password hashes are accepted as they are).
func (a *API) importUsers(d definitions) error {
	str := func(m map[string]any, k string) string { s, _ := m[k].(string); return s }
	for _, u := range d.Users {
		tags, err := tagsOf(u["tags"])
		if err != nil {
			return err
		}
		if err := a.o.Users.PutUserHash(auth.User{Name: str(u, "name"), PasswordHash: str(u, "password_hash"),
			Algorithm: str(u, "hashing_algorithm"), Tags: tags}); err != nil {
			return err
		}
	}
	vhost := func(m map[string]any) string {
		if vh := str(m, "vhost"); vh != "" {
			return vh
		}
		return core.DefaultVHost
	}
	for _, p := range d.Permissions {
		if str(p, "user") == "" {
			return fmt.Errorf("a permission entry without a user: %v", p)
		}
		if err := a.o.Users.SetPermissions(auth.Permission{User: str(p, "user"), VHost: vhost(p),
			Configure: str(p, "configure"), Write: str(p, "write"), Read: str(p, "read")}); err != nil {
			return err
		}
	}
	for _, p := range d.TopicPermissions {
		if err := a.o.Users.SetTopicPermissions(auth.TopicPermission{User: str(p, "user"), VHost: vhost(p),
			Exchange: str(p, "exchange"), Write: str(p, "write"), Read: str(p, "read")}); err != nil {
			return err
		}
	}
	return nil
}
