package main

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang/snappy"

	"tillpipe/internal/remotewrite"
	"tillpipe/internal/testenv"
)

// TestConfigClient_MutualTLSAndToken sends through the relay client that
// run builds (raw-syscall connections under net/http, see package rawsys)
// to an HTTPS server that requires a client certificate and the bearer
// token: the body arrives, one connection carries every request, and a
// client without the certificate or with another CA fails.
func TestConfigClient_MutualTLSAndToken(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCert(t, "tillpipe test CA", nil, true, x509.ExtKeyUsageAny)
	caFile, _ := ca.Write(t, dir, "ca")
	srvKP := testenv.NewCert(t, "relay", ca, false, x509.ExtKeyUsageServerAuth)
	certFile, keyFile := testenv.NewCert(t, "till-042", ca, false, x509.ExtKeyUsageClientAuth).Write(t, dir, "client")
	otherCA, _ := testenv.NewCert(t, "other CA", nil, true, x509.ExtKeyUsageAny).Write(t, dir, "other")
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("till-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	want := []byte(strings.Repeat("remote-write body ", 10000)) // larger than one TLS record
	var bodies, conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer till-token" || len(r.TLS.PeerCertificates) == 0 ||
			r.TLS.PeerCertificates[0].Subject.CommonName != "till-042" {
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
		compressed, _ := io.ReadAll(r.Body)
		body, err := snappy.Decode(nil, compressed)
		if err != nil || string(body) != string(want) {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		bodies.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool,
		Certificates: []tls.Certificate{{Certificate: [][]byte{srvKP.DER}, PrivateKey: srvKP.Key}}}
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()

	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"client_cert_and_token", Config{CAFile: caFile, CertFile: certFile, KeyFile: keyFile, TokenFile: tokenFile}, ""},
		// Under TLS 1.3 the client's handshake completes before the server
		// checks its certificate: the server's alert ("certificate
		// required") races the request's write, which sees the server's
		// reset instead in about one run in twenty.
		{"no_client_cert", Config{CAFile: caFile, TokenFile: tokenFile}, "certificate|connection reset by peer"},
		{"unknown_ca", Config{CAFile: otherCA, CertFile: certFile, KeyFile: keyFile, TokenFile: tokenFile}, "certificate"},
		{"no_token", Config{CAFile: caFile, CertFile: certFile, KeyFile: keyFile}, "401"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.RelayURL, tc.cfg.Interval = srv.URL+"/api/v1/write", 10*time.Second
			rc, hc, err := tc.cfg.client()
			if err != nil {
				t.Fatal(err)
			}
			defer hc.CloseIdleConnections()
			bodies.Store(0)
			conns.Store(0)
			for range 3 {
				err = rc.Send(t.Context(), want)
				if err != nil {
					break
				}
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if bodies.Load() != 3 || conns.Load() != 1 {
					t.Errorf("%d bodies over %d connections, want 3 over 1", bodies.Load(), conns.Load())
				}
				return
			}
			if err == nil || !slices.ContainsFunc(strings.Split(tc.wantErr, "|"), func(w string) bool { return strings.Contains(err.Error(), w) }) {
				t.Errorf("Send: %v, want an error mentioning %q", err, tc.wantErr)
			}
			if tc.name == "no_token" && remotewrite.IsRecoverable(err) {
				t.Errorf("401 is recoverable: %v", err)
			}
		})
	}
}
