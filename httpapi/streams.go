package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/router/queue"
	"github.com/bourse-mq/bourse/storage/stream"
)

// ContentTypeRecords is the media type of a fetch answer: whole stream
// records in the on-disk format of storage/FORMAT.md.
const ContentTypeRecords = "application/vnd.bourse.stream-records"

// Headers of a fetch answer.
const (
	HeaderFirstOffset  = "Bourse-First-Offset"  // offset of the first record in the body
	HeaderNextOffset   = "Bourse-Next-Offset"   // offset to ask for next
	HeaderOldestOffset = "Bourse-Oldest-Offset" // first offset the stream still retains
	HeaderTailOffset   = "Bourse-Tail-Offset"   // offset the next append will get
)

// StreamsOptions configure the stream endpoints.
type StreamsOptions struct {
	Broker *router.Broker
	Store  *stream.Store
	// Authorize decides whether the request may read (write = false) or
	// commit offsets (write = true) of a stream of vhost; it writes the
	// refusal itself.
	Authorize func(w http.ResponseWriter, r *http.Request, vhost, stream string, write bool) bool
	// MaxWait caps the wait parameter (default 30s).
	MaxWait time.Duration
}

// MountStreams adds the stream endpoints:
//
//	GET /api/streams/{vhost}/{stream}/records?offset=N|first|last&timestamp=T&max_bytes=M&wait=D
//	GET /api/streams/{vhost}/{stream}/offsets/{name}
//	PUT /api/streams/{vhost}/{stream}/offsets/{name}   body {"offset": N}
//
// The records body is written with sendfile(2) from the segment file on a
// plain TCP listener (TLS falls back to a copy).
func (s *Server) MountStreams(o StreamsOptions) {
	if o.MaxWait <= 0 {
		o.MaxWait = 30 * time.Second
	}
	h := &streamsHandler{o: o, closing: s.closing}
	s.mux.HandleFunc("/api/streams/", h.route)
}

// route dispatches on the escaped path: vhost "/" is "%2F" in a URL, and
// ServeMux patterns match the decoded path, where it would be a separator.
func (h *streamsHandler) route(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/api/streams/"), "/")
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil {
			jsonError(w, http.StatusBadRequest, "bad escape in path", nil)
			return
		}
		parts[i] = u
	}
	switch {
	case len(parts) == 3 && parts[2] == "records":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET")
			jsonError(w, http.StatusMethodNotAllowed, "use GET", nil)
			return
		}
		r.SetPathValue("vhost", parts[0])
		r.SetPathValue("stream", parts[1])
		h.records(w, r)
	case len(parts) == 4 && parts[2] == "offsets":
		r.SetPathValue("vhost", parts[0])
		r.SetPathValue("stream", parts[1])
		r.SetPathValue("name", parts[3])
		switch r.Method {
		case http.MethodGet:
			h.getOffset(w, r)
		case http.MethodPut:
			h.putOffset(w, r)
		default:
			w.Header().Set("Allow", "GET, PUT")
			jsonError(w, http.StatusMethodNotAllowed, "use GET or PUT", nil)
		}
	default:
		jsonError(w, http.StatusNotFound, "no such stream endpoint", nil)
	}
}

type streamsHandler struct {
	o       StreamsOptions
	closing <-chan struct{}
}

