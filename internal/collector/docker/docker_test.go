package docker_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"go.uber.org/goleak"

	"tillpipe/internal/collector/docker"
	"tillpipe/internal/collector/docker/dockertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func copyFixtures(t *testing.T) string {
	dst := filepath.Join(t.TempDir(), "docker")
	if err := os.CopyFS(dst, os.DirFS("../testdata/docker")); err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestTracker_InspectsOnlyWhenStatusChanges(t *testing.T) {
	dir := copyFixtures(t)
	srv := dockertest.Start(t, dir)
	c := docker.NewClient(docker.Options{Socket: srv.Socket})
	defer c.Close()
	tr := docker.NewTracker(c)
	ctx := context.Background()

	got, err := tr.Containers(ctx, nil)
	if err != nil || len(got) != 5 || srv.Inspects() != 5 {
		t.Fatalf("first cycle: %d containers, %d inspects, err %v", len(got), srv.Inspects(), err)
	}
	byName, images := map[string]*docker.Container{}, map[string]string{}
	for _, c := range got {
		byName[c.Name], images[c.Name] = c, c.Image
	}
	if c := byName["receipt-printer"]; c.State != "restarting" || c.RestartCount != 7 {
		t.Errorf("receipt-printer %+v", c)
	}
	if c := byName["loyalty-sync"]; !c.OOMKilled || c.State != "exited" {
		t.Errorf("loyalty-sync %+v", c)
	}
	if c := byName["scale-driver"]; !c.StartedAt.IsZero() || c.Health != "" {
		t.Errorf("scale-driver %+v", c)
	}
	if c := byName["payment-gw"]; c.Health != "unhealthy" || c.Image != "registry.example.com/pos/payment-gw:2.9.0" {
		t.Errorf("payment-gw %+v", c)
	}

	if _, err := tr.Containers(ctx, nil); err != nil || srv.Inspects() != 5 {
		t.Fatalf("unchanged list: %d inspects (want none new), err %v", srv.Inspects()-5, err)
	}
	list, _ := os.ReadFile(filepath.Join(dir, "containers.json"))
	list = []byte(strings.Replace(string(list), "Up 3 hours (healthy)", "Up 3 hours (unhealthy)", 1))
	if err := os.WriteFile(filepath.Join(dir, "containers.json"), list, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Containers(ctx, nil); err != nil || srv.Inspects() != 6 {
		t.Fatalf("one status changed: %d inspects, want 1, err %v", srv.Inspects()-5, err)
	}
	// The inspected container keeps its name and image strings, not only
	// their bytes (see keep).
	for name, c := range byName {
		if unsafe.StringData(c.Name) != unsafe.StringData(name) || unsafe.StringData(c.Image) != unsafe.StringData(images[name]) {
			t.Errorf("%s: name or image string replaced by an equal one after an inspect", name)
		}
	}
}

func TestTracker_Failures(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mutate  func(t *testing.T, dir string)
		wantErr bool
		want    int
	}{
		{"container_removed_between_list_and_inspect", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "containers", "f137b47443f7c2b41d500a46c08bb8842774797e896f179081a09824726c45ba.json"))
		}, false, 4},
		{"list_not_json", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "containers.json"), []byte("<html>"), 0o644)
		}, true, 0},
		{"list_not_an_array", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "containers.json"), []byte(`{"message":"x"}`), 0o644)
		}, true, 0},
		{"engine_answers_404_for_list", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "containers.json"))
		}, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyFixtures(t)
			tc.mutate(t, dir)
			srv := dockertest.Start(t, dir)
			c := docker.NewClient(docker.Options{Socket: srv.Socket})
			defer c.Close()
			got, err := docker.NewTracker(c).Containers(context.Background(), nil)
			if (err != nil) != tc.wantErr || len(got) != tc.want {
				t.Errorf("%d containers, err %v; want %d, error %v", len(got), err, tc.want, tc.wantErr)
			}
		})
	}
	t.Run("socket_missing", func(t *testing.T) {
		c := docker.NewClient(docker.Options{Socket: filepath.Join(t.TempDir(), "docker.sock")})
		defer c.Close()
		if _, err := docker.NewTracker(c).Containers(context.Background(), nil); err == nil {
			t.Error("no error")
		}
		var ae *docker.APIError
		if _, err := c.List(context.Background(), nil); errors.As(err, &ae) {
			t.Errorf("a dial error reported as an API answer: %v", err)
		}
	})
}

// The client keeps its one connection to the engine between requests, and
// an engine that closed it (a restart) costs the next request a new dial,
// not an error.
func TestClient_EngineClosesKeptConnection(t *testing.T) {
	srv := dockertest.Start(t, copyFixtures(t))
	c := docker.NewClient(docker.Options{Socket: srv.Socket})
	defer c.Close()
	list := func(when string) {
		t.Helper()
		if got, err := c.List(context.Background(), nil); err != nil || len(got) != 5 {
			t.Fatalf("list %s: %d containers, err %v", when, len(got), err)
		}
	}
	list("first")
	list("second")
	if n := srv.Conns(); n != 1 {
		t.Fatalf("%d connections for two lists, want 1", n)
	}
	srv.CloseConnections()
	list("after the engine closed the connection")
	if n, lists := srv.Conns(), srv.Lists(); n != 2 || lists != 3 {
		t.Errorf("%d connections and %d lists served, want 2 and 3", n, lists)
	}
}
