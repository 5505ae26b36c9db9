package docker_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"tillpipe/internal/collector/collectortest"
	"tillpipe/internal/collector/docker"
	"tillpipe/internal/collector/docker/dockertest"
)

const posAPI = "4b22933b1c1a52f075b0c399bd28844890252342a237a15e32d6ead871724ebe"

// followed is a fake engine serving a copy of the fixtures and a tracker
// following its events.
type followed struct {
	dir string
	srv *dockertest.Server
	tr  *docker.Tracker
	ev  *docker.Events
}

// follow starts the engine, applies setup to it, and starts the event
// stream, which stops when the test ends; it waits for the stream to
// connect.
func follow(t *testing.T, setup ...func(*dockertest.Server)) *followed {
	t.Helper()
	f := &followed{dir: copyFixtures(t)}
	f.srv = dockertest.Start(t, f.dir)
	for _, s := range setup {
		s(f.srv)
	}
	c := docker.NewClient(docker.Options{Socket: f.srv.Socket})
	f.ev = docker.NewEvents(docker.EventsOptions{Socket: f.srv.Socket, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	f.tr = docker.NewTracker(c)
	f.tr.Follow(f.ev)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.ev.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Events.Run: %v", err)
		}
		c.Close()
	})
	collectortest.WaitFor(t, "the event stream to connect", f.ev.Connected)
	return f
}

// cycle runs one cycle and returns the containers by name.
func (f *followed) cycle(t *testing.T) map[string]*docker.Container {
	t.Helper()
	got, err := f.tr.Containers(context.Background(), nil)
	if err != nil {
		t.Fatalf("cycle: %v", err)
	}
	byName := map[string]*docker.Container{}
	for _, c := range got {
		byName[c.Name] = c
	}
	return byName
}

// emit sends the fixture event with action, which the engine must send to
// the stream (sent) or filter out, and waits until the stream has read it.
func (f *followed) emit(t *testing.T, action string, sent bool) {
	t.Helper()
	read, _ := f.ev.Counts()
	want := 0
	if sent {
		want = 1
	}
	if n := f.srv.Emit(t, action); n != want {
		t.Fatalf("event %q sent to %d streams, want %d", action, n, want)
	}
	if sent {
		collectortest.WaitFor(t, "the event to be read", func() bool { r, _ := f.ev.Counts(); return r > read })
	}
}

func (f *followed) wantLists(t *testing.T, want int64, when string) {
	t.Helper()
	if got := f.srv.Lists(); got != want {
		t.Fatalf("%s: %d lists, want %d", when, got, want)
	}
}

// setState makes the engine report container id in state, as the list
// (State, Status) and inspect (State.Status, State.Running) do.
func setState(t *testing.T, dir, id, state, status string) {
	t.Helper()
	listPath := filepath.Join(dir, "containers.json")
	var list []map[string]any
	collectortest.ReadJSON(t, listPath, &list)
	found := false
	for _, e := range list {
		if e["Id"] == id {
			e["State"], e["Status"], found = state, status, true
		}
	}
	if !found {
		t.Fatalf("container %s not in %s", id, listPath)
	}
	collectortest.WriteJSON(t, listPath, list)
	inspPath := filepath.Join(dir, "containers", id+".json")
	var insp map[string]any
	collectortest.ReadJSON(t, inspPath, &insp)
	st := insp["State"].(map[string]any)
	st["Status"], st["Running"] = state, state == "running"
	collectortest.WriteJSON(t, inspPath, insp)
}

func TestTracker_Events_QuietCyclesListOnce(t *testing.T) {
	f := follow(t)
	first := f.cycle(t)
	for range 10 {
		got := f.cycle(t)
		if len(got) != 5 {
			t.Fatalf("%d containers, want 5", len(got))
		}
		for name, c := range got {
			if first[name] != c {
				t.Fatalf("container %s is not the pointer of the first cycle", name)
			}
		}
	}
	f.wantLists(t, 1, "11 cycles without events")
	if n := f.srv.Inspects(); n != 5 {
		t.Errorf("%d inspects, want 5", n)
	}
}

