package uplink

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tillpipe/internal/clock"
	"tillpipe/internal/stream"
)

// Backoff of WatchConfig while the bucket is missing or unreachable.
const (
	configRetryMin = time.Second
	configRetryMax = 10 * time.Second
)

var errWatchClosed = errors.New("config watch closed")

// WatchConfig applies the uplink limit from the config bucket
// ([stream.ConfigBucket]) until ctx ends: the key uplink-rate.<store> if it
// exists, else uplink-rate.default, else Options.Rate; each a decimal
// bytes/s, 0 meaning unlimited. A change applies within a second or so of
// the put; deleting the store's key falls back to the default. A missing or
// unreachable bucket is retried quietly (debug logs) with a backoff of up to
// 10 s. Run calls it unless Options.DisableConfigWatch is set; call it
// yourself only then. It returns nil when ctx ends.
func (u *Uplink) WatchConfig(ctx context.Context) error {
	wait := configRetryMin
	for {
		established, err := u.watchConfigOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if established {
			wait = configRetryMin
		}
		u.log.Debug("watch config bucket; retrying", "bucket", stream.ConfigBucket, "err", err, "retry_in", wait)
		if clock.Sleep(ctx, wait) != nil {
			return nil
		}
		wait = min(2*wait, configRetryMax)
	}
}

// rateSetting is one config key's value.
type rateSetting struct {
	set bool
	v   int64
}

func (u *Uplink) watchConfigOnce(ctx context.Context) (bool, error) {
	kv, err := u.js.KeyValue(ctx, stream.ConfigBucket)
	if err != nil {
		return false, fmt.Errorf("open key-value bucket %s: %w", stream.ConfigBucket, err)
	}
	ownKey := stream.RateKey(u.opts.Store)
	w, err := kv.WatchFiltered(ctx, []string{ownKey, stream.DefaultRateKey})
	if err != nil {
		return false, fmt.Errorf("watch %s in bucket %s: %w", ownKey, stream.ConfigBucket, err)
	}
	defer func() { _ = w.Stop() }()
	var own, def rateSetting
	initial := true
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case <-ctx.Done():
			return true, nil
		case e, ok = <-w.Updates():
		}
		if !ok {
			return true, errWatchClosed
		}
		if e == nil { // all initial values delivered
			initial = false
			if own.set || def.set {
				u.applyConfigRate(own, def)
			}
			continue
		}
		dst := &def
		if e.Key() == ownKey {
			dst = &own
		}
		switch e.Operation() {
		case jetstream.KeyValuePut:
			v, err := strconv.ParseInt(strings.TrimSpace(string(e.Value())), 10, 64)
			if err != nil || v < 0 {
				u.log.Warn("ignore config value: want decimal bytes/s", "key", e.Key(), "value", string(e.Value()))
				continue
			}
			*dst = rateSetting{set: true, v: v}
		default: // deleted or purged
			*dst = rateSetting{}
		}
		if !initial {
			u.applyConfigRate(own, def)
		}
	}
}

func (u *Uplink) applyConfigRate(own, def rateSetting) {
	r, from := u.opts.Rate, "options"
	switch {
	case own.set:
		r, from = own.v, stream.RateKey(u.opts.Store)
	case def.set:
		r, from = def.v, stream.DefaultRateKey
	}
	if r == u.Rate() {
		return
	}
	u.SetRate(r)
	u.log.Info("uplink rate limit changed", "bytes_per_second", r, "from", from)
}
