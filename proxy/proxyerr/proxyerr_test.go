package proxyerr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"

	"golang.org/x/net/http2"

	"github.com/trellis-mesh/trellis/proxy/meshh2"
)

// TestClientGone: the body read errors of a client that went away, from
// each server a request can come through (proxy/http1, meshh2 for an app's
// h2c and for mesh peers), against those of a client at fault.
func TestClientGone(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"context cancelled", fmt.Errorf("reading: %w", context.Canceled), true},
		{"connection reset", fmt.Errorf("read tcp: %w", syscall.ECONNRESET), true},
		{"x/net stream error", http2.StreamError{StreamID: 1, Code: http2.ErrCodeCancel}, true},
		{"meshh2 stream reset by the client", fmt.Errorf("body: %w", &meshh2.StreamError{StreamID: 3, Code: http2.ErrCodeCancel, Remote: true}), true},
		{"meshh2 connection closed", fmt.Errorf("meshh2: stream 3: %w", meshh2.ErrClosed), true},
		{"meshh2 stream reset by us", &meshh2.StreamError{StreamID: 3, Code: http2.ErrCodeFlowControl}, false},
		{"truncated body", io.ErrUnexpectedEOF, false},
		{"malformed body", errors.New("http1: bad chunk size"), false},
	} {
		if got := ClientGone(tc.err); got != tc.want {
			t.Errorf("%s: ClientGone(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}
