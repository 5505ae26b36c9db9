package ingester

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"tillpipe/internal/obs"
	"tillpipe/internal/remotewrite"
	"tillpipe/internal/stream"
	"tillpipe/internal/wire"
)

// Defaults of [Options].
const (
	DefaultConcurrency     = 2
	DefaultBatchMaxSamples = 10_000
	DefaultFetchMaxWait    = time.Second
	DefaultMaxFetch        = 64
	DefaultRetryMin        = 250 * time.Millisecond
	DefaultRetryMax        = 30 * time.Second
	DefaultShutdownTimeout = 15 * time.Second
)

// Options configures an [Ingester]. JetStream and Backend are required; the
// zero value of every other field means its default.
type Options struct {
	// JetStream is a connected JetStream context; [Setup] must have run.
	JetStream jetstream.JetStream
	// Backend is the remote-write client of the backend.
	Backend *remotewrite.Client
	// Concurrency is the number of workers per class, each with one fetch
	// and one backend request at a time. Default [DefaultConcurrency].
	Concurrency int
	// BatchMaxSamples is the most samples one backend request carries; a
	// request covers whole messages, so a larger message goes alone.
	// Default [DefaultBatchMaxSamples].
	BatchMaxSamples int
	// MaxFetch caps the messages of one pull request. Default [DefaultMaxFetch].
	MaxFetch int
	// FetchMaxWait is how long a pull waits for messages, and so the most a
	// trickle of messages waits to be batched. Default [DefaultFetchMaxWait].
	FetchMaxWait time.Duration
	// Consumer must match the options given to [Setup]: the worker sends
	// in-progress signals every AckWait/3.
	Consumer ConsumerOptions
	// RetryMin and RetryMax bound the back-off between backend attempts.
	RetryMin, RetryMax time.Duration
	// ShutdownTimeout is how long, once Run's ctx is done, in-flight writes
	// and acks may take before they are cancelled. Default [DefaultShutdownTimeout].
	ShutdownTimeout time.Duration
	// Decoder bounds the frames accepted; larger ones are dead-lettered.
	Decoder wire.DecoderOptions
	// Classes to consume; default all of [wire.Classes].
	Classes    []wire.Class
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Ingester drains the telemetry stream into the backend. Create it with
// [New] and call Run once.
type Ingester struct {
	opts    Options
	log     *slog.Logger
	m       *metrics
	backend *backend
}

// New validates opts and registers the metrics.
func New(opts Options) (*Ingester, error) {
	if opts.JetStream == nil {
		return nil, fmt.Errorf("new ingester: nil JetStream: %w", ErrInvalidOption)
	}
	if opts.Backend == nil {
		return nil, fmt.Errorf("new ingester: nil Backend: %w", ErrInvalidOption)
	}
	for _, c := range opts.Classes {
		if !c.Valid() {
			return nil, fmt.Errorf("new ingester: class %s: %w", c, ErrInvalidOption)
		}
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.BatchMaxSamples <= 0 {
		opts.BatchMaxSamples = DefaultBatchMaxSamples
	}
	if opts.MaxFetch <= 0 {
		opts.MaxFetch = DefaultMaxFetch
	}
	if opts.FetchMaxWait <= 0 {
		opts.FetchMaxWait = DefaultFetchMaxWait
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = DefaultRetryMin
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = DefaultRetryMax
	}
	opts.RetryMax = max(opts.RetryMax, opts.RetryMin)
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	if len(opts.Classes) == 0 {
		opts.Classes = wire.Classes[:]
	}
	opts.Consumer = opts.Consumer.withDefaults()
	log := obs.Discard(opts.Logger).With("component", "ingester")
	m := newMetrics(opts.Registerer)
	return &Ingester{
		opts:    opts,
		log:     log,
		m:       m,
		backend: newBackend(opts.Backend, m, log, opts.RetryMin, opts.RetryMax),
	}, nil
}

// Run consumes every class until ctx is done, then stops fetching, finishes
// or naks what it holds within ShutdownTimeout, and returns. Each class has
// its own workers, so critical never waits behind a bulk backlog.
func (in *Ingester) Run(ctx context.Context) error {
	consumers := make([]jetstream.Consumer, len(in.opts.Classes))
	for i, c := range in.opts.Classes {
		cons, err := in.opts.JetStream.Consumer(ctx, stream.Name, ConsumerName(c))
		if err != nil {
			return fmt.Errorf("bind consumer %s (run setup first): %w", ConsumerName(c), err)
		}
		consumers[i] = cons
	}
	// hard ends ShutdownTimeout after ctx: it bounds the writes and acks
	// that may still finish once shutdown began.
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	var (
		tmu   sync.Mutex
		timer *time.Timer
	)
	stopAfter := context.AfterFunc(ctx, func() {
		tmu.Lock()
		timer = time.AfterFunc(in.opts.ShutdownTimeout, cancelHard)
		tmu.Unlock()
	})
	defer func() {
		stopAfter()
		tmu.Lock()
		if timer != nil {
			timer.Stop()
		}
		tmu.Unlock()
	}()

	in.log.Info("consuming", "stream", stream.Name, "classes", len(consumers), "concurrency", in.opts.Concurrency,
		"batch_max_samples", in.opts.BatchMaxSamples)
	var wg sync.WaitGroup
	for i, c := range in.opts.Classes {
		for range in.opts.Concurrency {
			w := newWorker(in, c, consumers[i])
			wg.Go(func() { w.run(ctx, hard) })
		}
	}
	wg.Wait()
	in.log.Info("stopped")
	return nil
}
