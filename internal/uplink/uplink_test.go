package uplink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tillpipe/internal/stream"
	"tillpipe/internal/testenv"
	"tillpipe/internal/wire"
)

// checkStream asserts that the stream holds exactly the harness's frames,
// each once, on the right subject under the right Nats-Msg-Id.
func checkStream(t *testing.T, h *harness) []*jetstream.RawStreamMsg {
	t.Helper()
	msgs := h.streamMsgs()
	seen := map[string]bool{}
	for _, m := range msgs {
		id := msgID(m)
		if seen[id] {
			t.Errorf("msg id %s on the stream twice", id)
		}
		seen[id] = true
		want, ok := h.frames[id]
		if !ok {
			t.Errorf("unexpected msg id %q on %s", id, m.Subject)
			continue
		}
		hdr, err := wire.ParseHeader(m.Data)
		if err != nil {
			t.Errorf("%s: %v", id, err)
			continue
		}
		if wantSubj := stream.Subject(testStore, hdr.Class.String()); m.Subject != wantSubj {
			t.Errorf("%s on subject %s, want %s", id, m.Subject, wantSubj)
		}
		if !bytes.Equal(m.Data, want) {
			t.Errorf("%s: data differs from the frame appended", id)
		}
	}
	if len(seen) != len(h.frames) || len(msgs) != len(h.frames) {
		t.Errorf("stream has %d messages, %d distinct ids; appended %d batches", len(msgs), len(seen), len(h.frames))
	}
	return msgs
}

func TestPublishAndCommit(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	admin := adminJS(t, n.URL())
	ensure(t, admin)
	h := newHarness(t, n, dial(t, n.URL(), ""), admin, Options{})
	for _, c := range wire.Classes { // backlog before Run
		h.add(c, 20, 0)
	}
	h.run()
	for _, c := range wire.Classes { // live while running
		h.add(c, 20, 3000)
	}
	waitUntil(t, 30*time.Second, "120 batches on the stream", func() bool { m, _ := h.streamState(); return m >= 120 })
	waitUntil(t, 30*time.Second, "outbox committed to its tail", h.committedToEnd)
	checkStream(t, h)
	var batches float64
	for _, c := range wire.Classes {
		batches += counterValue(h.u.m.batches.WithLabelValues(c.String()))
	}
	if batches != 120 {
		t.Errorf("uplink_batches_total = %v, want 120", batches)
	}
	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !h.committedToEnd() {
		t.Error("outbox not committed to its tail after Run returned")
	}
}

func TestOutage_ResendsSameIDsLiveFirst(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	admin := adminJS(t, n.URL())
	ensure(t, admin)
	nc := dial(t, n.URL(), "")
	h := newHarness(t, n, nc, admin, Options{})

	// The live set: appended once the link is back, in the instant after
	// the uplink moved its live pointers and before it sent anything.
	var (
		liveMu sync.Mutex
		live   []string
		once   sync.Once
	)
	h.u.testHookReconnected = func() {
		once.Do(func() {
			liveMu.Lock()
			defer liveMu.Unlock()
			for _, c := range wire.Classes {
				live = append(live, h.add(c, 5, 1000)...)
			}
		})
	}
	h.run()
	for _, c := range wire.Classes {
		h.add(c, 25, 2000)
	}
	waitUntil(t, 30*time.Second, "traffic flowing", func() bool { m, _ := h.streamState(); return m >= 30 })
	for _, c := range wire.Classes { // in flight when the server goes away
		h.add(c, 25, 2000)
	}
	n.Stop()
	waitUntil(t, 10*time.Second, "uplink to see the outage", func() bool { return !h.u.Connected() })
	var backlog []string // appended during the outage
	for _, c := range wire.Classes {
		backlog = append(backlog, h.add(c, 15, 2000)...)
	}
	n.Start()
	waitUntil(t, 60*time.Second, "every batch on the stream", func() bool {
		liveMu.Lock()
		defer liveMu.Unlock()
		return len(live) > 0 && h.committedToEnd()
	})
	msgs := checkStream(t, h)
	liveMu.Lock()
	defer liveMu.Unlock()

	// Stream order of the outage backlog and the live set.
	isLive := map[string]bool{}
	for _, id := range live {
		isLive[id] = true
	}
	isBacklog := map[string]bool{}
	for _, id := range backlog {
		isBacklog[id] = true
	}
	var order []string
	for _, m := range msgs {
		if id := msgID(m); isLive[id] || isBacklog[id] {
			tag := "backlog"
			if isLive[id] {
				tag = "live"
			}
			order = append(order, fmt.Sprintf("%d:%s:%s", m.Sequence, tag, id))
		}
	}
	t.Logf("stream order after reconnection (first 20): %v", order[:min(20, len(order))])
	if !strings.Contains(order[0], ":live:") {
		t.Fatalf("first batch after reconnection is %s, want one of the live set", order[0])
	}
	firstBacklog := slices.IndexFunc(order, func(s string) bool { return strings.Contains(s, ":backlog:") })
	for _, s := range order[firstBacklog:] {
		if strings.Contains(s, ":live:") {
			t.Errorf("live batch %s went after backlog began", s)
		}
	}
	t.Logf("uplink_errors_total{reason=disconnected} = %v, stream messages = %d, batches = %d",
		h.errorsOf(ReasonDisconnected), len(msgs), len(h.frames))
}

