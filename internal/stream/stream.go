// Package stream holds the NATS JetStream contract between the store relays
// and the central ingesters: subject and message-id formats, the stream and
// key-value bucket names, and Ensure, which creates them. The ingester side
// owns the stream (Ensure needs stream-admin rights); relays only publish to
// `telemetry.<store>.<class>` and read the config bucket.
package stream

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Names of the JetStream objects tillpipe uses.
const (
	// Name is the telemetry stream every relay publishes into.
	Name = "TILL_TELEMETRY"
	// Subjects is the telemetry stream's subject filter: telemetry.<store>.<class>.
	Subjects = "telemetry.*.*"
	// DeadLetterName is the stream for batches the ingester refused.
	DeadLetterName = "TILL_DEADLETTER"
	// DeadLetterSubjects is its filter: deadletter.<store>.<class>.
	DeadLetterSubjects = "deadletter.*.*"
	// ConfigBucket is the key-value bucket the relays watch (uplink-rate.<store>,
	// uplink-rate.default).
	ConfigBucket = "tillpipe-config"
	// HeaderReason carries the reason a batch was dead-lettered.
	HeaderReason = "Tillpipe-Reason"
)

var storeRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidStore reports whether s can be a store id: it becomes a subject token,
// so no dots, wildcards or spaces.
func ValidStore(s string) bool { return storeRE.MatchString(s) }

// Subject is the subject a store publishes a class's batches to.
func Subject(store, class string) string { return "telemetry." + store + "." + class }

// DeadLetterSubject is where a refused batch from store/class is copied.
func DeadLetterSubject(store, class string) string { return "deadletter." + store + "." + class }

// ParseSubject splits telemetry.<store>.<class>.
func ParseSubject(subj string) (store, class string, err error) {
	parts := strings.Split(subj, ".")
	if len(parts) != 3 || parts[0] != "telemetry" || parts[1] == "" || parts[2] == "" {
		return "", "", fmt.Errorf("subject %q is not telemetry.<store>.<class>", subj)
	}
	return parts[1], parts[2], nil
}

// MsgID is the Nats-Msg-Id of a batch: JetStream drops a second publish of
// the same id within the duplicate window, so a resend after a lost PubAck
// is harmless.
func MsgID(store, class string, seq uint64) string {
	return store + "." + class + "." + strconv.FormatUint(seq, 10)
}

// RateKey is the config-bucket key holding a store's uplink limit in bytes/s;
// DefaultRateKey applies to stores without their own key.
func RateKey(store string) string { return "uplink-rate." + store }

// DefaultRateKey is the fleet-wide uplink limit key.
const DefaultRateKey = "uplink-rate.default"

// Config is the stream's retention; the zero value of each field means its default.
type Config struct {
	Replicas    int           // default 1 (3 in production)
	MaxAge      time.Duration // default 72h
	MaxBytes    int64         // default unlimited (-1)
	DedupWindow time.Duration // default 20m
}

// ErrInvalidConfig is wrapped by Ensure's validation errors.
var ErrInvalidConfig = errors.New("invalid stream config")

// StreamConfig is the telemetry stream's JetStream config: file storage,
// limits retention, discard-new (when central is full, stores keep their
// backlog on their own disks instead of central dropping unread data).
func StreamConfig(c Config) jetstream.StreamConfig {
	c = c.withDefaults()
	return jetstream.StreamConfig{
		Name:        Name,
		Description: "tillpipe telemetry batches from store relays",
		Subjects:    []string{Subjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		MaxAge:      c.MaxAge,
		MaxBytes:    c.MaxBytes,
		Replicas:    c.Replicas,
		Duplicates:  c.DedupWindow,
	}
}

func (c Config) withDefaults() Config {
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.MaxAge <= 0 {
		c.MaxAge = 72 * time.Hour
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = -1
	}
	if c.DedupWindow <= 0 {
		c.DedupWindow = 20 * time.Minute
	}
	return c
}

// Ensure creates or updates the telemetry stream, the dead-letter stream and
// the config bucket. It is idempotent, so any number of ingester replicas can
// run it at once.
func Ensure(ctx context.Context, js jetstream.JetStream, c Config) error {
	c = c.withDefaults()
	if c.DedupWindow > c.MaxAge {
		return fmt.Errorf("dedup window %s longer than max age %s: %w", c.DedupWindow, c.MaxAge, ErrInvalidConfig)
	}
	if _, err := js.CreateOrUpdateStream(ctx, StreamConfig(c)); err != nil {
		return fmt.Errorf("create or update stream %s: %w", Name, err)
	}
	dl := jetstream.StreamConfig{
		Name:        DeadLetterName,
		Description: "tillpipe batches the ingester refused, with the reason in the " + HeaderReason + " header",
		Subjects:    []string{DeadLetterSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      30 * 24 * time.Hour,
		Replicas:    c.Replicas,
	}
	if _, err := js.CreateOrUpdateStream(ctx, dl); err != nil {
		return fmt.Errorf("create or update stream %s: %w", DeadLetterName, err)
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      ConfigBucket,
		Description: "tillpipe run-time config watched by the store relays",
		History:     5,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
	}); err != nil {
		return fmt.Errorf("create or update key-value bucket %s: %w", ConfigBucket, err)
	}
	return nil
}
