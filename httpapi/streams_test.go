package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/bourse-mq/bourse/core"
	"github.com/bourse-mq/bourse/internal/wiring"
	"github.com/bourse-mq/bourse/router"
	"github.com/bourse-mq/bourse/storage/stream"
	"github.com/bourse-mq/bourse/streamclient"
)

func streamServer(t *testing.T) (*router.VHost, *httptest.Server) {
	t.Helper()
	st, err := stream.Open(t.TempDir(), stream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	b := router.New(router.Options{Streams: wiring.StreamStore(st)})
	v, _ := b.VHost("/")
	if _, err := v.DeclareQueue(router.QueueDecl{QueueInfo: core.QueueInfo{Name: "s", Durable: true, Args: core.Table{
		"x-queue-type": "stream", "x-max-length-bytes": int64(4096), "x-stream-max-segment-size-bytes": int64(1024)}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.DeclareQueue(router.QueueDecl{QueueInfo: core.QueueInfo{Name: "plain", Durable: true}}); err != nil {
		t.Fatal(err)
	}
	s := New(Options{})
	s.MountStreams(StreamsOptions{Broker: b, Store: st, Authorize: func(w http.ResponseWriter, r *http.Request, _, _ string, _ bool) bool {
		if u, p, ok := r.BasicAuth(); ok && u == "guest" && p == "guest" {
			return true
		}
		w.WriteHeader(http.StatusUnauthorized)
		return false
	}})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return v, srv
}

func TestStreamEndpointRetentionAndErrors(t *testing.T) {
	v, srv := streamServer(t)
	done := make(chan error, 200)
	for i := 0; i < 200; i++ {
		m := &core.Message{RoutingKey: "s", Body: []byte(fmt.Sprintf("record-%03d", i))}
		if _, err := v.Publish(m, router.PublishOptions{Confirm: func(err error) { done <- err }}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 200; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	c := streamclient.New(srv.URL, "guest", "guest")
	ctx := context.Background()
	var err error
	var oor *streamclient.OutOfRangeError
	// Retention runs just after the last batch is confirmed.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err = c.Fetch(ctx, "/", "s", streamclient.From(0), streamclient.Options{}); errors.As(err, &oor) {
			break
		}
	}
	if !errors.As(err, &oor) || oor.Earliest == 0 || oor.Tail != 200 {
		t.Fatalf("offset 0 after retention: %v", err)
	}
	b, err := c.Fetch(ctx, "/", "s", streamclient.From(oor.Earliest), streamclient.Options{})
	if err != nil || len(b.Records) == 0 || b.Records[0].Offset != oor.Earliest ||
		string(b.Records[0].Message.Body) != fmt.Sprintf("record-%03d", oor.Earliest) {
		t.Fatalf("fetch from earliest: %+v %v", b, err)
	}
	if b, err := c.Fetch(ctx, "/", "s", streamclient.Last, streamclient.Options{}); err != nil || len(b.Records) != 1 || b.Records[0].Offset != 199 {
		t.Fatalf("last: %+v %v", b, err)
	}
	if b, err := c.Fetch(ctx, "/", "s", streamclient.Next, streamclient.Options{}); err != nil || len(b.Records) != 0 || b.Next != 200 {
		t.Fatalf("next without wait: %+v %v", b, err)
	}
	if _, err := c.Fetch(ctx, "/", "s", streamclient.From(500), streamclient.Options{}); !errors.As(err, &oor) {
		t.Fatalf("past the tail: %v", err)
	}
	// Named offsets.
	if _, ok, err := c.Offset(ctx, "/", "s", "r1"); ok || err != nil {
		t.Fatalf("unknown reader: %v %v", ok, err)
	}
	if err := c.Commit(ctx, "/", "s", "r1", 150); err != nil {
		t.Fatal(err)
	}
	if off, ok, err := c.Offset(ctx, "/", "s", "r1"); !ok || err != nil || off != 150 {
		t.Fatalf("stored offset: %d %v %v", off, ok, err)
	}
	for _, tc := range []struct {
		method, path, user string
		code               int
	}{
		{"GET", "/api/streams/%2F/s/records?offset=abc", "guest", 400},
		{"GET", "/api/streams/%2F/s/records?max_bytes=-1", "guest", 400},
		{"GET", "/api/streams/%2F/s/records?wait=forever", "guest", 400},
		{"GET", "/api/streams/%2F/nosuch/records", "guest", 404},
		{"GET", "/api/streams/%2F/plain/records", "guest", 404},
		{"GET", "/api/streams/nosuchvhost/s/records", "guest", 404},
		{"GET", "/api/streams/%2F/s/records", "", 401},
		{"POST", "/api/streams/%2F/s/records", "guest", 405},
		{"PUT", "/api/streams/%2F/s/offsets/r2", "guest", 400},
		{"GET", "/api/streams/%2F/s/whatever", "guest", 404},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader("not json"))
		if tc.user != "" {
			req.SetBasicAuth(tc.user, "guest")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.code)
		}
	}
}
