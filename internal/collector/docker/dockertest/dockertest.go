// Package dockertest serves the Docker Engine API endpoints the collector
// reads, on a unix socket, from JSON files captured in the real API's shapes:
//
//	<dir>/containers.json          GET /containers/json?all=1
//	<dir>/containers/<id>.json     GET /containers/<id>/json
//	<dir>/events.jsonl             GET /events (what [Server.Emit] sends)
//
// Files are read on every request, so a test changes the engine's answer by
// rewriting them.
//
// GET /events streams as dockerd does: a 200 with Content-Type
// application/json and a chunked body of one JSON object per event, each
// followed by a newline and flushed, until the client goes away. It honours
// the filters type, event and container with dockerd's matching rules (an
// "event" filter naming health_status, exec_create or exec_start matches by
// prefix), and since, replaying the last 256 events emitted at or after it
// as dockerd replays its buffer. Events are sent only when a test calls
// [Server.Emit]; [Server.SetEventsDown] ends the streams as an engine
// restart would; [Server.SetPodman] answers as an older Podman does where
// the collector can tell.
package dockertest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pastLimit is how many emitted events the server keeps for since, as
// dockerd's eventsLimit.
const pastLimit = 256

// Server is a fake engine. Its methods are safe for concurrent use.
type Server struct {
	// Socket is the unix socket path to give the client.
	Socket string
	// Dir holds the JSON answers.
	Dir string

	lists, inspects, eventConnects, conns atomic.Int64
	podman                                atomic.Bool
	srv                                   *httptest.Server

	mu      sync.Mutex // guards the fields below
	streams map[*stream]struct{}
	past    []message
	down    bool
	closed  chan struct{} // closed when the test ends, ending every stream
}

// stream is one open GET /events.
type stream struct {
	filter filter
	ch     chan []byte   // encoded events to write
	end    chan struct{} // closed by SetEventsDown
}

// message is moby's events.Message (api/types/events), field for field and
// in its order, so that encoding/json writes an event as dockerd does.
type message struct {
	Status   string `json:"status,omitempty"`
	ID       string `json:"id,omitempty"`
	From     string `json:"from,omitempty"`
	Type     string
	Action   string
	Actor    actor
	Scope    string `json:"scope,omitempty"`
	Time     int64  `json:"time,omitempty"`
	TimeNano int64  `json:"timeNano,omitempty"`
}

type actor struct {
	ID         string
	Attributes map[string]string
}

