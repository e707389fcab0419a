package security_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gamelan-go/executor/internal/security"
	"github.com/gamelan-go/executor/internal/security/securitytest"
)

// startHealthServer serves the gRPC health service on a loopback port until
// the test ends, and returns the address.
func startHealthServer(t *testing.T, options ...grpc.ServerOption) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	server := grpc.NewServer(options...)
	healthpb.RegisterHealthServer(server, health.NewServer())
	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()
	t.Cleanup(func() {
		server.Stop()
		if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("serve: %v", err)
		}
	})
	return listener.Addr().String()
}

// checkHealth makes one health Check call on a new connection to address
// and returns its error.
func checkHealth(t *testing.T, ctx context.Context, address string, options ...grpc.DialOption) error {
	t.Helper()
	conn, err := grpc.NewClient(address, options...)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	response, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if response.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health status = %v, want SERVING", response.GetStatus())
	}
	return nil
}

// metadataRecorder is a unary server interceptor that keeps the incoming
// authorization values of every call.
type metadataRecorder struct {
	authorizations chan []string
}

func newMetadataRecorder() *metadataRecorder {
	return &metadataRecorder{authorizations: make(chan []string, 16)}
}

func (r *metadataRecorder) intercept(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	select {
	case r.authorizations <- md.Get("authorization"):
	default:
		return nil, status.Error(codes.ResourceExhausted, "recorder full")
	}
	return handler(ctx, req)
}

// next returns the authorization values of the next recorded call; the call
// has already completed, so the value is there.
func (r *metadataRecorder) next(t *testing.T) []string {
	t.Helper()
	select {
	case values := <-r.authorizations:
		return values
	default:
		t.Fatal("no call was recorded")
		return nil
	}
}

func TestPerRPCCredentialsCarrySubject(t *testing.T) {
	secret := securitytest.Secret(t)
	minter := newMinter(t, security.MinterConfig{
		Secret: secret, Issuer: testIssuer, Audience: testAudience, TTL: time.Minute,
		Subject: testSubject, ExecutorTypes: []string{"calculate-tax"},
	})
	verifier := newVerifier(t, security.VerifierConfig{Secret: secret, Issuer: testIssuer, Audience: testAudience})
	recorder := newMetadataRecorder()
	address := startHealthServer(t, grpc.UnaryInterceptor(recorder.intercept))

	cases := []struct {
		name        string
		ctx         context.Context
		wantSubject string
	}{
		{"subject from context", security.WithSubject(t.Context(), "executor-42"), "executor-42"},
		{"default subject", t.Context(), testSubject},
		{"empty subject falls back to default", security.WithSubject(t.Context(), ""), testSubject},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := checkHealth(t, tc.ctx, address,
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithPerRPCCredentials(minter.PerRPCCredentials(false)))
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			values := recorder.next(t)
			if len(values) != 1 {
				t.Fatalf("authorization metadata = %q, want one value", values)
			}
			token, err := security.BearerToken(values[0])
			if err != nil {
				t.Fatalf("BearerToken: %v", err)
			}
			claims, err := verifier.Verify(token)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if claims.Subject != tc.wantSubject {
				t.Errorf("sub = %q, want %q", claims.Subject, tc.wantSubject)
			}
		})
	}
}

func TestSubjectFrom(t *testing.T) {
	if got := security.SubjectFrom(t.Context()); got != "" {
		t.Errorf("SubjectFrom(no subject) = %q, want empty", got)
	}
	if got := security.SubjectFrom(security.WithSubject(t.Context(), "executor-1")); got != "executor-1" {
		t.Errorf("SubjectFrom = %q, want executor-1", got)
	}
}

