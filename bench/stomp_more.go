package main

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-stomp/stomp/v3"
)

// stompTopic: one publisher SENDs 64 B to a /topic/ destination with subs
// subscribers (each on its own connection, ack auto); n counts deliveries.
// Warm-up frames go out until every subscriber has seen one, so the
// measured messages never race the subscriptions' setup.
func stompTopic(subs int) func(*runCtx) error {
	return func(rc *runCtx) error {
		dial := func() (*stomp.Conn, error) {
			return stomp.Dial("tcp", rc.b.stomp, stomp.ConnOpt.Login("guest", "guest"), stomp.ConnOpt.Host("/"))
		}
		dest := fmt.Sprintf("/topic/bench-%d", time.Now().UnixNano())
		per := rc.n / subs
		rc.expected = per * subs
		var got, warm atomic.Int64
		var wg sync.WaitGroup
		errc := make(chan error, subs+1)
		for i := 0; i < subs; i++ {
			conn, err := dial()
			if err != nil {
				return err
			}
			defer conn.Disconnect()
			sub, err := conn.Subscribe(dest, stomp.AckAuto)
			if err != nil {
				return err
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				warmed, n := false, 0
				timeout := time.NewTimer(30 * time.Second)
				defer timeout.Stop()
				for n < per {
					select {
					case m := <-sub.C:
						if m.Err != nil {
							errc <- m.Err
							return
						}
						if len(m.Body) > 0 && m.Body[0] == 'w' {
							if !warmed {
								warmed = true
								warm.Add(1)
							}
							continue
						}
						n++
						got.Add(1)
					case <-timeout.C:
						errc <- fmt.Errorf("timeout after %d of %d", n, per)
						return
					}
				}
			}()
		}
		pc, err := dial()
		if err != nil {
			return err
		}
		defer pc.Disconnect()
		for deadline := time.Now().Add(10 * time.Second); warm.Load() < int64(subs); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				return fmt.Errorf("subscriptions not live after 10 s")
			}
			if err := pc.Send(dest, "text/plain", []byte("warm")); err != nil {
				return err
			}
		}
		rc.start()
		body := make([]byte, 64)
		go func() {
			for i := 0; i < per; i++ {
				if err := pc.Send(dest, "text/plain", body); err != nil {
					errc <- err
					return
				}
			}
		}()
		wg.Wait()
		rc.stop()
		rc.delivered = int(got.Load())
		select {
		case err := <-errc:
			return err
		default:
			return nil
		}
	}
}
