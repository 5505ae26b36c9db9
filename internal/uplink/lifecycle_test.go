package uplink

import (
	"context"
	"errors"
	"testing"
	"time"

	"tillpipe/internal/testenv"
	"tillpipe/internal/wire"
)

// TestLiveWindow_LaggingLiveBecomesBacklog: when the uplink falls more than
// LiveWindow behind within one class, what is newest goes first and the
// older rest drains after it.
func TestLiveWindow_LaggingLiveBecomesBacklog(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	admin := adminJS(t, n.URL())
	ensure(t, admin)
	// About 10 batches/s go out, the first 10 at once (the burst): the old
	// batches are a second behind after about 20 went out, and the rest
	// then becomes backlog. The fresh ones take 0.3 s, well inside the window.
	h := newHarness(t, n, dial(t, n.URL(), ""), admin, Options{LiveWindow: time.Second, Rate: 20 << 10})
	h.run()
	old := h.add(wire.ClassNormal, 50, 2000)
	waitUntil(t, 30*time.Second, "old batches a second behind", func() bool { m, _ := h.streamState(); return m >= 25 })
	fresh := h.add(wire.ClassNormal, 3, 2000)
	waitUntil(t, 60*time.Second, "all batches", h.committedToEnd)
	msgs := checkStream(t, h)
	pos := map[string]int{}
	for i, m := range msgs {
		pos[msgID(m)] = i
	}
	var order []string
	for _, m := range msgs {
		order = append(order, msgID(m))
	}
	t.Logf("stream order: %v", order)
	lastOld := 0
	for _, id := range old {
		lastOld = max(lastOld, pos[id])
	}
	for _, id := range fresh {
		if pos[id] > lastOld-10 {
			t.Errorf("fresh batch %s at stream position %d; the old ones end at %d: it did not overtake the lagging ones", id, pos[id], lastOld)
		}
	}
}

func TestRun_Lifecycle(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, h *harness)
	}{
		{"second_concurrent_run_refused", func(t *testing.T, h *harness) {
			h.run()
			waitUntil(t, 10*time.Second, "Run to start", func() bool { return h.u.running.Load() })
			if err := h.u.Run(context.Background()); !errors.Is(err, ErrRunning) {
				t.Fatalf("second Run = %v, want ErrRunning", err)
			}
		}},
		{"closed_connection_ends_run", func(t *testing.T, h *harness) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- h.u.Run(ctx) }()
			h.add(wire.ClassCritical, 3, 100)
			waitUntil(t, 10*time.Second, "batches committed", h.committedToEnd)
			h.u.opts.Conn.Close()
			if err := <-errc; !errors.Is(err, ErrConnClosed) {
				t.Fatalf("Run after Close = %v, want ErrConnClosed", err)
			}
		}},
		{"restart_resumes_from_commit", func(t *testing.T, h *harness) {
			h.add(wire.ClassBulk, 10, 100)
			h.run()
			waitUntil(t, 10*time.Second, "first batches committed", h.committedToEnd)
			if err := h.stop(); err != nil {
				t.Fatal(err)
			}
			h.add(wire.ClassBulk, 10, 100)
			h.run()
			waitUntil(t, 10*time.Second, "second batches committed", h.committedToEnd)
			checkStream(t, h)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := testenv.StartNATS(t, testenv.NATSOptions{})
			admin := adminJS(t, n.URL())
			ensure(t, admin)
			tc.run(t, newHarness(t, n, dial(t, n.URL(), ""), admin, Options{}))
		})
	}
}