// TestTracker_Events_DieSampledAtNextCycle rewrites the engine's answers as
// a container exits: without the event the tracker keeps its last list, and
// the die event makes exactly one list, which samples the exit.
func TestTracker_Events_DieSampledAtNextCycle(t *testing.T) {
	f := follow(t)
	if c := f.cycle(t)["pos-api"]; c.State != "running" {
		t.Fatalf("pos-api %s, want running", c.State)
	}
	setState(t, f.dir, posAPI, "exited", "Exited (0) 1 second ago")
	if c := f.cycle(t)["pos-api"]; c.State != "running" {
		t.Fatalf("before the event: pos-api %s; the tracker listed without an event", c.State)
	}
	f.wantLists(t, 1, "before the event")

	f.emit(t, "die", true)
	if c := f.cycle(t)["pos-api"]; c.State != "exited" {
		t.Fatalf("after die: pos-api %s, want exited", c.State)
	}
	f.wantLists(t, 2, "the cycle after die")
	f.cycle(t)
	f.cycle(t)
	f.wantLists(t, 2, "two more cycles")
}

// TestTracker_Events_ByAction sends each fixture event after a first cycle
// and checks whether dockerd (or Podman) sends it to the stream and whether
// the next cycle lists. dockerd is asked not to send exec_* and network
// events; Podman sends exec_* and the stream drops them.
func TestTracker_Events_ByAction(t *testing.T) {
	const (
		docker = iota
		podman
	)
	for _, tc := range []struct {
		name, action string
		engine       int
		sent, list   bool
	}{
		{"exec_create_of_healthcheck", "exec_create: curl -fsS http://localhost:8080/healthz", docker, false, false},
		{"exec_start_of_healthcheck", "exec_start: curl -fsS http://localhost:8080/healthz", docker, false, false},
		{"exec_die_of_healthcheck", "exec_die", docker, false, false},
		{"network_connect", "connect", docker, false, false},
		{"health_status_changed", "health_status: healthy", docker, true, true},
		{"kill", "kill", docker, true, true},
		{"die", "die", docker, true, true},
		{"stop", "stop", docker, true, true},
		{"start", "start", docker, true, true},
		{"restart", "restart", docker, true, true},
		{"oom", "oom", docker, true, true},
		{"create", "create", docker, true, true},
		{"destroy", "destroy", docker, true, true},
		{"pause", "pause", docker, true, true},
		{"unpause", "unpause", docker, true, true},
		{"rename", "rename", docker, true, true},
		{"update", "update", docker, true, true},
		{"podman_exec_create_sent_but_dropped", "exec_create: curl -fsS http://localhost:8080/healthz", podman, true, false},
		{"podman_exec_die_sent_but_dropped", "exec_die", podman, true, false},
		{"podman_network_connect", "connect", podman, false, false},
		{"podman_die", "die", podman, true, true},
		{"podman_health_status", "health_status: healthy", podman, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := follow(t, func(s *dockertest.Server) { s.SetPodman(tc.engine == podman) })
			f.cycle(t)
			_, changes := f.ev.Counts()
			f.emit(t, tc.action, tc.sent)
			if _, c := f.ev.Counts(); (c != changes) != tc.list {
				t.Errorf("changes went from %d to %d", changes, c)
			}
			f.cycle(t)
			want := int64(1)
			if tc.list {
				want = 2
			}
			f.wantLists(t, want, "the cycle after "+tc.action)
			f.cycle(t)
			f.wantLists(t, want, "the cycle after that")
		})
	}
}