func TestMissingStream_RetriesUntilCreated(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	admin := adminJS(t, n.URL())
	h := newHarness(t, n, dial(t, n.URL(), ""), admin, Options{})
	for _, c := range wire.Classes {
		h.add(c, 10, 500)
	}
	h.run()
	waitUntil(t, 30*time.Second, "two no_stream errors", func() bool { return h.errorsOf(ReasonNoStream) >= 2 })
	for _, c := range wire.Classes {
		if got := h.outbox.Queue(c.String()).Committed(); got != 0 {
			t.Fatalf("%s committed to %d with no stream to ack it", c, got)
		}
	}
	ensure(t, admin)
	waitUntil(t, 30*time.Second, "outbox committed after the stream appeared", h.committedToEnd)
	checkStream(t, h)

	// The config bucket was missing too; the watcher finds it now.
	kv, err := admin.KeyValue(context.Background(), stream.ConfigBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), stream.DefaultRateKey, []byte("123456")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "Rate() from the bucket created late", func() bool { return h.u.Rate() == 123456 })
}

func TestPermissionDenied_CountedNotHotLooped(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "nats.conf")
	err := os.WriteFile(conf, []byte(`
accounts: {
  TILL: {
    jetstream: enabled
    users: [
      {user: relay, password: relay, permissions: {
        publish: {allow: ["telemetry.other.>", "$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "_INBOX_s1.>"]}
        subscribe: {allow: ["_INBOX_s1.>"]}
      }}
      {user: central, password: central}
    ]
  }
}
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	n := testenv.StartNATS(t, testenv.NATSOptions{ConfigFile: conf})
	admin := adminJS(t, n.URL(), nats.UserInfo("central", "central"))
	ensure(t, admin)
	relayURL := strings.Replace(n.URL(), "nats://", "nats://relay:relay@", 1)
	h := newHarness(t, n, dial(t, relayURL, ""), admin, Options{})
	h.add(wire.ClassCritical, 5, 500)
	h.run()
	waitUntil(t, 30*time.Second, "a permission error", func() bool { return h.errorsOf(ReasonPermission) >= 1 })
	pause(2 * time.Second)
	if a := h.u.attempts.Load(); a > 3 {
		t.Errorf("%d publish attempts within ~2 s of a permissions violation; want it to back off", a)
	}
	if p := h.errorsOf(ReasonPermission); p > 3 {
		t.Errorf("uplink_errors_total{reason=permission} = %v, want a handful", p)
	}
	if got := h.outbox.Queue("critical").Committed(); got != 0 {
		t.Errorf("committed %d refused batches", got)
	}
	if m, _ := h.streamState(); m != 0 {
		t.Errorf("%d messages on the stream", m)
	}
}

func TestPriority(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, h *harness)
	}{
		{"backlog_drains_critical_then_normal_then_bulk", func(t *testing.T, h *harness) {
			for _, c := range []wire.Class{wire.ClassBulk, wire.ClassNormal, wire.ClassCritical} {
				h.add(c, 15, 2000)
			}
			h.u.SetRate(64 << 10)
			h.run()
			waitUntil(t, 30*time.Second, "all batches", h.committedToEnd)
			msgs := checkStream(t, h)
			var got []string
			for _, m := range msgs {
				_, class, _ := stream.ParseSubject(m.Subject)
				if len(got) == 0 || got[len(got)-1] != class {
					got = append(got, class)
				}
			}
			if want := []string{"critical", "normal", "bulk"}; !slices.Equal(got, want) {
				t.Errorf("class runs on the stream %v, want %v", got, want)
			}
		}},
		{"live_critical_overtakes_bulk_backlog", func(t *testing.T, h *harness) {
			h.add(wire.ClassBulk, 80, 2000)
			h.u.SetRate(40 << 10) // about 20 batches/s: the bulk backlog takes seconds
			h.run()
			waitUntil(t, 30*time.Second, "bulk draining", func() bool { m, _ := h.streamState(); return m >= 5 })
			crit := h.add(wire.ClassCritical, 5, 2000)
			waitUntil(t, 60*time.Second, "all batches", h.committedToEnd)
			msgs := checkStream(t, h)
			pos := map[string]int{}
			for i, m := range msgs {
				pos[msgID(m)] = i
			}
			for _, id := range crit {
				if after := len(msgs) - 1 - pos[id]; after < 40 {
					t.Errorf("critical %s at stream position %d of %d: only %d bulk batches after it", id, pos[id], len(msgs), after)
				}
			}
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

// TestRate_WithinTenPercentAndFollowsConfigBucket measures bytes arriving on
// the stream over a long window against the limit, then changes the limit
// through the config bucket while running.
func TestRate_WithinTenPercentAndFollowsConfigBucket(t *testing.T) {
	window, window2 := 30*time.Second, 10*time.Second
	if testing.Short() {
		window, window2 = 8*time.Second, 5*time.Second
	}
	const rate1, rate2, frame = 200_000, 400_000, 16 << 10
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	admin := adminJS(t, n.URL())
	ensure(t, admin)
	h := newHarness(t, n, dial(t, n.URL(), ""), admin, Options{Rate: rate1})
	need := (rate1*(window+3*time.Second).Seconds() + rate2*(window2+3*time.Second).Seconds()) / frame
	h.add(wire.ClassBulk, int(need*1.2), frame)
	h.run()

	measure := func(d time.Duration) float64 {
		b0 := h.mustStreamBytes()
		t0 := time.Now()
		pause(d)
		b1 := h.mustStreamBytes()
		return float64(b1-b0) / time.Since(t0).Seconds()
	}
	check := func(name string, got, limit float64) {
		t.Logf("%s: %.0f bytes/s against a limit of %.0f (%+.1f%%)", name, got, limit, 100*(got/limit-1))
		if got < 0.9*limit || got > 1.1*limit {
			t.Errorf("%s: measured %.0f bytes/s, want within 10%% of %.0f", name, got, limit)
		}
	}
	pause(2 * time.Second) // past the initial one-second burst
	check("options rate", measure(window), rate1)

	kv, err := admin.KeyValue(context.Background(), stream.ConfigBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), stream.RateKey(testStore), []byte(fmt.Sprint(rate2))); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "Rate() to follow the bucket", func() bool { return h.u.Rate() == rate2 })
	pause(1500 * time.Millisecond)
	check("config bucket rate", measure(window2), rate2)

	// Deleting the store's key falls back to uplink-rate.default.
	if _, err := kv.Put(context.Background(), stream.DefaultRateKey, []byte("300000")); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(context.Background(), stream.RateKey(testStore)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "Rate() to fall back to the default key", func() bool { return h.u.Rate() == 300000 })
}

func TestNew_InvalidOptions(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	nc := dial(t, n.URL(), "")
	outbox := openOutbox(t)
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"store_with_dot", Options{Store: "a.b", Conn: nc, Outbox: outbox}},
		{"no_conn", Options{Store: testStore, Outbox: outbox}},
		{"no_outbox", Options{Store: testStore, Conn: nc}},
		{"negative_rate", Options{Store: testStore, Conn: nc, Outbox: outbox, Rate: -1}},
		{"negative_ack_timeout", Options{Store: testStore, Conn: nc, Outbox: outbox, AckTimeout: -time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.opts); !errors.Is(err, ErrInvalidOption) {
				t.Fatalf("New = %v, want ErrInvalidOption", err)
			}
		})
	}
}
