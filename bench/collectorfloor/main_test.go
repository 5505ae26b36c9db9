package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, cfg any) string {
	t.Helper()
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "floor.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The floor stops with a clear error, instead of measuring something else,
// on a config it cannot follow and on a relay that does not answer 204.
func TestRun_Errors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "cpu.stat")
	if err := os.WriteFile(file, []byte("usage_usec 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	relay := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusInternalServerError)
	}))
	defer relay.Close()
	u, _ := url.Parse(relay.URL)
	request := []byte("POST / HTTP/1.1\r\nHost: " + u.Host + "\r\nContent-Length: 0\r\n\r\n")
	ok := Config{Files: []string{file}, Statfs: []string{"/"}, Addr: u.Host, Request: request, Device: "t", Interval: 100 * time.Millisecond}
	notJSON := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(notJSON, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"no config", filepath.Join(t.TempDir(), "none.json"), "no such file"},
		{"not JSON", notJSON, "bad.json"},
		{"no interval", writeConfig(t, Config{Files: ok.Files, Addr: ok.Addr}), "interval 0s"},
		{"unknown field", writeConfig(t, map[string]any{"Files": ok.Files, "Addr": ok.Addr, "Request": request, "Interval": time.Second, "File": "x"}), `unknown field "File"`},
		{"no files", writeConfig(t, Config{Addr: ok.Addr, Request: request, Interval: time.Second}), "0 files"},
		{"no request", writeConfig(t, Config{Files: ok.Files, Addr: ok.Addr, Interval: time.Second}), "a 0-byte request"},
		{"missing file", writeConfig(t, Config{Files: []string{file + ".gone"}, Addr: ok.Addr, Request: request, Interval: time.Second}), "open " + file + ".gone"},
		{"relay answers 500", writeConfig(t, ok), "relay answered \"HTTP/1.1 500"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one containing %q", err, tc.want)
			}
		})
	}
}
