package security

import (
	"context"
	"fmt"

	"google.golang.org/grpc/credentials"
)

// subjectKey is the context key of the subject set by WithSubject.
type subjectKey struct{}

// WithSubject returns a copy of ctx carrying executorID as the subject of
// the tokens that PerRPCCredentials attach to calls made with it. An empty
// executorID leaves ctx unchanged, so the default subject applies.
func WithSubject(ctx context.Context, executorID string) context.Context {
	if executorID == "" {
		return ctx
	}
	return context.WithValue(ctx, subjectKey{}, executorID)
}

// SubjectFrom returns the subject set by WithSubject on ctx, or "" when none
// was set.
func SubjectFrom(ctx context.Context) string {
	subject, _ := ctx.Value(subjectKey{}).(string)
	return subject
}

// PerRPCCredentials returns gRPC call credentials that attach
// "authorization: Bearer <token>" to every call, with a token from Token for
// the subject carried by the call's context (see WithSubject), or for the
// default subject when the context carries none. When
// requireTransportSecurity is true, gRPC refuses to send the credentials
// over a connection without TLS; pass false only for plaintext development
// and test setups.
//
// The token is read when a call starts: a stream keeps the token it was
// opened with, which is why long-lived streams are reopened after
// RefreshAfter.
func (m *Minter) PerRPCCredentials(requireTransportSecurity bool) credentials.PerRPCCredentials {
	return &perRPCCredentials{minter: m, requireTransportSecurity: requireTransportSecurity}
}

// perRPCCredentials adapts a Minter to credentials.PerRPCCredentials.
type perRPCCredentials struct {
	minter                   *Minter
	requireTransportSecurity bool
}

var _ credentials.PerRPCCredentials = (*perRPCCredentials)(nil)

// GetRequestMetadata returns the authorization metadata of one call.
func (c *perRPCCredentials) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	subject := SubjectFrom(ctx)
	token, err := c.minter.Token(subject)
	if err != nil {
		return nil, fmt.Errorf("authorization metadata: %w", err)
	}
	return map[string]string{"authorization": "Bearer " + token}, nil
}

// RequireTransportSecurity reports whether the credentials need TLS.
func (c *perRPCCredentials) RequireTransportSecurity() bool {
	return c.requireTransportSecurity
}