// TestEvents_PodmanGetsTypeFilterOnly answers as an older Podman, which ANDs
// the values of a filter: the stream, opened with dockerd's action list,
// sees the Libpod-Api-Version header and reopens at once asking for
// container events only, which that Podman does send.
func TestEvents_PodmanGetsTypeFilterOnly(t *testing.T) {
	f := follow(t, func(s *dockertest.Server) { s.SetPodman(true) })
	if n := f.srv.EventConnects(); n != 2 {
		t.Errorf("%d streams opened, want 2 (dockerd's query, then Podman's)", n)
	}
	f.cycle(t)
	f.emit(t, "die", true)
	f.cycle(t)
	f.wantLists(t, 2, "the cycle after die")
}

// TestTracker_Events_StreamDropped drops the engine's event streams: cycles
// list every cycle until the stream reconnects, list once after it, then
// stop listing.
func TestTracker_Events_StreamDropped(t *testing.T) {
	f := follow(t)
	f.cycle(t)
	f.srv.SetEventsDown(true)
	collectortest.WaitFor(t, "the stream to notice the drop", func() bool { return !f.ev.Connected() })
	for range 3 {
		f.cycle(t)
	}
	f.wantLists(t, 4, "three cycles without a stream")

	f.srv.SetEventsDown(false)
	collectortest.WaitFor(t, "the stream to reconnect", f.ev.Connected)
	f.cycle(t)
	f.wantLists(t, 5, "the cycle after the reconnection")
	for range 3 {
		f.cycle(t)
	}
	f.wantLists(t, 5, "three cycles after the reconnection")
	if n := f.srv.EventConnects(); n != 2 {
		t.Errorf("%d event streams opened, want 2", n)
	}
}

func TestTracker_Events_Reconcile(t *testing.T) {
	f := follow(t)
	for range 2*docker.ReconcileCycles + 1 {
		f.cycle(t)
	}
	f.wantLists(t, 3, "2*ReconcileCycles+1 cycles without events")
}

// TestTracker_Events_FailedReadListsAgain covers the answers that must not
// be kept: after a failed list or inspect the next cycles list, without a
// new event, until one succeeds.
func TestTracker_Events_FailedReadListsAgain(t *testing.T) {
	for _, tc := range []struct {
		name        string
		breakEngine func(t *testing.T, dir string) (restore func())
	}{
		{"list_not_json", func(t *testing.T, dir string) func() {
			p := filepath.Join(dir, "containers.json")
			good, _ := os.ReadFile(p)
			if err := os.WriteFile(p, []byte("<html>"), 0o644); err != nil {
				t.Fatal(err)
			}
			return func() { os.WriteFile(p, good, 0o644) }
		}},
		{"inspect_not_json", func(t *testing.T, dir string) func() {
			setState(t, dir, posAPI, "exited", "Exited (0) 1 second ago")
			p := filepath.Join(dir, "containers", posAPI+".json")
			good, _ := os.ReadFile(p)
			if err := os.WriteFile(p, []byte("<html>"), 0o644); err != nil {
				t.Fatal(err)
			}
			return func() { os.WriteFile(p, good, 0o644) }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := follow(t)
			f.cycle(t)
			restore := tc.breakEngine(t, f.dir)
			f.emit(t, "die", true)
			for i := range 2 {
				if _, err := f.tr.Containers(context.Background(), nil); err == nil {
					t.Fatalf("cycle %d after breaking the engine: no error", i+1)
				}
			}
			f.wantLists(t, 3, "two failed cycles")
			restore()
			if c := f.cycle(t)["pos-api"]; c == nil || (tc.name == "inspect_not_json" && c.State != "exited") {
				t.Fatalf("after the repair: pos-api %+v", c)
			}
			f.cycle(t)
			f.wantLists(t, 4, "the repair and one more cycle")
		})
	}
}

// TestEvents_RunStopsWithoutEngine runs the stream against a socket nobody
// serves: it retries until its context ends, then returns nil at once.
func TestEvents_RunStopsWithoutEngine(t *testing.T) {
	ev := docker.NewEvents(docker.EventsOptions{Socket: filepath.Join(t.TempDir(), "docker.sock"),
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := ev.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Run returned %s after its context ended", d-100*time.Millisecond)
	}
	if ev.Connected() {
		t.Error("connected without an engine")
	}
}