func jsonError(w http.ResponseWriter, code int, reason string, extra map[string]any) {
	body := map[string]any{"error": http.StatusText(code), "reason": reason}
	for k, v := range extra {
		body[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

// lookup finds the stream of a request; it answers the error itself.
func (h *streamsHandler) lookup(w http.ResponseWriter, r *http.Request, write bool) (*queue.Queue, *stream.Log, bool) {
	vhost, name := r.PathValue("vhost"), r.PathValue("stream")
	if h.o.Authorize != nil && !h.o.Authorize(w, r, vhost, name, write) {
		return nil, nil, false
	}
	v, err := h.o.Broker.VHost(vhost)
	if err != nil {
		jsonError(w, http.StatusNotFound, "no vhost '"+vhost+"'", nil)
		return nil, nil, false
	}
	q, err := v.Queue(name, 0)
	if err != nil || !q.IsStream() {
		jsonError(w, http.StatusNotFound, "no stream '"+name+"' in vhost '"+vhost+"'", nil)
		return nil, nil, false
	}
	l := h.o.Store.Lookup(vhost, name)
	if l == nil {
		jsonError(w, http.StatusNotFound, "no stream '"+name+"' in vhost '"+vhost+"'", nil)
		return nil, nil, false
	}
	return q, l, true
}

// catchUpWait bounds how long a fetch waits for this node's copy of a
// cluster stream to hold what the cluster held when the request came.
const catchUpWait = 10 * time.Second

func (h *streamsHandler) records(w http.ResponseWriter, r *http.Request) {
	q, l, ok := h.lookup(w, r, false)
	if !ok {
		return
	}
	// Cluster mode: the segments served are this node's copy.
	// It is held until the answer is written.
	ctx, cancel := context.WithTimeout(r.Context(), catchUpWait)
	release, err := q.CatchUp(ctx)
	cancel()
	if err != nil {
		jsonError(w, http.StatusServiceUnavailable, err.Error(), nil)
		return
	}
	defer release()
	qv := r.URL.Query()
	oldest, tail := l.Bounds()
	var offset uint64
	switch v := qv.Get("offset"); {
	case qv.Get("timestamp") != "":
		t, err := parseTime(qv.Get("timestamp"))
		if err != nil {
			jsonError(w, http.StatusBadRequest, "timestamp: want RFC 3339 or Unix milliseconds", nil)
			return
		}
		offset = l.OffsetAt(t)
	case v == "" || v == "first":
		offset = oldest
	case v == "last":
		offset = tail
		if tail > oldest {
			offset = tail - 1
		}
	case v == "next":
		offset = tail
	default:
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			jsonError(w, http.StatusBadRequest, "offset: want a number, first, last or next", nil)
			return
		}
		offset = n
	}
	maxBytes := int64(1 << 20)
	if v := qv.Get("max_bytes"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			jsonError(w, http.StatusBadRequest, "max_bytes: want a positive number", nil)
			return
		}
		maxBytes = min(n, 64<<20)
	}
	var wait time.Duration
	if v := qv.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			jsonError(w, http.StatusBadRequest, "wait: want a duration like 5s", nil)
			return
		}
		wait = min(d, h.o.MaxWait)
	}
	var deadline <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		deadline = t.C
	}
	for {
		changed := l.Changed()
		rg, err := l.ReadRange(offset, maxBytes)
		if errors.Is(err, stream.ErrOutOfRange) {
			w.Header().Set(HeaderOldestOffset, strconv.FormatUint(rg.Oldest, 10))
			w.Header().Set(HeaderTailOffset, strconv.FormatUint(rg.Tail, 10))
			jsonError(w, http.StatusRequestedRangeNotSatisfiable,
				"offset "+strconv.FormatUint(offset, 10)+" is below the stream's retention", map[string]any{"earliest": rg.Oldest, "tail": rg.Tail})
			return
		}
		if err != nil {
			jsonError(w, http.StatusInternalServerError, err.Error(), nil)
			return
		}
		if rg.Len > 0 {
			serveRange(w, rg)
			return
		}
		if offset > rg.Tail {
			w.Header().Set(HeaderTailOffset, strconv.FormatUint(rg.Tail, 10))
			jsonError(w, http.StatusRequestedRangeNotSatisfiable,
				"offset "+strconv.FormatUint(offset, 10)+" is past the stream's tail", map[string]any{"earliest": rg.Oldest, "tail": rg.Tail})
			return
		}
		if deadline != nil {
			select {
			case <-changed:
				continue
			case <-deadline:
			case <-r.Context().Done():
			case <-h.closing:
			}
		}
		hd := w.Header()
		hd.Set(HeaderFirstOffset, strconv.FormatUint(offset, 10))
		hd.Set(HeaderNextOffset, strconv.FormatUint(offset, 10))
		hd.Set(HeaderOldestOffset, strconv.FormatUint(rg.Oldest, 10))
		hd.Set(HeaderTailOffset, strconv.FormatUint(rg.Tail, 10))
		w.WriteHeader(http.StatusNoContent)
		return
	}
}

// serveRange writes the range's bytes. With the headers flushed first,
// net/http hands the *io.LimitedReader over the *os.File straight to the
// TCP connection's ReadFrom, which is sendfile(2) on Linux.
func serveRange(w http.ResponseWriter, rg stream.Range) {
	defer rg.File.Close()
	hd := w.Header()
	hd.Set("Content-Type", ContentTypeRecords)
	hd.Set("Content-Length", strconv.FormatInt(rg.Len, 10))
	hd.Set(HeaderFirstOffset, strconv.FormatUint(rg.First, 10))
	hd.Set(HeaderNextOffset, strconv.FormatUint(rg.Next, 10))
	hd.Set(HeaderOldestOffset, strconv.FormatUint(rg.Oldest, 10))
	hd.Set(HeaderTailOffset, strconv.FormatUint(rg.Tail, 10))
	if _, err := rg.File.Seek(rg.Pos, io.SeekStart); err != nil {
		jsonError(w, http.StatusInternalServerError, err.Error(), nil)
		return
	}
	w.WriteHeader(http.StatusOK)
	_ = http.NewResponseController(w).Flush()
	_, _ = io.Copy(w, &io.LimitedReader{R: rg.File, N: rg.Len})
}

func parseTime(s string) (time.Time, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(n), nil
	}
	return time.Parse(time.RFC3339Nano, s)
}

func (h *streamsHandler) getOffset(w http.ResponseWriter, r *http.Request) {
	q, _, ok := h.lookup(w, r, false)
	if !ok {
		return
	}
	name := r.PathValue("name")
	v, found := q.StreamOffset(name)
	if !found {
		jsonError(w, http.StatusNotFound, "no stored offset for reader '"+name+"'", nil)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"name": name, "offset": v})
}

func (h *streamsHandler) putOffset(w http.ResponseWriter, r *http.Request) {
	q, _, ok := h.lookup(w, r, true)
	if !ok {
		return
	}
	var body struct {
		Offset *uint64 `json:"offset"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&body); err != nil || body.Offset == nil {
		jsonError(w, http.StatusBadRequest, `want a JSON body {"offset": N}`, nil)
		return
	}
	name := r.PathValue("name")
	if name == "" || len(name) > 255 {
		jsonError(w, http.StatusBadRequest, "reader name: want 1 to 255 bytes", nil)
		return
	}
	q.SetStreamOffset(name, *body.Offset)
	w.WriteHeader(http.StatusNoContent)
}
