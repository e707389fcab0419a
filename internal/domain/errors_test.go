package domain

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestErrorMessage(t *testing.T) {
	cause := errors.New("connection refused")
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{Code: "DECLINED"}, "DECLINED"},
		{&Error{Code: "DECLINED", Message: "card declined"}, "DECLINED: card declined"},
		{&Error{Code: "UPSTREAM", Err: cause}, "UPSTREAM: connection refused"},
		{&Error{Code: "UPSTREAM", Message: "charge", Err: cause}, "UPSTREAM: charge: connection refused"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, tt.err.Error())
	}
}

func TestErrorUnwrapsToItsCause(t *testing.T) {
	cause := errors.New("connection refused")
	err := &Error{Code: "UPSTREAM", Err: cause}
	assert.Same(t, cause, err.Unwrap())
	assert.ErrorIs(t, err, cause)
	assert.ErrorIs(t, fmt.Errorf("charge: %w", err), cause)
	assert.Nil(t, (&Error{Code: "X"}).Unwrap())
}

func TestNewErrorAndErrorfArePermanent(t *testing.T) {
	e := NewError("DECLINED", "card declined")
	assert.Equal(t, &Error{Code: "DECLINED", Message: "card declined"}, e)

	f := Errorf("DECLINED", "card %s declined after %d tries", "1234", 2)
	assert.Equal(t, "card 1234 declined after 2 tries", f.Message)
	assert.False(t, f.Retryable)
	assert.Nil(t, f.Err)
}

func TestErrorWithContextCopies(t *testing.T) {
	original := &Error{Code: "INVALID_ORDER", Message: "bad id", Retryable: true}
	detailed := original.WithContext(map[string]any{"orderId": "X-1"})

	assert.Equal(t, map[string]any{"orderId": "X-1"}, detailed.Context)
	assert.Nil(t, original.Context, "the original must not change")
	assert.NotSame(t, original, detailed)
	assert.Equal(t, original.Code, detailed.Code)
	assert.Equal(t, original.Message, detailed.Message)
	assert.Equal(t, original.Retryable, detailed.Retryable)
}

func TestAsErrorFindsAnErrorInTheChain(t *testing.T) {
	inner := &Error{Code: "UPSTREAM", Retryable: true}

	got, ok := AsError(inner)
	require.True(t, ok)
	assert.Same(t, inner, got)

	got, ok = AsError(fmt.Errorf("charge order 7: %w", fmt.Errorf("gateway: %w", inner)))
	require.True(t, ok)
	assert.Same(t, inner, got)

	got, ok = AsError(errors.Join(errors.New("other"), inner))
	require.True(t, ok)
	assert.Same(t, inner, got)

	got, ok = AsError(errors.New("plain"))
	assert.False(t, ok)
	assert.Nil(t, got)

	got, ok = AsError(nil)
	assert.False(t, ok)
	assert.Nil(t, got)
}
