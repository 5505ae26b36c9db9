// Package collectortest builds the collector's benchmark fixtures: a cgroup
// v2 tree of n Docker containers, the matching Docker Engine API answers
// for dockertest to serve, and a copy of the fixture /proc.
package collectortest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PosAPI is the id of the fixture container copied n times by [Tree].
const PosAPI = "4b22933b1c1a52f075b0c399bd28844890252342a237a15e32d6ead871724ebe"

// Fixture is a tree built by [Tree].
type Fixture struct {
	CgroupRoot string
	ProcRoot   string
	// DockerDir is for [tillpipe/internal/collector/docker/dockertest.Start].
	DockerDir string
}

// Tree copies testdata/cgroup/v2-docker and testdata/proc (testdata is the
// collector's testdata directory) into dir and adds n containers, copies
// of the pos-api fixture cgroup named svc-00, svc-01, ..., with list and
// inspect answers for them (and none for the fixture's own containers).
func Tree(tb testing.TB, dir, testdata string, n int) Fixture {
	tb.Helper()
	cgroupRoot, dockerDir := filepath.Join(dir, "cgroup"), filepath.Join(dir, "docker")
	procRoot := filepath.Join(dir, "proc")
	if err := os.CopyFS(procRoot, os.DirFS(filepath.Join(testdata, "proc"))); err != nil {
		tb.Fatal(err)
	}
	src := filepath.Join(testdata, "cgroup/v2-docker/system.slice", "docker-"+PosAPI+".scope")
	if err := os.MkdirAll(filepath.Join(dockerDir, "containers"), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.CopyFS(cgroupRoot, os.DirFS(filepath.Join(testdata, "cgroup/v2-docker"))); err != nil {
		tb.Fatal(err)
	}
	var list []map[string]any
	ReadJSON(tb, filepath.Join(testdata, "docker/containers.json"), &list)
	var insp map[string]any
	ReadJSON(tb, filepath.Join(testdata, "docker/containers", PosAPI+".json"), &insp)
	out := make([]map[string]any, 0, n)
	for i := range n {
		id := fmt.Sprintf("%064x", i+1)
		if err := os.CopyFS(filepath.Join(cgroupRoot, "system.slice", "docker-"+id+".scope"), os.DirFS(src)); err != nil {
			tb.Fatal(err)
		}
		e := clone(tb, list[0])
		e["Id"], e["Names"] = id, []string{fmt.Sprintf("/svc-%02d", i)}
		out = append(out, e)
		in := clone(tb, insp)
		in["Id"], in["Name"] = id, fmt.Sprintf("/svc-%02d", i)
		WriteJSON(tb, filepath.Join(dockerDir, "containers", id+".json"), in)
	}
	WriteJSON(tb, filepath.Join(dockerDir, "containers.json"), out)
	return Fixture{CgroupRoot: cgroupRoot, ProcRoot: procRoot, DockerDir: dockerDir}
}

// MemDir returns a new directory on /dev/shm, removed when the test ends,
// or tb.TempDir() when there is no writable /dev/shm. cgroupfs and procfs
// live in memory; a fixture tree on a disk filesystem costs page-cache
// lookups, and block reads once reclaim (DAMON, memory pressure) evicted
// it between cycles, that the real files never do.
func MemDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "tillpipe-collectortest-")
	if err != nil {
		return tb.TempDir()
	}
	tb.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			tb.Errorf("remove %s: %v", dir, err)
		}
	})
	return dir
}

// ReadJSON decodes the JSON file at path into v, failing the test on error.
func ReadJSON(tb testing.TB, path string, v any) {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		tb.Fatalf("decode %s: %v", path, err)
	}
}

// WriteJSON writes v as JSON to path, failing the test on error.
func WriteJSON(tb testing.TB, path string, v any) {
	tb.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		tb.Fatal(err)
	}
}

func clone(tb testing.TB, m map[string]any) map[string]any {
	tb.Helper()
	data, err := json.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(data, &c); err != nil {
		tb.Fatal(err)
	}
	return c
}

// WaitFor polls cond every millisecond until it holds, failing the test
// after 10 s with what it waited for.
func WaitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
