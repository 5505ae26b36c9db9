package testenv

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/nats-io/nats.go"

	"tillpipe/internal/remotewrite"
)

// TestVictoriaMetricsRoundTrip writes through remote-write and reads the
// exact samples back, across a restart, with deduplication off.
func TestVictoriaMetricsRoundTrip(t *testing.T) {
	vm := StartVictoriaMetrics(t)
	c, err := remotewrite.NewClient(remotewrite.ClientOptions{URL: vm.WriteURL()})
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Now().Add(-time.Minute).UnixMilli()
	wr := prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "testenv_probe"}, {Name: "store", Value: "s1"}},
		Samples: []prompb.Sample{{Value: 1, Timestamp: ts}, {Value: 2, Timestamp: ts + 15000}},
	}}}
	ctx := context.Background()
	for range 2 { // the same samples twice: both must be kept
		if err := c.Send(ctx, wr.MarshalProtobuf(nil)); err != nil {
			t.Fatal(err)
		}
	}
	vm.Stop()
	if _, err := http.Get(vm.URL() + "/health"); err == nil {
		t.Fatal("victoria-metrics still answers after Stop")
	}
	vm.Start()
	ss, err := vm.Export(ctx, `{__name__="testenv_probe"}`)
	if err != nil {
		t.Fatal(err)
	}
	if len(ss) != 1 || ss[0].Metric["store"] != "s1" || len(ss[0].Timestamps) != 4 {
		t.Fatalf("export = %+v, want one series with 4 raw samples", ss)
	}
	if !strings.Contains(ss[0].Key(), `store="s1"`) {
		t.Fatalf("Key() = %s", ss[0].Key())
	}
}

// TestNATSRestart checks a JetStream stream survives Stop/Start on the same
// port and store directory, as the outage tests need.
func TestNATSRestart(t *testing.T) {
	n := StartNATS(t, NATSOptions{})
	nc, err := nats.Connect(n.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := nc.JetStream()
	if _, err := js.AddStream(&nats.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: nats.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish("t.a", []byte("x")); err != nil {
		t.Fatal(err)
	}
	n.Stop()
	n.Start()
	deadline := time.Now().Add(20 * time.Second)
	for {
		si, err := js.StreamInfo("T")
		if err == nil {
			if si.State.Msgs != 1 {
				t.Fatalf("stream has %d messages after restart, want 1", si.State.Msgs)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream info after restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
