package security

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// ServerTLSConfig returns the TLS configuration of a server presenting the
// certificate chain in certFile with the private key in keyFile, both PEM.
// When clientCAFile is set, the server requires every client to present a
// certificate that chains to one of the PEM certificates in it (mutual TLS);
// when empty, clients are not asked for certificates. The minimum version is
// TLS 1.2.
//
// Errors name the file and the problem (unreadable, no PEM certificate or
// key, unparsable, key not matching the certificate) and never include the
// files' contents.
func ServerTLSConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("server TLS: both a certificate file and a key file are required")
	}
	certificate, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("server TLS: %w", err)
	}
	config := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{certificate},
	}
	if clientCAFile != "" {
		pool, err := loadCertPool(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("server TLS: client CA: %w", err)
		}
		config.ClientCAs = pool
		config.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return config, nil
}

// ClientTLSConfig returns the TLS configuration of a client that trusts the
// PEM certificates in caFile, or the system roots when caFile is empty, and
// that presents the certificate chain in certFile with the key in keyFile
// when both are set (mutual TLS). Setting only one of certFile and keyFile
// is an error. The minimum version is TLS 1.2; the server name is left for
// the caller (gRPC takes it from the target's authority).
//
// Errors name the file and the problem and never include the files'
// contents.
func ClientTLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	config := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := loadCertPool(caFile)
		if err != nil {
			return nil, fmt.Errorf("client TLS: CA: %w", err)
		}
		config.RootCAs = pool
	}
	switch {
	case certFile == "" && keyFile == "":
	case certFile == "" || keyFile == "":
		return nil, errors.New("client TLS: a client certificate needs both a certificate file and a key file")
	default:
		certificate, err := loadKeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client TLS: %w", err)
		}
		config.Certificates = []tls.Certificate{certificate}
	}
	return config, nil
}

// loadKeyPair reads a PEM certificate chain and its PEM private key and
// checks that they belong together.
func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := readPEMFile(certFile, "certificate")
	if err != nil {
		return tls.Certificate{}, err
	}
	if _, err := parseCertificates(certFile, "certificate", certPEM); err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := readPEMFile(keyFile, "private key")
	if err != nil {
		return tls.Certificate{}, err
	}
	if !hasPrivateKeyBlock(keyPEM) {
		return tls.Certificate{}, fmt.Errorf("key file %s: no PEM private key block", keyFile)
	}
	certificate, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The messages of crypto/tls describe the problem (such as "private
		// key does not match public key") without quoting the input.
		return tls.Certificate{}, fmt.Errorf("certificate file %s with key file %s: %w", certFile, keyFile, err)
	}
	return certificate, nil
}

// loadCertPool reads a file of PEM certificates into a pool, refusing a file
// without any certificate or with one that does not parse.
func loadCertPool(file string) (*x509.CertPool, error) {
	contents, err := readPEMFile(file, "CA certificate")
	if err != nil {
		return nil, err
	}
	certificates, err := parseCertificates(file, "CA certificate", contents)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, certificate := range certificates {
		pool.AddCert(certificate)
	}
	return pool, nil
}

// readPEMFile reads file, whose role (such as "certificate") is used in
// errors.
func readPEMFile(file, role string) ([]byte, error) {
	contents, err := os.ReadFile(file)
	if err != nil {
		// The *PathError names the file and the cause, not the contents.
		return nil, fmt.Errorf("read %s file: %w", role, err)
	}
	return contents, nil
}

// parseCertificates returns every CERTIFICATE block of contents, read from
// file, and fails when there is none or one does not parse. The role (such
// as "certificate") is used in errors.
func parseCertificates(file, role string, contents []byte) ([]*x509.Certificate, error) {
	var certificates []*x509.Certificate
	for rest := contents; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		certificate, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s file %s: certificate %d does not parse: %w", role, file, len(certificates)+1, err)
		}
		certificates = append(certificates, certificate)
	}
	if len(certificates) == 0 {
		return nil, fmt.Errorf("%s file %s: no PEM certificate", role, file)
	}
	return certificates, nil
}

// hasPrivateKeyBlock reports whether contents hold a PEM block whose type
// names a private key (PRIVATE KEY, EC PRIVATE KEY, RSA PRIVATE KEY).
func hasPrivateKeyBlock(contents []byte) bool {
	for rest := contents; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return false
		}
		if strings.HasSuffix(block.Type, "PRIVATE KEY") {
			return true
		}
	}
}
