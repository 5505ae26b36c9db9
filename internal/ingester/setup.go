package ingester

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tillpipe/internal/stream"
	"tillpipe/internal/wire"
)

// ErrInvalidOption is wrapped by every error about a bad option.
var ErrInvalidOption = errors.New("invalid option")

// Defaults of the durable consumers, chosen for a backend write of a few
// seconds at most and outages of minutes to hours (see the package comment).
const (
	DefaultAckWait       = time.Minute
	DefaultMaxDeliver    = 10
	DefaultMaxAckPending = 2000
)

// ConsumerOptions shapes the three durable pull consumers. The zero value of
// each field means its default.
type ConsumerOptions struct {
	// AckWait is how long JetStream waits for an ack before redelivering;
	// the ingester sends in-progress signals every AckWait/3 while it holds a
	// message. Default [DefaultAckWait].
	AckWait time.Duration
	// MaxDeliver bounds deliveries of one message. Default [DefaultMaxDeliver].
	MaxDeliver int
	// MaxAckPending bounds unacked messages per consumer, across every
	// replica. Default [DefaultMaxAckPending].
	MaxAckPending int
	// Replicas of the consumer state; default the stream's.
	Replicas int
}

func (o ConsumerOptions) withDefaults() ConsumerOptions {
	if o.AckWait <= 0 {
		o.AckWait = DefaultAckWait
	}
	if o.MaxDeliver <= 0 {
		o.MaxDeliver = DefaultMaxDeliver
	}
	if o.MaxAckPending <= 0 {
		o.MaxAckPending = DefaultMaxAckPending
	}
	return o
}

// backOff is the redelivery schedule after an ack timeout: AckWait, then
// growing to 20 times AckWait. JetStream uses it instead of AckWait.
func (o ConsumerOptions) backOff() []time.Duration {
	steps := []time.Duration{1, 2, 5, 10, 20}
	out := make([]time.Duration, 0, len(steps))
	for _, s := range steps {
		if len(out) == o.MaxDeliver {
			break
		}
		out = append(out, s*o.AckWait)
	}
	return out
}

// ConsumerName is the durable name of the consumer of class c: ingester-<class>.
func ConsumerName(c wire.Class) string { return "ingester-" + c.String() }

// FilterSubject is the subject filter of class c's consumer: telemetry.*.<class>.
func FilterSubject(c wire.Class) string { return "telemetry.*." + c.String() }

// ConsumerConfig is the JetStream config of class c's durable pull consumer.
func ConsumerConfig(c wire.Class, o ConsumerOptions) jetstream.ConsumerConfig {
	o = o.withDefaults()
	return jetstream.ConsumerConfig{
		Durable:       ConsumerName(c),
		Description:   "tillpipe ingesters, " + c.String() + " class",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxDeliver:    o.MaxDeliver,
		BackOff:       o.backOff(),
		FilterSubject: FilterSubject(c),
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
		MaxAckPending: o.MaxAckPending,
		MaxWaiting:    512,
		Replicas:      o.Replicas,
	}
}

// SetupOptions configures [Setup].
type SetupOptions struct {
	Stream   stream.Config
	Consumer ConsumerOptions
}

// Setup creates or updates the telemetry and dead-letter streams, the config
// bucket and one durable pull consumer per class. It is idempotent: any number
// of replicas may run it at once, and a changed option updates what exists.
func Setup(ctx context.Context, js jetstream.JetStream, o SetupOptions) error {
	if js == nil {
		return fmt.Errorf("setup: nil JetStream: %w", ErrInvalidOption)
	}
	if err := stream.Ensure(ctx, js, o.Stream); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	for _, c := range wire.Classes {
		cfg := ConsumerConfig(c, o.Consumer)
		if _, err := js.CreateOrUpdateConsumer(ctx, stream.Name, cfg); err != nil {
			return fmt.Errorf("create or update consumer %s on %s: %w", cfg.Durable, stream.Name, err)
		}
	}
	return nil
}
