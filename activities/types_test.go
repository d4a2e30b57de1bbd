package activities

import (
	"errors"
	"fmt"
	"testing"

	"go.temporal.io/sdk/temporal"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/imagesource"
)

func TestTypedError(t *testing.T) {
	final := temporal.NewNonRetryableApplicationError("bad", contract.ErrTypeHashMismatch, nil)
	plain := errors.New("something else")
	for _, tc := range []struct {
		name     string
		in       error
		wantType string // "" means the error comes back unchanged
	}{
		{name: "nil", in: nil},
		{name: "image service down", in: fmt.Errorf("glance: image x: %w: dial tcp: connection refused", imagesource.ErrUnavailable), wantType: contract.ErrTypeImageServiceUnavailable},
		{name: "application error kept", in: final},
		{name: "other error kept", in: plain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := contract.TypedError(tc.in)
			if tc.wantType == "" {
				if got != tc.in {
					t.Fatalf("TypedError(%v) = %v, want it unchanged", tc.in, got)
				}
				return
			}
			var appErr *temporal.ApplicationError
			if !errors.As(got, &appErr) || appErr.Type() != tc.wantType || appErr.NonRetryable() || appErr.Message() != tc.in.Error() {
				t.Fatalf("TypedError(%v) = %#v, want a retryable %s with the same message", tc.in, got, tc.wantType)
			}
		})
	}
}
