package remotewrite

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"tillpipe/internal/coldbench"
	"tillpipe/internal/collector/oneconn"
	"tillpipe/internal/collector/rawsys"
)

// roundTripOnly hides oneconn.Transport's Post, so that a client goes
// through http.Client and RoundTrip.
type roundTripOnly struct{ t *oneconn.Transport }

func (r roundTripOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	return r.t.RoundTrip(req)
}

// BenchmarkSendSnappyCold posts a collector-sized request (28 KB) as the
// collector does every 15 s, with its caches cold: 96 MiB are written
// before each request, evicting the L2 and the TLBs. It alternates a
// client whose oneconn.Transport is used as a Poster with one that goes
// through http.Client and RoundTrip, over the collector's raw
// connections, and reports the process's CPU per request of each, the
// in-process server's share (draining the body) included. Run it with -cpu 1, as the
// collector runs:
//
//	go test -run '^$' -bench SendSnappyCold -benchtime 300x -cpu 1 ./internal/remotewrite/
func BenchmarkSendSnappyCold(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return rawsys.Dial(ctx, &net.Dialer{}, network, addr)
	}
	clients := make([]*Client, 2) // http.Client, Poster
	for i := range clients {
		tr := &oneconn.Transport{Dial: dial}
		hc := &http.Client{Transport: tr}
		if i == 0 {
			hc.Transport = roundTripOnly{tr}
		}
		c, err := NewClient(ClientOptions{URL: srv.URL + "/api/v1/write", HTTPClient: hc, Timeout: 15 * time.Second, UserAgent: "tillpipe-collector"})
		if err != nil {
			b.Fatal(err)
		}
		if (c.poster != nil) != (i == 1) {
			b.Fatalf("client %d: poster %v", i, c.poster != nil)
		}
		clients[i] = c
	}
	// 28 KB, a collector's request for 30 containers; the server only
	// drains it (the relay is another process), so its bytes do not matter.
	body := make([]byte, 28<<10)
	for i := range body {
		body[i] = byte(i * 7)
	}
	evict := coldbench.NewEvictor()
	var cpu [2]time.Duration
	for b.Loop() {
		for i, c := range clients {
			evict.Evict()
			c0 := coldbench.ProcessCPU(b)
			if err := c.SendSnappy(context.Background(), body); err != nil {
				b.Fatal(err)
			}
			cpu[i] += coldbench.ProcessCPU(b) - c0
		}
	}
	b.ReportMetric(float64(cpu[0].Microseconds())/float64(b.N), "http-client-cpu-µs/req")
	b.ReportMetric(float64(cpu[1].Microseconds())/float64(b.N), "poster-cpu-µs/req")
}