// Start serves dir on a socket in a temporary directory until the test ends.
func Start(tb testing.TB, dir string) *Server {
	tb.Helper()
	s := &Server{Socket: filepath.Join(tb.TempDir(), "docker.sock"), Dir: dir,
		streams: make(map[*stream]struct{}), closed: make(chan struct{})}
	ln, err := net.Listen("unix", s.Socket)
	if err != nil {
		tb.Fatalf("listen on %s: %v", s.Socket, err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.srv = srv
	srv.Start()
	tb.Cleanup(srv.Close)
	// Runs before srv.Close, which waits for the handlers: streams end.
	tb.Cleanup(func() { close(s.closed) })
	return s
}

// Lists and Inspects count the requests served.
func (s *Server) Lists() int64    { return s.lists.Load() }
func (s *Server) Inspects() int64 { return s.inspects.Load() }

// Conns counts the connections accepted.
func (s *Server) Conns() int64 { return s.conns.Load() }

// CloseConnections closes every client connection, idle or not, as an
// engine restart does.
func (s *Server) CloseConnections() { s.srv.CloseClientConnections() }

// EventConnects counts the GET /events streams opened (answered 200).
func (s *Server) EventConnects() int64 { return s.eventConnects.Load() }

// EventStreams returns the number of GET /events streams open now.
func (s *Server) EventStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

// SetPodman(true) makes the server answer as an older Podman (libpod 2.x)
// where a client can tell: every answer carries Podman's
// Libpod-Api-Version header, and an events filter passes an event only
// when the event matches every value (libpod 2.x ANDs them, even those of
// one key; "event" values match the action exactly). The answers are the
// files' all the same.
func (s *Server) SetPodman(on bool) { s.podman.Store(on) }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Api-Version", "1.47")
	if s.podman.Load() {
		w.Header().Set("Libpod-Api-Version", "2.2.1")
	}
	w.Header().Set("Content-Type", "application/json")
	path := r.URL.Path
	switch {
	case path == "/containers/json":
		s.lists.Add(1)
		if r.URL.Query().Get("all") != "1" {
			http.Error(w, `{"message":"test server wants all=1"}`, http.StatusBadRequest)
			return
		}
		s.file(w, filepath.Join(s.Dir, "containers.json"), "")
	case strings.HasPrefix(path, "/containers/") && strings.HasSuffix(path, "/json"):
		s.inspects.Add(1)
		id := strings.TrimSuffix(strings.TrimPrefix(path, "/containers/"), "/json")
		if strings.ContainsAny(id, "/.") {
			http.Error(w, `{"message":"bad id"}`, http.StatusBadRequest)
			return
		}
		s.file(w, filepath.Join(s.Dir, "containers", id+".json"), id)
	case path == "/events":
		s.events(w, r)
	default:
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"message":"page not found"}`))
	}
}

func (s *Server) file(w http.ResponseWriter, path, id string) {
	b, err := os.ReadFile(path)
	if err != nil {
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"message":"No such container: ` + id + `"}`))
		return
	}
	_, _ = w.Write(b)
}

// events serves one GET /events stream.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	fail := func(code int, msg string) {
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"message": msg})
	}
	q := r.URL.Query()
	f, err := parseFilter(q.Get("filters"))
	if err != nil {
		fail(http.StatusBadRequest, err.Error())
		return
	}
	since, err := parseSince(q.Get("since"))
	if err != nil {
		fail(http.StatusBadRequest, err.Error())
		return
	}
	if q.Has("until") {
		fail(http.StatusBadRequest, "test server does not serve until")
		return
	}
	st := &stream{filter: f, ch: make(chan []byte, pastLimit), end: make(chan struct{})}
	s.mu.Lock()
	if s.down {
		s.mu.Unlock()
		fail(http.StatusInternalServerError, "test server: events are down")
		return
	}
	if since > 0 {
		for i := range s.past {
			if m := &s.past[i]; m.TimeNano >= since && f.include(m, s.podman.Load()) {
				st.ch <- encode(m)
			}
		}
	}
	s.streams[st] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.streams, st)
		s.mu.Unlock()
	}()

	s.eventConnects.Add(1)
	fl := w.(http.Flusher)
	w.WriteHeader(http.StatusOK)
	fl.Flush()
	for {
		select {
		case b := <-st.ch:
			if _, err := w.Write(b); err != nil {
				return
			}
			fl.Flush()
		case <-st.end:
			return
		case <-s.closed:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// Emit sends the first event of <Dir>/events.jsonl whose Action is action,
// stamped with the current time as dockerd stamps its events, to every open
// GET /events stream whose filters include it, and keeps it for streams
// opened later with a since at or before it. It returns the number of
// streams it was sent to.
func (s *Server) Emit(tb testing.TB, action string) int {
	tb.Helper()
	m, err := s.readEvent(action)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now().UTC()
	m.Time, m.TimeNano = now.Unix(), now.UnixNano()
	b := encode(&m)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.past) == pastLimit {
		s.past = append(s.past[:0], s.past[1:]...)
	}
	s.past = append(s.past, m)
	n := 0
	for st := range s.streams {
		if !st.filter.include(&m, s.podman.Load()) {
			continue
		}
		select {
		case st.ch <- b:
			n++
		default:
			tb.Errorf("event stream backlog over %d events: the client does not read", pastLimit)
		}
	}
	return n
}

func (s *Server) readEvent(action string) (message, error) {
	path := filepath.Join(s.Dir, "events.jsonl")
	f, err := os.Open(path)
	if err != nil {
		return message{}, fmt.Errorf("read test events: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return message{}, fmt.Errorf("decode %s: %w", path, err)
		}
		if m.Action == action {
			return m, nil
		}
	}
	if err := sc.Err(); err != nil {
		return message{}, fmt.Errorf("read %s: %w", path, err)
	}
	return message{}, fmt.Errorf("no event with Action %q in %s", action, path)
}

// SetEventsDown(true) ends every open GET /events stream and answers new
// ones 500 until SetEventsDown(false); the other endpoints keep answering.
func (s *Server) SetEventsDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
	if down {
		for st := range s.streams {
			close(st.end)
			delete(s.streams, st)
		}
	}
}

