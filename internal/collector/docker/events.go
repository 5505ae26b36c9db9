package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"tillpipe/internal/clock"
	"tillpipe/internal/collector/rawsys"
)

// EventsOptions configures [Events]. The zero value follows
// /var/run/docker.sock, gives a connection 5 s to answer, and reconnects
// after 1 s, doubling up to 30 s.
type EventsOptions struct {
	// Socket is the path of the engine's unix socket.
	Socket string
	// Timeout bounds connecting and waiting for the response headers (not
	// the stream itself, which is idle for as long as nothing happens).
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the wait before a reconnection; each
	// failure doubles it, and a wait is jittered to between half and all of
	// it.
	MinBackoff, MaxBackoff time.Duration
	// Logger receives stream failures, at most once a minute; nil discards.
	Logger *slog.Logger
}

// dockerActions are the container actions of moby's api/types/events
// except exec_*, for an "event" filter: it is an allow-list, and dockerd
// applies it before it writes an event, so a healthcheck probe (an exec:
// exec_create, exec_start and exec_die every interval, 30 s by default, for
// every container with a healthcheck) does not wake the collector. Naming
// health_status makes dockerd match every value by prefix, so it also
// matches "health_status: healthy"; no value is a prefix of an exec_*
// action.
var dockerActions = []string{"archive-path", "attach", "checkpoint", "commit", "copy", "create", "destroy",
	"detach", "die", "export", "extract-to-dir", "health_status", "kill", "oom", "pause", "prune", "rename",
	"resize", "restart", "start", "stop", "top", "unpause", "update"}

// dockerQuery asks dockerd for the container events other than exec_*;
// podmanQuery asks Podman for every container event: Podman names actions
// differently (died before its compat layer renamed it die, remove,
// cleanup, init, exec_died...), and older Podman (libpod 2.x) ANDs every
// filter value, even those of one key, so that an allow-list matches
// nothing there.
var dockerQuery, podmanQuery = eventsQuery(map[string][]string{"type": {"container"}, "event": dockerActions}),
	eventsQuery(map[string][]string{"type": {"container"}})

func eventsQuery(filters map[string][]string) string {
	b, err := json.Marshal(filters)
	if err != nil {
		panic(err) // strings always encode
	}
	return "/events?filters=" + url.QueryEscape(string(b))
}

// libpodHeader is set by Podman on every API answer, never by dockerd.
const libpodHeader = "Libpod-Api-Version"

// errEngineKind ends a stream opened with the other engine's query.
var errEngineKind = errors.New("reconnect with the query for the engine that answered")

// Events follows the engine's container events (GET /events, a response
// that streams one JSON object per event for as long as the connection
// lasts) on a connection of its own, so that a [Tracker] lists the
// containers only after something changed. While nothing happens it costs
// nothing: its goroutine waits in a read in the netpoller.
//
// Every container event except the exec ones marks the containers changed:
// Docker's exec_create, exec_start, exec_die and exec_detach (a
// healthcheck runs as an exec, so each probe sends three) and Podman's exec
// and exec_died change nothing a Tracker reports. A healthcheck's result
// changing sends health_status (Docker: "health_status: healthy"). dockerd
// is asked not to send the exec events at all (see dockerActions); Podman,
// recognised by its Libpod-Api-Version header, is asked for every container
// event, and its exec events are dropped here. Each (re)connection marks
// the containers changed too, since events may have been missed while there
// was no stream; it asks for the events since just before it connected,
// because dockerd sends the response headers before it subscribes the
// stream.
//
// Run must be called once; the other methods are safe for concurrent use.
type Events struct {
	hc         *http.Client
	timeout    time.Duration
	minBackoff time.Duration
	maxBackoff time.Duration
	log        *slog.Logger

	// changes counts the events that mark the containers changed, plus one
	// per connection; a Tracker lists when it moved since its last list.
	// It is bumped before up is set, so that a reader seeing up also sees
	// the connection's bump.
	changes atomic.Uint64
	read    atomic.Uint64 // events read, whatever their action
	up      atomic.Bool   // a stream is open

	podman bool // the engine answered as Podman; Run's goroutine only
}

