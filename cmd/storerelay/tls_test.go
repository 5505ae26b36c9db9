package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"tillpipe/internal/remotewrite"
	"tillpipe/internal/testenv"
)

// TestMutualTLSAndTokens: HTTPS with client certificates required, and a
// bearer token on top: only a client with both gets 204.
func TestMutualTLSAndTokens(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCert(t, "tillpipe test CA", nil, true, x509.ExtKeyUsageAny)
	caFile, _ := ca.Write(t, dir, "ca")
	srvCert, srvKey := testenv.NewCert(t, "relay", ca, false, x509.ExtKeyUsageServerAuth).Write(t, dir, "server")
	cliKP := testenv.NewCert(t, "till-01", ca, false, x509.ExtKeyUsageClientAuth)
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("# tills\ntill-token\n"), 0o600)

	c := startCentral(t)
	port := testenv.FreePort(t)
	args := append(baseArgs(filepath.Join(dir, "data"), c.nats.URL(), port),
		"-tls-cert", srvCert, "-tls-key", srvKey, "-client-ca", caFile, "-auth-tokens", tokens)
	// startRelay polls /healthz over plain HTTP; here it must be HTTPS with
	// a client certificate, so start it by hand.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, func(string) string { return "" }, os.Stderr) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	withCert := &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{{Certificate: [][]byte{cliKP.DER}, PrivateKey: cliKP.Key}}}
	noCert := &tls.Config{RootCAs: roots}
	url := "https://127.0.0.1:" + itoa(port) + "/api/v1/write"
	body, _ := newFleet("s1", 1).scrape(0, time.Now().UnixMilli())
	send := func(conf *tls.Config, token string) error {
		cl, err := remotewrite.NewClient(remotewrite.ClientOptions{URL: url, TLS: conf, BearerToken: token, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return cl.Send(context.Background(), body)
	}
	// Wait for the listener: the first successful write.
	deadline, dcancel := context.WithTimeout(context.Background(), time.Minute)
	defer dcancel()
	for send(withCert, "till-token") != nil {
		select {
		case err := <-done:
			t.Fatalf("relay exited: %v", err)
		case <-deadline.Done():
			t.Fatal("relay never accepted a write over mTLS")
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := send(noCert, "till-token"); err == nil {
		t.Error("write without a client certificate accepted")
	}
	var se *remotewrite.StatusError
	if err := send(withCert, "wrong"); !asStatus(err, &se) || se.StatusCode != 401 {
		t.Errorf("write with a wrong token: %v, want 401", err)
	}
}
