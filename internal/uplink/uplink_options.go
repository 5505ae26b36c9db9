package uplink

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"tillpipe/internal/buffer"
	"tillpipe/internal/obs"
	"tillpipe/internal/stream"
	"tillpipe/internal/wire"
)

// Defaults for zero [Options] fields.
const (
	DefaultMaxInflight       = 64
	DefaultMaxInflightBytes  = 16 << 20
	DefaultAckTimeout        = 10 * time.Second
	DefaultReconnectJitter   = 500 * time.Millisecond
	DefaultLiveWindow        = time.Minute
	DefaultRetryBackoff      = time.Second
	DefaultPermissionBackoff = 30 * time.Second
	DefaultCommitInterval    = 100 * time.Millisecond
	DefaultShutdownGrace     = 2 * time.Second
)

// ErrInvalidOption is wrapped by every error about a bad [Options] field.
var ErrInvalidOption = errors.New("uplink: invalid option")

// Options configure an [Uplink]. Store, Conn and Outbox are required; every
// other zero field means its default.
type Options struct {
	// Store is the store id: the subject is telemetry.<Store>.<class> and
	// the message id <Store>.<class>.<seq>.
	Store string
	// Conn is the connection to central; see [Dial]. The Uplink never
	// closes it.
	Conn *nats.Conn
	// Outbox holds the sealed batches, one queue per class named after
	// [wire.Class.String]: "critical", "normal" and "bulk".
	Outbox *buffer.Group
	// Rate limits uplink bytes/s (frame, subject and headers); 0 means
	// unlimited. [Uplink.SetRate] and the config bucket change it at run time.
	Rate int64
	// MaxInflight bounds the batches published and not yet acknowledged
	// (default 64); MaxInflightBytes bounds their frame bytes (default
	// 16 MiB; one batch is always allowed).
	MaxInflight      int
	MaxInflightBytes int64
	// AckTimeout is how long a publish waits for its PubAck before it
	// counts as failed and is sent again (default 10 s).
	AckTimeout time.Duration
	// ReconnectJitter bounds the random delay before the first publish
	// after the link comes back, so a region's stores do not all flush in
	// the same instant (default 500 ms; negative: none).
	ReconnectJitter time.Duration
	// LiveWindow is how old the oldest unsent live batch of a class may get
	// before the class's live pointer moves to the tail and everything
	// older becomes backlog (default 1 min).
	LiveWindow time.Duration
	// RetryBackoff caps the wait before resending after a timeout, a
	// missing stream or another refusal (default 1 s; the wait starts at a
	// tenth of it and doubles).
	RetryBackoff time.Duration
	// PermissionBackoff is the wait after central refused a publish for
	// permissions (default 30 s).
	PermissionBackoff time.Duration
	// CommitInterval is how often at most the acknowledged prefix is
	// committed to the outbox (an fsync; default 100 ms).
	CommitInterval time.Duration
	// ShutdownGrace is how long Run waits for outstanding acks once its
	// context ends (default 2 s). Unacknowledged batches stay in the outbox.
	ShutdownGrace time.Duration
	// DisableConfigWatch stops Run from watching the config bucket for
	// uplink-rate.<Store> and uplink-rate.default.
	DisableConfigWatch bool
	// Logger receives the uplink's logs; nil discards them.
	Logger *slog.Logger
	// Registerer gets the uplink's metrics, named without the
	// tillpipe_relay_ prefix the relay wraps it with; nil registers nothing.
	Registerer prometheus.Registerer
	// Now is the clock of the rate limiter, the live window and latencies
	// (default time.Now).
	Now func() time.Time
}

func (o Options) withDefaults() (Options, error) {
	switch {
	case !stream.ValidStore(o.Store):
		return o, fmt.Errorf("store %q: %w", o.Store, ErrInvalidOption)
	case o.Conn == nil:
		return o, fmt.Errorf("conn is nil: %w", ErrInvalidOption)
	case o.Outbox == nil:
		return o, fmt.Errorf("outbox is nil: %w", ErrInvalidOption)
	case o.Rate < 0:
		return o, fmt.Errorf("rate %d: %w", o.Rate, ErrInvalidOption)
	case o.MaxInflight < 0, o.MaxInflightBytes < 0, o.AckTimeout < 0, o.LiveWindow < 0,
		o.RetryBackoff < 0, o.PermissionBackoff < 0, o.CommitInterval < 0, o.ShutdownGrace < 0:
		return o, fmt.Errorf("negative limit or duration: %w", ErrInvalidOption)
	}
	for _, c := range wire.Classes {
		if o.Outbox.Queue(c.String()) == nil {
			return o, fmt.Errorf("outbox has no queue %q: %w", c.String(), ErrInvalidOption)
		}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if o.MaxInflight == 0 {
		o.MaxInflight = DefaultMaxInflight
	}
	if o.MaxInflightBytes == 0 {
		o.MaxInflightBytes = DefaultMaxInflightBytes
	}
	def(&o.AckTimeout, DefaultAckTimeout)
	def(&o.ReconnectJitter, DefaultReconnectJitter)
	o.ReconnectJitter = max(o.ReconnectJitter, 0)
	def(&o.LiveWindow, DefaultLiveWindow)
	def(&o.RetryBackoff, DefaultRetryBackoff)
	def(&o.PermissionBackoff, DefaultPermissionBackoff)
	def(&o.CommitInterval, DefaultCommitInterval)
	def(&o.ShutdownGrace, DefaultShutdownGrace)
	o.Logger = obs.Discard(o.Logger)
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, nil
}
