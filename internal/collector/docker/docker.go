// Package docker reads container state from the Docker Engine API over its
// unix socket with net/http, on connections whose reads and writes are raw
// system calls (package rawsys). Podman's Docker-compatible API answers
// the same three endpoints:
//
//	GET /containers/json?all=1   list (ContainerSummary)
//	GET /containers/{id}/json    inspect (ContainerInspectResponse)
//	GET /events?filters={"type":["container"]}&since=<s.ns>
//	                             container events (events.Message), streamed
//
// Paths carry no version prefix, so the daemon answers with its own (the
// fields read here are unchanged since API v1.24; events carry Type and
// Action since v1.22, before which only status).
//
// A [Client] makes the list and inspect requests of a cycle on one
// kept-alive connection; a [Tracker] turns them into [Container] values,
// inspecting only what changed. [Events] follows the event stream on a
// connection of its own, and a Tracker that follows it lists only after a
// container event (see [Tracker] for when else), instead of every cycle.
package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/valyala/fastjson"

	"tillpipe/internal/collector/rawsys"
)

// Options configures a [Client]. The zero value talks to
// /var/run/docker.sock with a 5 s timeout per request.
type Options struct {
	// Socket is the path of the engine's unix socket.
	Socket string
	// Timeout bounds one request.
	Timeout time.Duration
}

// Client is a minimal Docker Engine API client. It is unsafe for concurrent
// use (it reuses one response buffer).
type Client struct {
	hc       *http.Client
	timeout  time.Duration
	buf      bytes.Buffer
	parser   fastjson.Parser
	interned map[string]string
}

// NewClient returns a client for the socket in opts.
func NewClient(opts Options) *Client {
	sock := opts.Socket
	if sock == "" {
		sock = "/var/run/docker.sock"
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	// The connection is kept however long it is idle: with the event
	// stream open, the tracker lists once in 20 cycles (five minutes at
	// 15 s), and an idle timeout shorter than that made every such list
	// dial again and start a new connection's reader and writer
	// goroutines, and woke the agent between cycles to close the last
	// one. dockerd's API server sets a header timeout only, so it keeps
	// an idle connection too; an engine that closes it all the same (a
	// restart) costs the next request a new dial, not an error
	// (TestClient_EngineClosesKeptConnection).
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return rawsys.Dial(ctx, &net.Dialer{}, "unix", sock)
		},
		MaxIdleConns:        1,
		MaxIdleConnsPerHost: 1,
		DisableCompression:  true,
	}
	return &Client{hc: &http.Client{Transport: tr}, timeout: timeout, interned: make(map[string]string)}
}

// Close drops the idle connection to the engine.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Summary is one entry of GET /containers/json (the API's ContainerSummary),
// reduced to the fields read here.
type Summary struct {
	ID      string   `json:"Id"`
	Names   []string `json:"Names"`
	Image   string   `json:"Image"`
	ImageID string   `json:"ImageID"`
	// State is created, running, paused, restarting, removing, exited or dead.
	State string `json:"State"`
	// Status is the human-readable status, e.g. "Up 2 hours (healthy)" or
	// "Exited (137) 5 minutes ago".
	Status string `json:"Status"`
}

// Inspect is GET /containers/{id}/json (the API's
// ContainerInspectResponse), reduced to the fields read here.
type Inspect struct {
	ID           string `json:"Id"`
	Name         string `json:"Name"`
	RestartCount int    `json:"RestartCount"`
	State        struct {
		Status     string    `json:"Status"`
		Running    bool      `json:"Running"`
		Paused     bool      `json:"Paused"`
		Restarting bool      `json:"Restarting"`
		OOMKilled  bool      `json:"OOMKilled"`
		Dead       bool      `json:"Dead"`
		Pid        int       `json:"Pid"`
		ExitCode   int       `json:"ExitCode"`
		StartedAt  time.Time `json:"StartedAt"`
		FinishedAt time.Time `json:"FinishedAt"`
		Health     *struct {
			Status        string `json:"Status"`
			FailingStreak int    `json:"FailingStreak"`
		} `json:"Health"`
	} `json:"State"`
	Config struct {
		Image string `json:"Image"`
	} `json:"Config"`
	HostConfig struct {
		CgroupParent string `json:"CgroupParent"`
	} `json:"HostConfig"`
}

// APIError is a non-2xx answer from the engine.
type APIError struct {
	StatusCode int
	Message    string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("docker engine answered %d: %s", e.StatusCode, e.Message)
}

// List returns every container, running or not, reusing dst's storage
// (the Names of its entries included: they are valid until the next call).
// It runs every cycle, so it parses with a reused fastjson parser (about 5x
// cheaper than encoding/json on the full ContainerSummary objects) and
// interns the strings it keeps.
func (c *Client) List(ctx context.Context, dst []Summary) ([]Summary, error) {
	dst = dst[:0]
	if err := c.get(ctx, "/containers/json?all=1"); err != nil {
		return dst, err
	}
	v, err := c.parser.ParseBytes(c.buf.Bytes())
	if err != nil {
		return dst, fmt.Errorf("decode container list: %w", err)
	}
	arr, err := v.Array()
	if err != nil {
		return dst, fmt.Errorf("decode container list: %w", err)
	}
	if len(c.interned) > 4096 { // Status strings change over time
		clear(c.interned)
	}
	for _, e := range arr {
		if e.Type() != fastjson.TypeObject {
			return dst[:0], fmt.Errorf("decode container list: entry is %s, not an object", e.Type())
		}
		if len(dst) == cap(dst) {
			dst = append(dst, Summary{})
		} else {
			dst = dst[:len(dst)+1]
		}
		s := &dst[len(dst)-1]
		*s = Summary{
			ID:      c.intern(e.GetStringBytes("Id")),
			Names:   s.Names[:0], // reused across calls
			Image:   c.intern(e.GetStringBytes("Image")),
			ImageID: c.intern(e.GetStringBytes("ImageID")),
			State:   c.intern(e.GetStringBytes("State")),
			Status:  c.intern(e.GetStringBytes("Status")),
		}
		if s.ID == "" {
			return dst[:0], errors.New("decode container list: entry without Id")
		}
		if names := e.GetArray("Names"); len(names) > 0 {
			s.Names = append(s.Names, c.intern(names[0].GetStringBytes()))
		}
	}
	return dst, nil
}

func (c *Client) intern(b []byte) string {
	if s, ok := c.interned[string(b)]; ok {
		return s
	}
	s := string(b)
	c.interned[s] = s
	return s
}

// Inspect returns one container's details.
func (c *Client) Inspect(ctx context.Context, id string, dst *Inspect) error {
	if err := c.get(ctx, "/containers/"+id+"/json"); err != nil {
		return err
	}
	*dst = Inspect{}
	if err := json.Unmarshal(c.buf.Bytes(), dst); err != nil {
		return fmt.Errorf("decode container %s: %w", id, err)
	}
	return nil
}

func (c *Client) get(ctx context.Context, path string) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker"+path, nil)
	if err != nil {
		return fmt.Errorf("build docker request %s: %w", path, err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("get docker %s: %w", path, err)
	}
	defer resp.Body.Close()
	c.buf.Reset()
	if _, err := c.buf.ReadFrom(io.LimitReader(resp.Body, 16<<20)); err != nil {
		return fmt.Errorf("read docker %s: %w", path, err)
	}
	if resp.StatusCode/100 != 2 {
		var m struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(c.buf.Bytes(), &m)
		return &APIError{StatusCode: resp.StatusCode, Message: m.Message}
	}
	return nil
}