// NewEvents returns an Events for the socket in opts. Nothing is connected
// until Run.
func NewEvents(opts EventsOptions) *Events {
	sock := opts.Socket
	if sock == "" {
		sock = "/var/run/docker.sock"
	}
	e := &Events{timeout: opts.Timeout, minBackoff: opts.MinBackoff, maxBackoff: opts.MaxBackoff, log: opts.Logger}
	if e.timeout <= 0 {
		e.timeout = 5 * time.Second
	}
	if e.minBackoff <= 0 {
		e.minBackoff = time.Second
	}
	if e.maxBackoff < e.minBackoff {
		e.maxBackoff = max(30*time.Second, e.minBackoff)
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.log = e.log.With("component", "docker_events")
	dialer := &net.Dialer{Timeout: e.timeout}
	// A transport of its own: the stream holds its connection for as long
	// as it lasts and must not take or return the per-cycle Client's.
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return rawsys.Dial(ctx, dialer, "unix", sock)
		},
		DisableKeepAlives:     true,
		DisableCompression:    true,
		ResponseHeaderTimeout: e.timeout,
	}
	e.hc = &http.Client{Transport: tr}
	return e
}

// Connected reports whether a stream is open.
func (e *Events) Connected() bool { return e.up.Load() }

// Counts returns the number of events read and the number of changes
// signalled: the events other than exec_* plus one per connection.
func (e *Events) Counts() (read, changes uint64) { return e.read.Load(), e.changes.Load() }

// state returns whether a stream is open and the change count. It reads up
// before changes, the reverse of the order follow writes them in, so that
// up true comes with the bump of the connection that set it.
func (e *Events) state() (up bool, changes uint64) {
	up = e.up.Load()
	return up, e.changes.Load()
}

// Run follows the events until ctx is done, reconnecting with a jittered
// exponential backoff whenever the stream fails or ends (the engine
// restarting, or not serving events at all). It returns nil when ctx is
// done.
func (e *Events) Run(ctx context.Context) error {
	defer e.hc.CloseIdleConnections()
	backoff := e.minBackoff
	var logged time.Time
	switched := false
	for {
		start := time.Now()
		err := e.follow(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errEngineKind) && !switched {
			switched = true
			continue // at once, once: the engine is up
		}
		switched = false
		if time.Since(start) >= e.maxBackoff {
			backoff = e.minBackoff // the stream had lasted: start over
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		if now := time.Now(); now.Sub(logged) >= time.Minute {
			logged = now
			e.log.Warn("follow docker events", "err", err, "retry_in", wait.Round(time.Millisecond))
		}
		if clock.Sleep(ctx, wait) != nil {
			return nil
		}
		backoff = min(2*backoff, e.maxBackoff)
	}
}

// eventMessage is the part of an event (moby's events.Message) read here.
// Engines before API 1.22 sent only status (the action) and no Type.
type eventMessage struct {
	Type   string `json:"Type"`
	Action string `json:"Action"`
	Status string `json:"status"`
}

// follow opens one stream and reads it until it fails or ends.
func (e *Events) follow(ctx context.Context) error {
	// Events since just before the request: dockerd flushes the response
	// headers before it subscribes the stream, and replays its buffer of
	// recent events from since.
	since := time.Now()
	query := dockerQuery
	if e.podman {
		query = podmanQuery
	}
	u := fmt.Sprintf("http://docker%s&since=%d.%09d", query, since.Unix(), since.Nanosecond())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("build docker events request: %w", err)
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		return fmt.Errorf("get docker /events: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var m struct {
			Message string `json:"message"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&m)
		return &APIError{StatusCode: resp.StatusCode, Message: m.Message}
	}
	if podman := resp.Header.Get(libpodHeader) != ""; podman != e.podman {
		e.podman = podman
		return errEngineKind
	}
	e.changes.Add(1)
	e.up.Store(true)
	defer e.up.Store(false)
	dec := json.NewDecoder(resp.Body)
	for {
		var m eventMessage
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("docker /events stream ended")
			}
			return fmt.Errorf("read docker /events: %w", err)
		}
		e.read.Add(1)
		if changes(&m) {
			e.changes.Add(1)
		}
	}
}

// changes reports whether m may change what a Tracker reports.
func changes(m *eventMessage) bool {
	if m.Type != "container" && m.Type != "" {
		return false // an engine that ignored the type filter
	}
	action := m.Action
	if action == "" {
		action = m.Status
	}
	return action != "exec" && !strings.HasPrefix(action, "exec_")
}
