// Package dockertest serves the two Docker Engine API endpoints the
// collector reads, on a unix socket, from JSON files captured in the real
// API's shapes:
//
//	<dir>/containers.json          GET /containers/json?all=1
//	<dir>/containers/<id>.json     GET /containers/<id>/json
//
// Files are read on every request, so a test changes the engine's answer by
// rewriting them.
package dockertest

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// Server is a fake engine. Its counters are safe for concurrent use.
type Server struct {
	// Socket is the unix socket path to give the client.
	Socket string
	// Dir holds the JSON answers.
	Dir string

	lists, inspects atomic.Int64
}

// Start serves dir on a socket in a temporary directory until the test ends.
func Start(tb testing.TB, dir string) *Server {
	tb.Helper()
	s := &Server{Socket: filepath.Join(tb.TempDir(), "docker.sock"), Dir: dir}
	ln, err := net.Listen("unix", s.Socket)
	if err != nil {
		tb.Fatalf("listen on %s: %v", s.Socket, err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	tb.Cleanup(srv.Close)
	return s
}

// Lists and Inspects count the requests served.
func (s *Server) Lists() int64    { return s.lists.Load() }
func (s *Server) Inspects() int64 { return s.inspects.Load() }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Api-Version", "1.47")
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