func TestPerRPCCredentialsRequiringTransportSecurity(t *testing.T) {
	certs := securitytest.GenerateCertificates(t)
	secret := securitytest.Secret(t)
	minter := newMinter(t, security.MinterConfig{
		Secret: secret, Issuer: testIssuer, Audience: testAudience, TTL: time.Minute, Subject: testSubject,
	})
	creds := minter.PerRPCCredentials(true)
	if !creds.RequireTransportSecurity() {
		t.Fatal("RequireTransportSecurity() = false")
	}

	t.Run("refused over plaintext", func(t *testing.T) {
		address := startHealthServer(t)
		conn, err := grpc.NewClient(address,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(creds))
		if err == nil {
			conn.Close()
			t.Fatal("a client with credentials requiring TLS was created without TLS")
		}
	})

	t.Run("sent over TLS", func(t *testing.T) {
		serverConfig, err := security.ServerTLSConfig(certs.ServerCertFile, certs.ServerKeyFile, "")
		if err != nil {
			t.Fatalf("ServerTLSConfig: %v", err)
		}
		recorder := newMetadataRecorder()
		address := startHealthServer(t,
			grpc.Creds(credentials.NewTLS(serverConfig)),
			grpc.UnaryInterceptor(recorder.intercept))
		clientConfig, err := security.ClientTLSConfig(certs.CAFile, "", "")
		if err != nil {
			t.Fatalf("ClientTLSConfig: %v", err)
		}
		err = checkHealth(t, security.WithSubject(t.Context(), "executor-tls"), address,
			grpc.WithTransportCredentials(credentials.NewTLS(clientConfig)),
			grpc.WithPerRPCCredentials(creds))
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		values := recorder.next(t)
		if len(values) != 1 || !strings.HasPrefix(values[0], "Bearer ") {
			t.Fatalf("authorization metadata = %q", values)
		}
		verifier := newVerifier(t, security.VerifierConfig{Secret: secret, Issuer: testIssuer})
		claims, err := verifier.Verify(strings.TrimPrefix(values[0], "Bearer "))
		if err != nil || claims.Subject != "executor-tls" {
			t.Fatalf("Verify = %+v, %v; want subject executor-tls", claims, err)
		}
	})
}

func TestTLSOverGRPC(t *testing.T) {
	certs := securitytest.GenerateCertificates(t)
	serverTLS := func(t *testing.T, clientCAFile string) string {
		t.Helper()
		config, err := security.ServerTLSConfig(certs.ServerCertFile, certs.ServerKeyFile, clientCAFile)
		if err != nil {
			t.Fatalf("ServerTLSConfig: %v", err)
		}
		return startHealthServer(t, grpc.Creds(credentials.NewTLS(config)))
	}
	clientTLS := func(t *testing.T, caFile, certFile, keyFile string) grpc.DialOption {
		t.Helper()
		config, err := security.ClientTLSConfig(caFile, certFile, keyFile)
		if err != nil {
			t.Fatalf("ClientTLSConfig: %v", err)
		}
		return grpc.WithTransportCredentials(credentials.NewTLS(config))
	}

	t.Run("TLS by IP address", func(t *testing.T) {
		address := serverTLS(t, "")
		if err := checkHealth(t, t.Context(), address, clientTLS(t, certs.CAFile, "", "")); err != nil {
			t.Fatalf("Check: %v", err)
		}
	})
	t.Run("TLS by host name", func(t *testing.T) {
		address := serverTLS(t, "")
		config, err := security.ClientTLSConfig(certs.CAFile, "", "")
		if err != nil {
			t.Fatalf("ClientTLSConfig: %v", err)
		}
		config.ServerName = "localhost"
		if err := checkHealth(t, t.Context(), address, grpc.WithTransportCredentials(credentials.NewTLS(config))); err != nil {
			t.Fatalf("Check: %v", err)
		}
	})
	t.Run("mutual TLS with a client certificate", func(t *testing.T) {
		address := serverTLS(t, certs.CAFile)
		if err := checkHealth(t, t.Context(), address, clientTLS(t, certs.CAFile, certs.ClientCertFile, certs.ClientKeyFile)); err != nil {
			t.Fatalf("Check: %v", err)
		}
	})
	t.Run("mutual TLS refuses a client without a certificate", func(t *testing.T) {
		address := serverTLS(t, certs.CAFile)
		err := checkHealth(t, t.Context(), address, clientTLS(t, certs.CAFile, "", ""))
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("Check = %v, want Unavailable", err)
		}
		if err := tlsRefusal(t, address, certs.CAFile, "", ""); !strings.Contains(err.Error(), "certificate required") {
			t.Fatalf("TLS refusal = %v, want the server to say a certificate is required", err)
		}
	})
	t.Run("mutual TLS refuses a client certificate from another CA", func(t *testing.T) {
		// The server's own certificate, signed by the test CA, is not a valid
		// client certificate for a server that trusts only the other CA.
		address := serverTLS(t, certs.OtherCAFile)
		err := checkHealth(t, t.Context(), address, clientTLS(t, certs.CAFile, certs.ClientCertFile, certs.ClientKeyFile))
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("Check = %v, want Unavailable", err)
		}
		if err := tlsRefusal(t, address, certs.CAFile, certs.ClientCertFile, certs.ClientKeyFile); !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("TLS refusal = %v, want the server to refuse the certificate", err)
		}
	})
	t.Run("client trusting another CA fails the handshake", func(t *testing.T) {
		address := serverTLS(t, "")
		err := checkHealth(t, t.Context(), address, clientTLS(t, certs.OtherCAFile, "", ""))
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("Check = %v, want Unavailable naming the certificate", err)
		}
	})
	t.Run("plaintext client refused by a TLS server", func(t *testing.T) {
		address := serverTLS(t, "")
		err := checkHealth(t, t.Context(), address, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("Check = %v, want Unavailable", err)
		}
	})
}

