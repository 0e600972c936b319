// Package streamclient reads Bourse streams over HTTP from the zero-copy
// fetch endpoint, GET /api/streams/{vhost}/{stream}/records, and decodes
// the records (storage/FORMAT.md) into messages.
//
//	c := streamclient.New("http://127.0.0.1:15672", "guest", "guest")
//	b, err := c.Fetch(ctx, "/", "payments", streamclient.From(0), streamclient.Options{Wait: 5 * time.Second})
//	for _, r := range b.Records { ... }
//	next := b.Next
package streamclient

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/bourse-mq/bourse/storage/record"
)

// Record is one stream record: its offset, when the broker appended it, and
// the message (exchange, routing key, properties, headers, body).
type Record = record.Record

// Client reads streams from one broker.
type Client struct {
	BaseURL    string
	User, Pass string
	HTTP       *http.Client
}

// New returns a client of the broker's HTTP listener at baseURL.
func New(baseURL, user, pass string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), User: user, Pass: pass, HTTP: &http.Client{}}
}

// Position is where a fetch starts.
type Position struct{ q url.Values }

// From starts at an absolute offset.
func From(offset uint64) Position {
	return Position{url.Values{"offset": {strconv.FormatUint(offset, 10)}}}
}

// First starts at the first retained record; Last at the newest one; Next
// at the next record to be appended.
var (
	First = Position{url.Values{"offset": {"first"}}}
	Last  = Position{url.Values{"offset": {"last"}}}
	Next  = Position{url.Values{"offset": {"next"}}}
)

// At starts at the first record appended at or after t.
func At(t time.Time) Position {
	return Position{url.Values{"timestamp": {strconv.FormatInt(t.UnixMilli(), 10)}}}
}

// Options tune one fetch.
type Options struct {
	MaxBytes int64         // about this many bytes of records (at least one record); 0 = the server's default
	Wait     time.Duration // wait this long for records when at the tail
}

// Batch is the answer to one fetch.
type Batch struct {
	Records []Record
	First   uint64 // offset of the first record asked for
	Next    uint64 // offset to ask for next
	Oldest  uint64 // first retained offset
	Tail    uint64 // offset of the next append
}

// OutOfRangeError says the asked offset is no longer (or not yet) in the
// stream; Earliest is the first retained offset.
type OutOfRangeError struct {
	Offset   string
	Earliest uint64
	Tail     uint64
}

func (e *OutOfRangeError) Error() string {
	return fmt.Sprintf("stream offset %s out of range (retained %d..%d)", e.Offset, e.Earliest, e.Tail)
}

// Fetch reads the records at p.
func (c *Client) Fetch(ctx context.Context, vhost, stream string, p Position, o Options) (Batch, error) {
	q := url.Values{}
	for k, v := range p.q {
		q[k] = v
	}
	if o.MaxBytes > 0 {
		q.Set("max_bytes", strconv.FormatInt(o.MaxBytes, 10))
	}
	if o.Wait > 0 {
		q.Set("wait", o.Wait.String())
	}
	u := c.BaseURL + "/api/streams/" + url.PathEscape(vhost) + "/" + url.PathEscape(stream) + "/records?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return Batch{}, err
	}
	if c.User != "" {
		req.SetBasicAuth(c.User, c.Pass)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return Batch{}, fmt.Errorf("fetch %s: %w", stream, err)
	}
	defer resp.Body.Close()
	var b Batch
	hdr := func(name string) uint64 {
		n, _ := strconv.ParseUint(resp.Header.Get(name), 10, 64)
		return n
	}
	b.First, b.Next = hdr("Bourse-First-Offset"), hdr("Bourse-Next-Offset")
	b.Oldest, b.Tail = hdr("Bourse-Oldest-Offset"), hdr("Bourse-Tail-Offset")
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNoContent:
		return b, nil
	case http.StatusRequestedRangeNotSatisfiable:
		var e struct {
			Earliest uint64 `json:"earliest"`
			Tail     uint64 `json:"tail"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&e)
		return b, &OutOfRangeError{Offset: q.Get("offset") + q.Get("timestamp"), Earliest: e.Earliest, Tail: e.Tail}
	default:
		var e struct {
			Reason string `json:"reason"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&e)
		return b, fmt.Errorf("fetch %s: %s: %s", stream, resp.Status, e.Reason)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return b, fmt.Errorf("fetch %s: %w", stream, err)
	}
	recs, n, err := record.Decode(body)
	if err != nil {
		return b, fmt.Errorf("fetch %s: %w", stream, err)
	}
	if n != len(body) {
		return b, fmt.Errorf("fetch %s: %d trailing bytes are not a whole record", stream, len(body)-n)
	}
	b.Records = recs
	return b, nil
}

// Offset returns a named reader's stored offset (ok false if none).
func (c *Client) Offset(ctx context.Context, vhost, stream, name string) (uint64, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.offsetURL(vhost, stream, name), nil)
	if err != nil {
		return 0, false, err
	}
	req.SetBasicAuth(c.User, c.Pass)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return 0, false, nil
	}
	if resp.StatusCode != http.StatusOK {
		return 0, false, fmt.Errorf("offset of %s: %s", name, resp.Status)
	}
	var v struct {
		Offset uint64 `json:"offset"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return 0, false, err
	}
	return v.Offset, true, nil
}

// Commit stores a named reader's next offset on the server.
func (c *Client) Commit(ctx context.Context, vhost, stream, name string, next uint64) error {
	body := strings.NewReader(`{"offset":` + strconv.FormatUint(next, 10) + `}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.offsetURL(vhost, stream, name), body)
	if err != nil {
		return err
	}
	req.SetBasicAuth(c.User, c.Pass)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("commit offset of %s: %s", name, resp.Status)
	}
	return nil
}

func (c *Client) offsetURL(vhost, stream, name string) string {
	return c.BaseURL + "/api/streams/" + url.PathEscape(vhost) + "/" + url.PathEscape(stream) + "/offsets/" + url.PathEscape(name)
}
