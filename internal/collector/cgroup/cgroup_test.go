package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const fixtures = "../testdata/cgroup"

func copyTree(t *testing.T, name string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), name)
	if err := os.CopyFS(dst, os.DirFS(filepath.Join(fixtures, name))); err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestDiscover_Layouts(t *testing.T) {
	for _, tc := range []struct {
		tree  string
		mode  Mode
		paths int
	}{
		{"v2-docker", ModeV2, 3},
		{"v2-containerd", ModeV2, 3},
		{"v1", ModeV1, 2},
	} {
		t.Run(tc.tree, func(t *testing.T) {
			r, err := New(Options{Root: filepath.Join(fixtures, tc.tree)})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if r.Mode() != tc.mode {
				t.Errorf("mode %d, want %d", r.Mode(), tc.mode)
			}
			cs, err := r.Discover(nil, All)
			if err != nil || len(cs) != tc.paths {
				t.Fatalf("found %d containers (err %v), want %d", len(cs), err, tc.paths)
			}
			again, _ := r.Discover(nil, All)
			for i := range cs {
				if again[i] != cs[i] {
					t.Errorf("container %s not reused across cycles", cs[i].Path)
				}
			}
		})
	}
}

func TestRead_Failures(t *testing.T) {
	const pos = "system.slice/docker-4b22933b1c1a52f075b0c399bd28844890252342a237a15e32d6ead871724ebe.scope"
	for _, tc := range []struct {
		name    string
		mutate  func(t *testing.T, dir string)
		wantErr bool
		check   func(t *testing.T, st *Stats)
	}{
		{"memory_stat_garbage", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "memory.stat"), "anon twelve\n")
		}, true, func(t *testing.T, st *Stats) {
			if st.Has&FieldCPUUsage == 0 {
				t.Error("a bad memory.stat stopped the other files from being read")
			}
		}},
		{"io_controller_not_enabled", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "io.stat"))
		}, false, func(t *testing.T, st *Stats) {
			if st.Has&FieldIO != 0 || st.Has&FieldMemUsage == 0 {
				t.Errorf("has %b: want io absent, memory present", st.Has)
			}
		}},
		{"inactive_file_above_usage", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "memory.current"), "1000\n")
		}, false, func(t *testing.T, st *Stats) {
			if st.Has&FieldWorkingSet == 0 || st.WorkingSet != 0 {
				t.Errorf("working set %d, want 0 (floored)", st.WorkingSet)
			}
		}},
		{"cgroup_removed_before_read", func(t *testing.T, dir string) {
			os.RemoveAll(dir)
		}, false, func(t *testing.T, st *Stats) {
			if st.Has != 0 {
				t.Errorf("has %b for a removed cgroup, want nothing", st.Has)
			}
		}},
		{"pressure_line_without_total", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "cpu.pressure"), "some avg10=0.00 avg60=0.00 avg300=0.00\n")
		}, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := copyTree(t, "v2-docker")
			r, err := New(Options{Root: root})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			cs, _ := r.Discover(nil, All)
			var c *Container
			for _, x := range cs {
				if x.Path == "/"+pos {
					c = x
				}
			}
			if c == nil {
				t.Fatal("pos-api not found")
			}
			tc.mutate(t, filepath.Join(root, pos))
			var st Stats
			err = r.Read(c, &st)
			var pe *ParseError
			if tc.wantErr != errors.As(err, &pe) {
				t.Errorf("err %v, want a ParseError: %v", err, tc.wantErr)
			}
			if tc.check != nil {
				tc.check(t, &st)
			}
		})
	}
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestContainerID_NotAContainer(t *testing.T) {
	id := "4b22933b1c1a52f075b0c399bd28844890252342a237a15e32d6ead871724ebe"
	for name, want := range map[string]string{
		"docker-" + id + ".scope":         id,
		"cri-containerd-" + id + ".scope": id,
		"crio-" + id + ".scope":           id,
		"libpod-" + id + ".scope":         id,
		id:                                id,
		"crio-conmon-" + id + ".scope":    "",
		"docker.service":                  "",
		"docker-" + id[:63] + ".scope":    "",
		"kubepods-burstable.slice":        "",
		"DOCKER-" + id + ".scope":         "",
	} {
		if got := ContainerID(name); got != want {
			t.Errorf("ContainerID(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestNew_NoHierarchy(t *testing.T) {
	if _, err := New(Options{Root: t.TempDir()}); !errors.Is(err, ErrNoCgroup) {
		t.Errorf("err %v, want ErrNoCgroup", err)
	}
}
