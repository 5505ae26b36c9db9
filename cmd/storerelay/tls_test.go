package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"tillpipe/internal/remotewrite"
	"tillpipe/internal/testenv"
)

type keyPair struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	der  []byte
}

func newCert(t *testing.T, cn string, parent *keyPair, isCA bool, usage x509.ExtKeyUsage) *keyPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IsCA:         isCA, BasicConstraintsValid: true,
	}
	signer, signKey := tmpl, key
	if parent != nil {
		signer, signKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &keyPair{cert: cert, key: key, der: der}
}

func (k *keyPair) write(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	kb, err := x509.MarshalECPrivateKey(k.key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

// TestMutualTLSAndTokens: HTTPS with client certificates required, and a
// bearer token on top: only a client with both gets 204.
func TestMutualTLSAndTokens(t *testing.T) {
	dir := t.TempDir()
	ca := newCert(t, "tillpipe test CA", nil, true, x509.ExtKeyUsageAny)
	caFile, _ := ca.write(t, dir, "ca")
	srvCert, srvKey := newCert(t, "relay", ca, false, x509.ExtKeyUsageServerAuth).write(t, dir, "server")
	cliKP := newCert(t, "till-01", ca, false, x509.ExtKeyUsageClientAuth)
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
	roots.AddCert(ca.cert)
	withCert := &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{{Certificate: [][]byte{cliKP.der}, PrivateKey: cliKP.key}}}
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
