package uplink

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"tillpipe/internal/obs"
)

// Dial settings: reconnect every 200 to 500 ms (ReconnectWait plus up to
// 300 ms of jitter), forever, and notice a dead link within about a minute.
// With the uplink's [DefaultReconnectJitter] the first batch leaves within
// a second of central accepting connections again, spread over that second
// across a region's stores.
const (
	dialReconnectWait   = 200 * time.Millisecond
	dialReconnectJitter = 300 * time.Millisecond
	dialPingInterval    = 20 * time.Second
	dialMaxPingsOut     = 3
)

// Dial connects store's relay to central at url (comma-separated for a
// cluster; user:password in the URL for config-file users) with the
// credentials file creds ("" for none), named storerelay-<store>. Replies
// (PubAcks, the config watch) arrive on the store's own inbox prefix
// _INBOX_<store>, which is all deployments/nats lets a store subscribe to.
// The connection reconnects forever, starts even when central is
// unreachable (RetryOnFailedConnect; it connects in the background), keeps
// retrying after authorization errors, and has no reconnect buffer: a publish
// while disconnected fails at once and the uplink resends from disk. Status
// changes are logged; the uplink_connected gauge of an [Uplink] reads the
// connection's state directly. ctx bounds only the first attempt.
func Dial(ctx context.Context, url, creds, store string, logger *slog.Logger) (*nats.Conn, error) {
	name := "storerelay-" + store
	log := obs.Discard(logger).With("component", "uplink")
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", url, err)
	}
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, max(time.Until(dl), 100*time.Millisecond))
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.CustomInboxPrefix(InboxPrefix(store)),
		nats.Timeout(timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(dialReconnectWait),
		nats.ReconnectJitter(dialReconnectJitter, dialReconnectJitter),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(-1),
		nats.IgnoreAuthErrorAbort(),
		nats.PingInterval(dialPingInterval),
		nats.MaxPingsOutstanding(dialMaxPingsOut),
		nats.ConnectHandler(func(c *nats.Conn) {
			log.Info("connected to central", "url", c.ConnectedUrlRedacted())
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("disconnected from central", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("reconnected to central", "url", c.ConnectedUrlRedacted())
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			log.Info("connection to central closed")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Warn("nats async error", "subscription", subj, "err", err)
		}),
	}
	if creds != "" {
		opts = append(opts, nats.UserCredentials(creds))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s as %q: %w", url, name, err)
	}
	return nc, nil
}

// InboxPrefix is the reply-subject prefix of store's connection.
func InboxPrefix(store string) string { return "_INBOX_" + store }
