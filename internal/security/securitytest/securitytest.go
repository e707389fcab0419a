// Package securitytest provides throw-away key material for tests of TLS,
// mutual TLS and signed tokens: a CA with server and client certificates
// written as PEM files into the test's temporary directory, a second
// unrelated CA for negative tests, and random HMAC secrets.
//
// Everything is generated fresh for each call, so tests never share keys and
// no key material is committed to the repository. Failures end the test with
// t.Fatal.
package securitytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Certificates names the PEM files written by GenerateCertificates.
type Certificates struct {
	// CAFile holds the certificate of the CA that signed the server and
	// client certificates.
	CAFile string
	// ServerCertFile and ServerKeyFile hold a server certificate for the DNS
	// name "localhost" and the IP address 127.0.0.1, and its private key.
	ServerCertFile, ServerKeyFile string
	// ClientCertFile and ClientKeyFile hold a client certificate (common
	// name "executor-client") and its private key.
	ClientCertFile, ClientKeyFile string
	// OtherCAFile holds the certificate of a second CA that signed nothing
	// here: a client trusting only it must fail the handshake.
	OtherCAFile string
}

// GenerateCertificates writes into t.TempDir() a fresh CA, a server
// certificate for "localhost" and 127.0.0.1, a client certificate, both
// signed by the CA, and a second unrelated CA. Keys are ECDSA P-256 in
// PKCS #8; certificates are valid from one hour ago to one hour from now.
func GenerateCertificates(t testing.TB) Certificates {
	t.Helper()
	dir := t.TempDir()
	notBefore := time.Now().Add(-time.Hour)
	notAfter := time.Now().Add(time.Hour)

	ca := newAuthority(t, "securitytest CA", notBefore, notAfter)
	other := newAuthority(t, "securitytest other CA", notBefore, notAfter)

	serverKey := newKey(t)
	serverDER := sign(t, &x509.Certificate{
		SerialNumber: serialNumber(t),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, &serverKey.PublicKey)

	clientKey := newKey(t)
	clientDER := sign(t, &x509.Certificate{
		SerialNumber: serialNumber(t),
		Subject:      pkix.Name{CommonName: "executor-client"},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, &clientKey.PublicKey)

	certs := Certificates{
		CAFile:         filepath.Join(dir, "ca.pem"),
		ServerCertFile: filepath.Join(dir, "server.pem"),
		ServerKeyFile:  filepath.Join(dir, "server-key.pem"),
		ClientCertFile: filepath.Join(dir, "client.pem"),
		ClientKeyFile:  filepath.Join(dir, "client-key.pem"),
		OtherCAFile:    filepath.Join(dir, "other-ca.pem"),
	}
	writeCertificate(t, certs.CAFile, ca.certificate.Raw)
	writeCertificate(t, certs.OtherCAFile, other.certificate.Raw)
	writeCertificate(t, certs.ServerCertFile, serverDER)
	writeKey(t, certs.ServerKeyFile, serverKey)
	writeCertificate(t, certs.ClientCertFile, clientDER)
	writeKey(t, certs.ClientKeyFile, clientKey)
	return certs
}

// Secret returns a random 32-byte HMAC secret, the shortest the security
// package accepts.
func Secret(t testing.TB) []byte {
	t.Helper()
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatalf("securitytest: random secret: %v", err)
	}
	return secret
}

// authority is a self-signed CA and its key.
type authority struct {
	certificate *x509.Certificate
	key         *ecdsa.PrivateKey
}

// newAuthority returns a self-signed CA that may sign end-entity
// certificates only (path length zero).
func newAuthority(t testing.TB, name string, notBefore, notAfter time.Time) authority {
	t.Helper()
	key := newKey(t)
	template := &x509.Certificate{
		SerialNumber:          serialNumber(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("securitytest: create CA %q: %v", name, err)
	}
	certificate, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("securitytest: parse CA %q: %v", name, err)
	}
	return authority{certificate: certificate, key: key}
}

// sign returns the DER certificate for public made from template and signed
// by ca.
func sign(t testing.TB, template *x509.Certificate, ca authority, public *ecdsa.PublicKey) []byte {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, template, ca.certificate, public, ca.key)
	if err != nil {
		t.Fatalf("securitytest: sign certificate %q: %v", template.Subject.CommonName, err)
	}
	return der
}

// newKey returns a fresh ECDSA P-256 key.
func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("securitytest: generate key: %v", err)
	}
	return key
}

// serialNumber returns a random 128-bit serial number, as RFC 5280 asks for
// unpredictable serials.
func serialNumber(t testing.TB) *big.Int {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatalf("securitytest: serial number: %v", err)
	}
	return serial
}

// writeCertificate writes one DER certificate to file as PEM.
func writeCertificate(t testing.TB, file string, der []byte) {
	t.Helper()
	writePEM(t, file, &pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// writeKey writes key to file as a PKCS #8 "PRIVATE KEY" PEM block.
func writeKey(t testing.TB, file string, key *ecdsa.PrivateKey) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("securitytest: marshal key for %s: %v", file, err)
	}
	writePEM(t, file, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// writePEM writes block to file, readable by the owner only.
func writePEM(t testing.TB, file string, block *pem.Block) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatalf("securitytest: write %s: %v", file, err)
	}
}
