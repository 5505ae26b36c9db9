package intake

import (
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/prometheus/client_golang/prometheus"

	"tillpipe/internal/seal"
	"tillpipe/internal/testenv"
)

// TestDiskFull fills the inbox's filesystem (a real 1 MiB tmpfs; needs root,
// as CI runs): the relay answers 503 disk_full with a one-line reason,
// counts it, and every request it acknowledged before is still in the inbox.
func TestDiskFull(t *testing.T) {
	mnt := testenv.MountTmpfs(t, "1m")
	inbox, err := seal.OpenInbox(filepath.Join(mnt, "inbox"), seal.InboxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer inbox.Close()
	reg := prometheus.NewRegistry()
	h, err := New(Options{Store: "s1", Inbox: inbox, Registerer: reg, InboxMaxBytes: 1 << 40, MaxSeriesPerDevice: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	f := &fixture{h: h, inbox: inbox, reg: reg, url: srv.URL}

	accepted := 0
	for i := range 1000 {
		var wr prompb.WriteRequest
		for j := range 200 { // ~200 distinct series, ~10 KiB a request
			wr.Timeseries = append(wr.Timeseries, ser(int64(i), "__name__", "till_probe", "device", "t1", "series", fmt.Sprintf("%d-%d", i, j)))
		}
		code, body, _ := f.post(t, encode(&wr), nil)
		if code == 204 || code == 200 {
			accepted++
			continue
		}
		if code != 503 || !strings.Contains(body, "disk") || strings.Count(strings.TrimSpace(body), "\n") != 0 {
			t.Fatalf("request %d on a full disk: %d %q, want 503 with a one-line disk reason", i, code, body)
		}
		break
	}
	if accepted == 0 || accepted == 1000 {
		t.Fatalf("accepted %d requests: the disk never filled, or nothing fit", accepted)
	}
	if got := counter(t, reg, "requests_rejected_total", "reason", ReasonDiskFull); got != 1 {
		t.Fatalf("requests_rejected_total{reason=disk_full} = %v, want 1", got)
	}
	q := seal.InboxQueue(inbox)
	if n := q.NextIndex() - q.FirstIndex(); n != uint64(accepted) {
		t.Fatalf("inbox holds %d records, want the %d acknowledged requests", n, accepted)
	}
	for idx := q.FirstIndex(); idx < q.NextIndex(); idx++ {
		if _, _, err := q.Read(idx, nil); err != nil {
			t.Fatalf("acknowledged record %d unreadable after the disk filled: %v", idx, err)
		}
	}
}
