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

// Tracker follows the engine's containers across cycles. It lists every
// container each cycle but inspects one only when it is new or its list
// State or Status changed: Status ("Up 2 hours (healthy)", "Restarting (1) 3
// seconds ago", "Exited (137) ...") changes on every start, restart, exit
// and health change, so an unchanged Status means unchanged inspect data.
// It is unsafe for concurrent use.
type Tracker struct {
	c    *Client
	gen  uint64
	byID map[string]*Container
	list []Summary
	insp Inspect
}

// NewTracker returns a tracker reading through c.
func NewTracker(c *Client) *Tracker {
	return &Tracker{c: c, byID: make(map[string]*Container)}
}

// Containers appends the current containers to dst. On a list error it
// returns dst unchanged and the error; an inspect error for one container
// keeps that container's previous data (or skips a new one) and is returned
// after the others were read.
func (t *Tracker) Containers(ctx context.Context, dst []*Container) ([]*Container, error) {
	var err error
	t.list, err = t.c.List(ctx, t.list)
	if err != nil {
		return dst, err
	}
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
	return dst, firstErr
}

func (t *Tracker) apply(c *Container, s *Summary) {
	in := &t.insp
	c.listState, c.listStatus = s.State, s.Status
	c.Name = strings.TrimPrefix(in.Name, "/")
	if c.Name == "" && len(s.Names) > 0 {
		c.Name = strings.TrimPrefix(s.Names[0], "/")
	}
	c.Image = in.Config.Image
	if c.Image == "" {
		c.Image = s.Image
	}
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