// tlsRefusal opens a bare TLS connection to a server that is expected to
// refuse the client, and returns the error of the handshake or, with TLS 1.3
// where the client finishes its side first, of the first read. It fails the
// test when the server accepts the client.
func tlsRefusal(t *testing.T, address, caFile, certFile, keyFile string) error {
	t.Helper()
	config, err := security.ClientTLSConfig(caFile, certFile, keyFile)
	if err != nil {
		t.Fatalf("ClientTLSConfig: %v", err)
	}
	config.NextProtos = []string{"h2"}
	dialer := &tls.Dialer{Config: config}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := dialer.DialContext(ctx, "tcp", address)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatalf("set deadline: %v", err)
	}
	// An accepting gRPC server sends its settings frame first, so a read
	// returns either that or the refusal.
	if _, err := conn.Read(make([]byte, 1)); err != nil {
		return err
	}
	t.Fatal("the server accepted the client")
	return nil
}

func TestTLSConfigs(t *testing.T) {
	certs := securitytest.GenerateCertificates(t)
	server, err := security.ServerTLSConfig(certs.ServerCertFile, certs.ServerKeyFile, "")
	if err != nil {
		t.Fatalf("ServerTLSConfig: %v", err)
	}
	if server.MinVersion != tls.VersionTLS12 || server.ClientAuth != tls.NoClientCert || len(server.Certificates) != 1 {
		t.Errorf("server config: MinVersion %x, ClientAuth %v, %d certificates", server.MinVersion, server.ClientAuth, len(server.Certificates))
	}
	mutual, err := security.ServerTLSConfig(certs.ServerCertFile, certs.ServerKeyFile, certs.CAFile)
	if err != nil {
		t.Fatalf("ServerTLSConfig with client CA: %v", err)
	}
	if mutual.ClientAuth != tls.RequireAndVerifyClientCert || mutual.ClientCAs == nil {
		t.Errorf("mutual server config: ClientAuth %v, ClientCAs set %v", mutual.ClientAuth, mutual.ClientCAs != nil)
	}
	client, err := security.ClientTLSConfig("", "", "")
	if err != nil {
		t.Fatalf("ClientTLSConfig with system roots: %v", err)
	}
	if client.MinVersion != tls.VersionTLS12 || client.RootCAs != nil || len(client.Certificates) != 0 {
		t.Errorf("client config: MinVersion %x, RootCAs set %v, %d certificates", client.MinVersion, client.RootCAs != nil, len(client.Certificates))
	}
	withCert, err := security.ClientTLSConfig(certs.CAFile, certs.ClientCertFile, certs.ClientKeyFile)
	if err != nil {
		t.Fatalf("ClientTLSConfig with a client certificate: %v", err)
	}
	if withCert.RootCAs == nil || len(withCert.Certificates) != 1 {
		t.Errorf("mutual client config: RootCAs set %v, %d certificates", withCert.RootCAs != nil, len(withCert.Certificates))
	}
}
