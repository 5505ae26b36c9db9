package docker

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"
)

// Container is what the collector knows about one container. Its fields
// must not be modified; the pointer stays the same across cycles while the
// container exists.
type Container struct {
	ID    string
	Name  string // without Docker's leading slash
	Image string // as the container was created, e.g. "nginx:1.27"
	// State is created, running, paused, restarting, removing, exited or dead.
	State        string
	Health       string // healthy, unhealthy or starting; "" without a healthcheck
	RestartCount int
	StartedAt    time.Time // zero when never started
	OOMKilled    bool

	listState, listStatus string // the list's State and Status when last inspected
	gen                   uint64
}

// States are the values of [Container.State], in the API's order.
var States = []string{"created", "running", "paused", "restarting", "removing", "exited", "dead"}

// HealthStatuses are the values of [Container.Health].
var HealthStatuses = []string{"starting", "healthy", "unhealthy"}

// ReconcileCycles is the most cycles a [Tracker] following [Events] goes
// without listing: it lists at least once every ReconcileCycles cycles
// (five minutes at the default 15 s) even when no event came. Events can be
// lost while the stream stays up: dockerd drops an event for a subscriber
// whose buffer (1,024 events) stays full for 100 ms (its pubsub timeout);
// Podman reads its events back from journald or a log file, which can
// rate-limit, rotate or (events_logger=none) not keep them; a compatible
// engine may not send every action. The reconcile list bounds how long such
// a loss stays unseen, for a twentieth of the cost of listing every cycle.
const ReconcileCycles = 20

// Tracker follows the engine's containers across cycles. It lists the
// containers and inspects one only when it is new or its list State or
// Status changed: Status ("Up 2 hours (healthy)", "Restarting (1) 3
// seconds ago", "Exited (137) ...") changes on every start, restart, exit
// and health change, so an unchanged Status means unchanged inspect data.
//
// By default it lists every cycle. Following [Events] (see
// [Tracker.Follow]), it lists only when it must and otherwise answers with
// the containers of its last list: on the first cycle; after any
// container event other than exec_* since that list; on every cycle while
// no event stream is open (the engine is down, restarting, or does not
// serve events); after the stream (re)connects; after a list that failed
// or an inspect that failed; and at least every [ReconcileCycles] cycles.
// dockerd makes a change visible to the list and inspect before it sends
// the change's event, so the containers reported are those that listing
// every cycle reports, except that a change whose event is still in flight
// (microseconds) when a cycle starts shows one cycle later.
//
// It is unsafe for concurrent use.
type Tracker struct {
	c    *Client
	gen  uint64
	byID map[string]*Container
	list []Summary
	insp Inspect

	ev    *Events
	cur   []*Container // the answer of the last list, in its order
	fresh bool         // cur is complete: the last list and its inspects succeeded
	seen  uint64       // ev's change count read before the last list
	quiet int          // cycles answered from cur since the last list
	// listed: the last Containers listed the engine's containers.
	listed bool
}

// NewTracker returns a tracker reading through c.
func NewTracker(c *Client) *Tracker {
	return &Tracker{c: c, byID: make(map[string]*Container)}
}

// Follow makes t list only when ev reports a change (see [Tracker]); ev's
// Run is the caller's to start and stop. Call it before the first
// Containers.
func (t *Tracker) Follow(ev *Events) { t.ev = ev }

// Containers appends the current containers to dst. On a list error it
// returns dst unchanged and the error; an inspect error for one container
// keeps that container's previous data (or skips a new one) and is returned
// after the others were read.
func (t *Tracker) Containers(ctx context.Context, dst []*Container) ([]*Container, error) {
	var seen uint64
	if t.ev != nil {
		var up bool
		up, seen = t.ev.state()
		if up && t.fresh && seen == t.seen && t.quiet < ReconcileCycles-1 {
			t.quiet++
			t.listed = false
			return append(dst, t.cur...), nil
		}
	}
	t.listed = true
	var err error
	t.list, err = t.c.List(ctx, t.list)
	if err != nil {
		t.fresh = false
		return dst, err
	}
	start := len(dst)
	t.gen++
	var firstErr error
	for i := range t.list {
		s := &t.list[i]
		c := t.byID[s.ID]
		if c == nil || c.listStatus != s.Status || c.listState != s.State {
			if ierr := t.c.Inspect(ctx, s.ID, &t.insp); ierr != nil {
				var ae *APIError
				if errors.As(ierr, &ae) && ae.StatusCode == http.StatusNotFound {
					continue // removed since the list
				}
				if firstErr == nil {
					firstErr = ierr
				}
				if c == nil {
					continue
				}
			} else {
				if c == nil {
					c = &Container{ID: s.ID}
					t.byID[s.ID] = c
				}
				t.apply(c, s)
			}
		}
		c.gen = t.gen
		dst = append(dst, c)
	}
	for id, c := range t.byID {
		if c.gen != t.gen {
			delete(t.byID, id)
		}
	}
	if t.ev != nil {
		clear(t.cur)
		t.cur = append(t.cur[:0], dst[start:]...)
		t.fresh, t.seen, t.quiet = firstErr == nil, seen, 0
	}
	return dst, firstErr
}

// Listed reports whether the last [Tracker.Containers] listed the
// engine's containers. When it did not, they are those of its last list:
// the engine's event stream reported no change since.
func (t *Tracker) Listed() bool { return t.listed }

func (t *Tracker) apply(c *Container, s *Summary) {
	in := &t.insp
	c.listState, c.listStatus = s.State, s.Status
	name := strings.TrimPrefix(in.Name, "/")
	if name == "" && len(s.Names) > 0 {
		name = strings.TrimPrefix(s.Names[0], "/")
	}
	image := in.Config.Image
	if image == "" {
		image = s.Image
	}
	c.Name, c.Image = keep(c.Name, name), keep(c.Image, image)
	c.State = s.State
	if in.State.Status != "" {
		c.State = in.State.Status
	}
	c.Health = ""
	if h := in.State.Health; h != nil && h.Status != "none" {
		c.Health = h.Status
	}
	c.RestartCount = in.RestartCount
	c.StartedAt = in.State.StartedAt
	c.OOMKilled = in.State.OOMKilled
}

// keep returns old if it equals s, and s otherwise. A container is
// inspected again whenever its list Status changes ("Up 5 minutes", then
// "Up 6 minutes"), and each inspect decodes new strings: keeping the old
// ones keeps the pointers the collector's series keys hold, which compare
// without reading their bytes, for each of a container's 30 or so series
// every cycle.
func keep(old, s string) string {
	if old == s {
		return old
	}
	return s
}
