package stream

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tillpipe/internal/testenv"
)

func TestEnsureIdempotentConcurrent(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 { // four replicas starting at once
		wg.Go(func() {
			nc, err := nats.Connect(n.URL())
			if err != nil {
				errs <- err
				return
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			errs <- Ensure(ctx, js, Config{DedupWindow: 5 * time.Minute})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Ensure: %v", err)
		}
	}
	nc, _ := nats.Connect(n.URL())
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(ctx, Name)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if cfg.Duplicates != 5*time.Minute || cfg.Discard != jetstream.DiscardNew || cfg.Storage != jetstream.FileStorage || cfg.Subjects[0] != Subjects {
		t.Fatalf("stream config = %+v", cfg)
	}
	if _, err := js.KeyValue(ctx, ConfigBucket); err != nil {
		t.Fatalf("config bucket: %v", err)
	}
	if _, err := js.Stream(ctx, DeadLetterName); err != nil {
		t.Fatalf("dead-letter stream: %v", err)
	}
	// A changed limit is applied to the existing stream.
	if err := Ensure(ctx, js, Config{MaxBytes: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(ctx)
	if info.Config.MaxBytes != 1<<30 {
		t.Fatalf("MaxBytes after update = %d", info.Config.MaxBytes)
	}
	if err := Ensure(ctx, js, Config{MaxAge: time.Minute, DedupWindow: time.Hour}); err == nil {
		t.Fatal("Ensure accepted a dedup window longer than the max age")
	}
}

func TestSubjects(t *testing.T) {
	if s := Subject("s0042", "critical"); s != "telemetry.s0042.critical" {
		t.Fatal(s)
	}
	st, cl, err := ParseSubject("telemetry.s0042.bulk")
	if err != nil || st != "s0042" || cl != "bulk" {
		t.Fatalf("ParseSubject = %q %q %v", st, cl, err)
	}
	for _, bad := range []string{"telemetry.s1", "deadletter.s1.bulk", "telemetry..bulk", "telemetry.a.b.c"} {
		if _, _, err := ParseSubject(bad); err == nil {
			t.Errorf("ParseSubject(%q) accepted", bad)
		}
	}
	if MsgID("s1", "normal", 42) != "s1.normal.42" {
		t.Fatal(MsgID("s1", "normal", 42))
	}
	for s, ok := range map[string]bool{"s0042": true, "store-7_b": true, "": false, "a.b": false, "a*": false, "a b": false} {
		if ValidStore(s) != ok {
			t.Errorf("ValidStore(%q) = %v", s, !ok)
		}
	}
}