// encode writes m as dockerd's json.Encoder does: one line.
func encode(m *message) []byte {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(m); err != nil {
		panic(err) // strings and integers always encode
	}
	return buf.Bytes()
}

// filter is the filters parameter of GET /events.
type filter map[string]map[string]bool

// parseFilter decodes filters as moby's filters.FromJSON does: a map of
// lists, or the legacy map of maps.
func parseFilter(s string) (filter, error) {
	f := filter{}
	if s == "" {
		return f, nil
	}
	var lists map[string][]string
	if err := json.Unmarshal([]byte(s), &lists); err == nil {
		for k, vs := range lists {
			f[k] = map[string]bool{}
			for _, v := range vs {
				f[k][v] = true
			}
		}
	} else if err := json.Unmarshal([]byte(s), (*map[string]map[string]bool)(&f)); err != nil {
		return nil, fmt.Errorf("invalid filter %q", s)
	}
	for k := range f {
		if k != "type" && k != "event" && k != "container" {
			return nil, fmt.Errorf("test server does not serve filter %q", k)
		}
	}
	return f, nil
}

// include reports whether m passes f, by the rules of moby's
// daemon/events.Filter.Include for the keys served here, or of Podman
// libpod 2.x's events filters.
func (f filter) include(m *message, podman bool) bool {
	if podman {
		for k, vs := range f {
			for v := range vs {
				switch {
				case k == "type" && m.Type != v,
					k == "event" && m.Action != v,
					k == "container" && m.Actor.Attributes["name"] != v && !strings.HasPrefix(m.Actor.ID, v):
					return false
				}
			}
		}
		return true
	}
	ev := f["event"]
	matchEvent := f.exact("event", m.Action)
	if ev["health_status"] || ev["exec_create"] || ev["exec_start"] {
		matchEvent = f.fuzzy("event", m.Action)
	}
	return matchEvent && f.exact("type", m.Type) &&
		(f.fuzzy("container", m.Actor.ID) || f.fuzzy("container", m.Actor.Attributes["name"]))
}

// exact is filters.Args.ExactMatch: true without values for key.
func (f filter) exact(key, v string) bool {
	vs := f[key]
	return len(vs) == 0 || vs[v]
}

// fuzzy is filters.Args.FuzzyMatch: exact, or v has one of the values as
// a prefix.
func (f filter) fuzzy(key, v string) bool {
	if f.exact(key, v) {
		return true
	}
	for p := range f[key] {
		if strings.HasPrefix(v, p) {
			return true
		}
	}
	return false
}

// parseSince parses since as moby's timetypes.ParseTimestamps does for the
// form clients send, "<seconds>[.<nanoseconds>]", into Unix nanoseconds; 0
// when empty.
func parseSince(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	sec, frac, _ := strings.Cut(s, ".")
	n, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid since %q", s)
	}
	var ns int64
	if frac != "" {
		if len(frac) > 9 {
			return 0, fmt.Errorf("invalid since %q", s)
		}
		if ns, err = strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64); err != nil {
			return 0, fmt.Errorf("invalid since %q", s)
		}
	}
	return n*1e9 + ns, nil
}
