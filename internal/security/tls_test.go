package security_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gamelan-go/executor/internal/security"
	"github.com/gamelan-go/executor/internal/security/securitytest"
)

func TestTLSConfigErrors(t *testing.T) {
	certs := securitytest.GenerateCertificates(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	garbage := filepath.Join(dir, "garbage.pem")
	const garbageContents = "this-is-not-pem-at-all"
	if err := os.WriteFile(garbage, []byte(garbageContents), 0o600); err != nil {
		t.Fatal(err)
	}
	brokenCert := filepath.Join(dir, "broken-cert.pem")
	if err := os.WriteFile(brokenCert, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name     string
		load     func() error
		wantFile string
		want     string
	}{
		{"server cert unreadable", func() error {
			_, err := security.ServerTLSConfig(missing, certs.ServerKeyFile, "")
			return err
		}, missing, "no such file"},
		{"server key unreadable", func() error {
			_, err := security.ServerTLSConfig(certs.ServerCertFile, missing, "")
			return err
		}, missing, "no such file"},
		{"server cert without PEM", func() error {
			_, err := security.ServerTLSConfig(garbage, certs.ServerKeyFile, "")
			return err
		}, garbage, "no PEM certificate"},
		{"server key without PEM", func() error {
			_, err := security.ServerTLSConfig(certs.ServerCertFile, garbage, "")
			return err
		}, garbage, "no PEM private key"},
		{"server key given a certificate", func() error {
			_, err := security.ServerTLSConfig(certs.ServerCertFile, certs.CAFile, "")
			return err
		}, certs.CAFile, "no PEM private key"},
		{"server cert given a key", func() error {
			_, err := security.ServerTLSConfig(certs.ServerKeyFile, certs.ServerKeyFile, "")
			return err
		}, certs.ServerKeyFile, "no PEM certificate"},
		{"server key of another certificate", func() error {
			_, err := security.ServerTLSConfig(certs.ServerCertFile, certs.ClientKeyFile, "")
			return err
		}, certs.ClientKeyFile, "private key does not match public key"},
		{"server cert that does not parse", func() error {
			_, err := security.ServerTLSConfig(brokenCert, certs.ServerKeyFile, "")
			return err
		}, brokenCert, "does not parse"},
		{"server without key file", func() error {
			_, err := security.ServerTLSConfig(certs.ServerCertFile, "", "")
			return err
		}, "", "both a certificate file and a key file are required"},
		{"client CA of server unreadable", func() error {
			_, err := security.ServerTLSConfig(certs.ServerCertFile, certs.ServerKeyFile, missing)
			return err
		}, missing, "no such file"},
		{"client CA of server without PEM", func() error {
			_, err := security.ServerTLSConfig(certs.ServerCertFile, certs.ServerKeyFile, garbage)
			return err
		}, garbage, "no PEM certificate"},
		{"client CA unreadable", func() error {
			_, err := security.ClientTLSConfig(missing, "", "")
			return err
		}, missing, "no such file"},
		{"client CA without PEM", func() error {
			_, err := security.ClientTLSConfig(garbage, "", "")
			return err
		}, garbage, "no PEM certificate"},
		{"client key of another certificate", func() error {
			_, err := security.ClientTLSConfig(certs.CAFile, certs.ClientCertFile, certs.ServerKeyFile)
			return err
		}, certs.ServerKeyFile, "private key does not match public key"},
		{"client certificate without key", func() error {
			_, err := security.ClientTLSConfig(certs.CAFile, certs.ClientCertFile, "")
			return err
		}, "", "needs both a certificate file and a key file"},
		{"client key without certificate", func() error {
			_, err := security.ClientTLSConfig(certs.CAFile, "", certs.ClientKeyFile)
			return err
		}, "", "needs both a certificate file and a key file"},
	}
	secretMaterial := fileContents(t, certs.ServerKeyFile, certs.ClientKeyFile)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.load()
			if err == nil {
				t.Fatal("loading succeeded, want an error")
			}
			message := err.Error()
			if !strings.Contains(message, tc.want) {
				t.Errorf("error %q does not name the problem %q", message, tc.want)
			}
			if tc.wantFile != "" && !strings.Contains(message, tc.wantFile) {
				t.Errorf("error %q does not name the file %s", message, tc.wantFile)
			}
			if strings.Contains(message, garbageContents) || strings.Contains(message, "BEGIN") {
				t.Errorf("error %q quotes file contents", message)
			}
			for _, material := range secretMaterial {
				if strings.Contains(message, material) {
					t.Fatalf("error %q contains key material", message)
				}
			}
		})
	}
}

// fileContents returns the base64 body lines of the PEM files, the part that
// must never show up in an error.
func fileContents(t *testing.T, files ...string) []string {
	t.Helper()
	var lines []string
	for _, file := range files {
		contents, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(string(contents), "\n") {
			if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
				lines = append(lines, line)
			}
		}
	}
	return lines
}
