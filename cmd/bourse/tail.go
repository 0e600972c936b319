package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/bourse-mq/bourse/streamclient"
)

func newTailCmd() *cobra.Command {
	var (
		url, user, pass, vhost, from string
		follow                       bool
		limit                        int
	)
	cmd := &cobra.Command{
		Use:   "tail STREAM",
		Short: "print a stream's records from an offset or a time (over the HTTP fetch endpoint)",
		Long: `Prints the records of a stream, one per line: offset, time, routing key, body.
--from takes first, last, next, an offset, or a time (RFC 3339, e.g. 2026-11-24T10:00:00Z).
With --follow it waits for new records until interrupted.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pos, err := parsePosition(from)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return tail(ctx, cmd.OutOrStdout(), streamclient.New(url, user, pass), vhost, args[0], pos, follow, limit)
		},
	}
	f := cmd.Flags()
	f.StringVar(&url, "url", "http://127.0.0.1:15672", "the broker's HTTP listener")
	f.StringVar(&user, "user", "guest", "user name")
	f.StringVar(&pass, "pass", "guest", "password")
	f.StringVar(&vhost, "vhost", "/", "virtual host")
	f.StringVar(&from, "from", "first", "first, last, next, an offset, or an RFC 3339 time")
	f.BoolVarP(&follow, "follow", "f", false, "keep waiting for new records")
	f.IntVarP(&limit, "limit", "n", 0, "stop after this many records (0 = no limit)")
	return cmd
}

func parsePosition(s string) (streamclient.Position, error) {
	switch s {
	case "first":
		return streamclient.First, nil
	case "last":
		return streamclient.Last, nil
	case "next":
		return streamclient.Next, nil
	}
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		return streamclient.From(n), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return streamclient.At(t), nil
	}
	return streamclient.Position{}, fmt.Errorf("--from %q: want first, last, next, an offset or an RFC 3339 time", s)
}

func tail(ctx context.Context, w io.Writer, c *streamclient.Client, vhost, stream string, pos streamclient.Position, follow bool, limit int) error {
	printed := 0
	for {
		wait := time.Duration(0)
		if follow {
			wait = 20 * time.Second
		}
		b, err := c.Fetch(ctx, vhost, stream, pos, streamclient.Options{Wait: wait})
		var oor *streamclient.OutOfRangeError
		switch {
		case errors.As(err, &oor):
			// Fell out of retention while reading: go on from the oldest.
			fmt.Fprintf(w, "# offset out of range; continuing from %d\n", oor.Earliest)
			pos = streamclient.From(oor.Earliest)
			continue
		case ctx.Err() != nil:
			return nil
		case err != nil:
			return fmt.Errorf("is the broker running at %s? %w", c.BaseURL, err)
		}
		for _, r := range b.Records {
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\n", r.Offset, r.Timestamp.UTC().Format(time.RFC3339Nano), r.Message.RoutingKey, r.Message.Body)
			printed++
			if limit > 0 && printed >= limit {
				return nil
			}
		}
		if len(b.Records) == 0 && !follow {
			return nil
		}
		pos = streamclient.From(b.Next)
	}
}
