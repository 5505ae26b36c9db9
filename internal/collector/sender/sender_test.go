package sender

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"tillpipe/internal/collector/snapblock"
	"tillpipe/internal/remotewrite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// request marshals a WriteRequest whose one sample carries seq.
// request is a snappy-compressed WriteRequest of one sample, seq.
func request(seq int) []byte {
	wr := prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "seq"}, {Name: "device", Value: "till-042"}},
		Samples: []prompb.Sample{{Value: float64(seq), Timestamp: int64(seq) * 15000}},
	}}}
	return snappy.Encode(nil, wr.MarshalProtobuf(nil))
}

// relay is a remote-write server decoding real snappy + protobuf. While
// down it answers status (0: it is not listening at all).
type relay struct {
	t    *testing.T
	addr string
	srv  *httptest.Server

	mu       sync.Mutex
	down     bool
	status   int
	reject   func(seq int) bool
	got      []int
	attempts int
	gotCh    chan int
}

func newRelay(t *testing.T) *relay {
	r := &relay{t: t, gotCh: make(chan int, 1000)}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	r.addr = r.srv.Listener.Addr().String()
	return r
}

// newAbsentRelay returns a relay address where nothing listens yet, and a
// function that starts the relay there.
func newAbsentRelay(t *testing.T) (*relay, string, func()) {
	r := &relay{t: t, gotCh: make(chan int, 1000)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	ln.Close()
	start := func() {
		ln, err := net.Listen("tcp", r.addr)
		if err != nil {
			t.Fatalf("listen again on %s: %v", r.addr, err)
		}
		r.srv = httptest.NewUnstartedServer(http.HandlerFunc(r.serve))
		r.srv.Listener.Close()
		r.srv.Listener = ln
		r.srv.Start()
		t.Cleanup(r.srv.Close)
	}
	return r, "http://" + r.addr, start
}

func (r *relay) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.attempts++
	down, status, reject := r.down, r.status, r.reject
	r.mu.Unlock()
	if down {
		w.WriteHeader(status)
		return
	}
	if req.Header.Get("Content-Encoding") != "snappy" || req.Header.Get("Content-Type") != "application/x-protobuf" {
		r.t.Errorf("headers %v", req.Header)
	}
	compressed, err := io.ReadAll(req.Body)
	if err != nil {
		r.t.Error(err)
		return
	}
	body, err := snappy.Decode(nil, compressed)
	if err != nil {
		r.t.Errorf("decode snappy: %v", err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	var u prompb.WriteRequestUnmarshaler
	wr, err := u.UnmarshalProtobuf(body)
	if err != nil || len(wr.Timeseries) != 1 {
		r.t.Errorf("decode protobuf: %v", err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	seq := int(wr.Timeseries[0].Samples[0].Value)
	if reject != nil && reject(seq) {
		http.Error(w, "out of bounds", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.got = append(r.got, seq)
	r.mu.Unlock()
	r.gotCh <- seq
	w.WriteHeader(http.StatusNoContent)
}

func (r *relay) setDown(down bool, status int) {
	r.mu.Lock()
	r.down, r.status = down, status
	r.mu.Unlock()
}

func counterValue(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 10)
	c.Collect(ch)
	close(ch)
	var sum float64
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		switch {
		case d.Counter != nil:
			sum += d.Counter.GetValue()
		case d.Gauge != nil:
			sum += d.Gauge.GetValue()
		}
	}
	return sum
}

// waitFor polls cond; the test's own deadline bounds it.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if t.Context().Err() != nil {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSender_RelayUnreachableThenBack(t *testing.T) {
	const n = 60
	sizeOne := len(request(n))
	for _, tc := range []struct {
		name     string
		status   int // 0: nothing listens
		maxBytes int
		wantKept int // newest requests that must arrive
	}{
		{"relay_answers_503", http.StatusServiceUnavailable, 1 << 20, n},
		{"relay_answers_429", http.StatusTooManyRequests, 1 << 20, n},
		{"relay_refuses_connections", 0, 1 << 20, n},
		{"outage_longer_than_buffer_drops_oldest", http.StatusServiceUnavailable, 20 * sizeOne, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				r     *relay
				url   string
				start func()
			)
			if tc.status == 0 {
				r, url, start = newAbsentRelay(t)
			} else {
				r = newRelay(t)
				url = r.srv.URL
				r.setDown(true, tc.status)
			}
			client, err := remotewrite.NewClient(remotewrite.ClientOptions{URL: url, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			s, err := New(client, Options{MaxBytes: tc.maxBytes, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error)
			go func() { done <- s.Run(ctx) }()

			// The first request fails, then sampling goes on during the outage.
			s.Enqueue(request(0), 1)
			waitFor(t, "a failed attempt", func() bool { return counterValue(t, s.retries) >= 1 })
			for i := 1; i < n; i++ {
				s.Enqueue(request(i), 1)
			}
			waitFor(t, "a retry after the backlog built", func() bool { return counterValue(t, s.retries) >= 3 })

			if start != nil {
				start()
			}
			r.setDown(false, 0)
			for range tc.wantKept {
				<-r.gotCh
			}
			waitFor(t, "the last answer", func() bool { return int(counterValue(t, s.sentSamples)) == tc.wantKept })
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			r.mu.Lock()
			got := append([]int(nil), r.got...)
			r.mu.Unlock()
			if len(got) != tc.wantKept {
				t.Fatalf("relay got %d requests, want %d", len(got), tc.wantKept)
			}
			for i, seq := range got {
				if want := n - tc.wantKept + i; seq != want {
					t.Fatalf("request %d was seq %d, want %d (oldest first, only the oldest dropped): %v", i, seq, want, got)
				}
			}
			dropped := counterValue(t, s.droppedSamples)
			if int(dropped) != n-tc.wantKept {
				t.Errorf("dropped %v samples, want %d", dropped, n-tc.wantKept)
			}
			if sent := counterValue(t, s.sentSamples); int(sent) != tc.wantKept {
				t.Errorf("sent_samples_total %v, want %d", sent, tc.wantKept)
			}
		})
	}
}

// logCounter counts log records by message.
type logCounter struct {
	mu   sync.Mutex
	msgs map[string]int
}

func (h *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *logCounter) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs[r.Message]++
	return nil
}
func (h *logCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logCounter) WithGroup(string) slog.Handler      { return h }
func (h *logCounter) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.msgs[msg]
}

func TestSender_RelayAnswers400_DroppedCountedNotRetried(t *testing.T) {
	r := newRelay(t)
	r.reject = func(seq int) bool { return seq < 5 }
	client, err := remotewrite.NewClient(remotewrite.ClientOptions{URL: r.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	logs := &logCounter{msgs: map[string]int{}}
	s, err := New(client, Options{MinBackoff: time.Millisecond, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 { // five rejected, then one accepted
		s.Enqueue(request(i), 1)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	if seq := <-r.gotCh; seq != 5 {
		t.Fatalf("relay accepted seq %d, want 5", seq)
	}
	waitFor(t, "the last answer", func() bool { return counterValue(t, s.sentSamples) == 1 })
	cancel()
	<-done
	r.mu.Lock()
	attempts := r.attempts
	r.mu.Unlock()
	if attempts != 6 {
		t.Errorf("relay saw %d requests, want 6 (each rejected request sent once)", attempts)
	}
	if got := counterValue(t, s.droppedRequests.WithLabelValues(ReasonRejected)); got != 5 {
		t.Errorf("dropped rejected requests %v, want 5", got)
	}
	if got := counterValue(t, s.retries); got != 0 {
		t.Errorf("retries %v, want 0", got)
	}
	if got := logs.count("relay rejected request, dropped"); got != 1 {
		t.Errorf("logged the rejection %d times within a minute, want once", got)
	}
}

// scriptedClient fails with the scripted errors, then succeeds; it records
// when each attempt happened.
type scriptedClient struct {
	mu    sync.Mutex
	errs  []error
	times []time.Time
	sent  [][]byte // what each attempt sent
}

func (c *scriptedClient) SendSnappy(ctx context.Context, compressed []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.times = append(c.times, time.Now())
	c.sent = append(c.sent, bytes.Clone(compressed))
	if len(c.errs) == 0 {
		return nil
	}
	err := c.errs[0]
	c.errs = c.errs[1:]
	return err
}

func TestSender_BackoffDoublesWithJitterAndHonoursRetryAfter(t *testing.T) {
	unavailable := &remotewrite.RecoverableError{StatusCode: 503, Err: errors.New("503")}
	for _, tc := range []struct {
		name string
		errs []error
		// wantGaps are the [min, max] waits before each retry.
		wantGaps [][2]time.Duration
	}{
		{"relay_down_five_times", []error{unavailable, unavailable, unavailable, unavailable, unavailable},
			[][2]time.Duration{{500 * time.Millisecond, time.Second}, {time.Second, 2 * time.Second}, {2 * time.Second, 4 * time.Second},
				{2 * time.Second, 4 * time.Second}, {2 * time.Second, 4 * time.Second}}},
		{"relay_asks_retry_after_30s", []error{&remotewrite.RecoverableError{StatusCode: 429, RetryAfter: 30 * time.Second, Err: errors.New("429")}},
			[][2]time.Duration{{30 * time.Second, 30 * time.Second}}},
		{"retry_after_capped", []error{&remotewrite.RecoverableError{StatusCode: 503, RetryAfter: time.Hour, Err: errors.New("503")}},
			[][2]time.Duration{{time.Minute, time.Minute}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c := &scriptedClient{errs: tc.errs}
				s, err := New(c, Options{MinBackoff: time.Second, MaxBackoff: 4 * time.Second, MaxRetryAfter: time.Minute})
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan error)
				go func() { done <- s.Run(ctx) }()
				s.Enqueue(request(1), 1)
				time.Sleep(time.Hour) // fake time: every retry happens meanwhile
				synctest.Wait()
				cancel()
				<-done
				if len(c.times) != len(tc.errs)+1 {
					t.Fatalf("%d attempts, want %d", len(c.times), len(tc.errs)+1)
				}
				for i, w := range tc.wantGaps {
					gap := c.times[i+1].Sub(c.times[i])
					if gap < w[0] || gap > w[1] {
						t.Errorf("wait before retry %d = %s, want within [%s, %s]", i+1, gap, w[0], w[1])
					}
				}
				if s.Len() != 0 {
					t.Errorf("%d requests still buffered", s.Len())
				}
			})
		})
	}
}

func TestSender_ShutdownWithRelayDown_DropsAndCounts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		down := &remotewrite.RecoverableError{Err: errors.New("connection refused")}
		c := &scriptedClient{errs: []error{down, down, down, down, down, down, down, down}}
		s, err := New(c, Options{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- s.Run(ctx) }()
		for i := range 3 {
			s.Enqueue(request(i), 1)
		}
		synctest.Wait()
		cancel()
		<-done
		flushCtx, cancelFlush := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancelFlush()
		s.Flush(flushCtx)
		if got := counterValue(t, s.droppedSamples.WithLabelValues(ReasonShutdown)); got != 3 {
			t.Errorf("dropped at shutdown %v, want 3", got)
		}
		if s.Len() != 0 {
			t.Errorf("%d requests left", s.Len())
		}
	})
}

// TestSender_EnqueueCopies checks that the buffer holds its own copy of
// each request, the size it counts: the collector reuses the request it
// enqueued for the next cycle.
func TestSender_EnqueueCopies(t *testing.T) {
	c := &scriptedClient{}
	s, err := New(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	req := snappy.Encode(nil, bytes.Repeat([]byte(strings.Repeat("container_memory_usage_bytes", 4)), 200))
	want := bytes.Clone(req)
	s.Enqueue(req, 1)
	clear(req)
	s.Enqueue(req, 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) != 2 || !bytes.Equal(s.queue[0].data, want) || !bytes.Equal(s.queue[1].data, req) {
		t.Fatalf("queue does not hold copies of the two requests")
	}
	if s.bytes != 2*len(req) {
		t.Errorf("buffer counts %d bytes, want %d", s.bytes, 2*len(req))
	}
}

// TestSender_PacksHeldRequests checks that a request encoded loosely (as
// snapblock encodes the collector's) goes out as it is when the relay
// answers, and is held snappy-encoded when it must wait: the one whose
// send failed and the ones enqueued behind it.
func TestSender_PacksHeldRequests(t *testing.T) {
	var wr prompb.WriteRequest
	for i := range 200 {
		wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
			Labels:  []prompb.Label{{Name: "__name__", Value: "container_memory_usage_bytes"}, {Name: "container", Value: fmt.Sprint("pos-api-", i)}},
			Samples: []prompb.Sample{{Value: float64(i), Timestamp: 1_763_700_000_000}},
		})
	}
	body := wr.MarshalProtobuf(nil)
	var blk snapblock.Block
	loose, err := blk.Encode(body, []snapblock.Range{{Start: 0, End: int32(len(body))}}) // all literal
	if err != nil {
		t.Fatal(err)
	}
	tight := snappy.Encode(nil, body)
	if len(tight) >= len(loose)/2 {
		t.Fatalf("test body compresses to %d of %d bytes: too little to tell", len(tight), len(loose))
	}

	unavailable := &remotewrite.RecoverableError{StatusCode: 503, Err: errors.New("503")}
	c := &scriptedClient{errs: []error{nil, unavailable}}
	s, err := New(c, Options{MinBackoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	s.Enqueue(loose, 200) // sent at once
	waitFor(t, "the first send", func() bool { return counterValue(t, s.sentRequests) == 1 })
	s.Enqueue(loose, 200) // fails, then waits an hour
	waitFor(t, "the failed send", func() bool { return counterValue(t, s.retries) == 1 })
	s.Enqueue(loose, 200) // behind it
	junk := []byte("not snappy at all")
	s.Enqueue(junk, 1) // held as it is: the relay is the judge of it

	c.mu.Lock()
	if len(c.sent) != 2 || !bytes.Equal(c.sent[0], loose) || !bytes.Equal(c.sent[1], loose) {
		t.Errorf("sent %d requests; want the first two as enqueued", len(c.sent))
	}
	c.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) != 3 {
		t.Fatalf("%d requests held, want 3", len(s.queue))
	}
	for i, e := range s.queue[:2] {
		if !bytes.Equal(e.data, tight) {
			t.Errorf("held request %d is %d bytes, want snappy's encoding (%d bytes)", i, len(e.data), len(tight))
		}
	}
	if !bytes.Equal(s.queue[2].data, junk) {
		t.Errorf("a request that does not decode is held as %q, want it as it came", s.queue[2].data)
	}
	if s.bytes != 2*len(tight)+len(junk) {
		t.Errorf("buffer counts %d bytes, want %d", s.bytes, 2*len(tight)+len(junk))
	}
}
