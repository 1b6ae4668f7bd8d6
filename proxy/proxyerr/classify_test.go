package proxyerr

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/trellis-mesh/trellis/internal/pki"
	"github.com/trellis-mesh/trellis/proxy/meshh2"
)

func TestClassify(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		err     error
		hop     Hop
		status  int
		reason  string
		culprit Culprit
	}{
		{"header list too large (x/net)", nil, errors.New("http2: request header list larger than peer's advertised limit"), ToPeer, 431, ReasonHeadersTooLarge, Client},
		{"client body read error", nil, fmt.Errorf("http2: %w", &clientBodyError{errors.New("malformed chunked encoding")}), ToPeer, 400, ReasonBadBody, Client},
		{"client body sentinel from an HTTP/1 reader", nil, fmt.Errorf("chunk size: %w", ErrClientBody), ToApp, 400, ReasonBadBody, Client},
		{"client body cut short towards the app", nil, fmt.Errorf("request body: %w", &clientBodyError{io.ErrUnexpectedEOF}), ToApp, 400, ReasonBadBody, Client},
		{"invalid header for x/net", nil, errors.New(`invalid HTTP header name "a b"`), ToPeer, 400, ReasonBadRequest, Client},
		{"invalid header for the HTTP/1 client", nil, errors.New(`invalid header name "a b"`), ToApp, 400, ReasonBadRequest, Client},
		{"request timeout", expired, context.DeadlineExceeded, ToPeer, 504, ReasonTimeout, Mesh},
		{"app i/o timeout", nil, &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, ToApp, 504, ReasonAppTimeout, App},
		{"peer proxy refuses connections", nil, fmt.Errorf("connecting to 10.0.0.1:4143: %w", dial), ToPeer, 502, ReasonConnectError, Mesh},
		{"peer connect marked", nil, fmt.Errorf("wrapped: %w", ErrConnect), ToPeer, 502, ReasonConnectError, Mesh},
		{"app refuses connections", nil, dial, ToApp, 502, ReasonAppUnreachable, App},
		{"peer identity wrong", nil, fmt.Errorf("connecting: mesh TLS handshake: %w", pki.ErrWrongIdentity), ToPeer, 502, ReasonTLS, Mesh},
		{"peer untrusted", nil, fmt.Errorf("%w: %w", ErrConnect, x509.UnknownAuthorityError{}), ToPeer, 502, ReasonTLS, Mesh},
		{"peer reset stream (x/net)", nil, http2.StreamError{StreamID: 1, Code: http2.ErrCodeInternal}, ToPeer, 502, ReasonPeerReset, Mesh},
		{"peer reset stream (meshh2)", nil, &meshh2.StreamError{StreamID: 1, Code: http2.ErrCodeCancel, Remote: true}, ToPeer, 502, ReasonPeerReset, Mesh},
		//lint:ignore SA1019 x/net's transport still returns it.
		{"peer GOAWAY", nil, http2.GoAwayError{ErrCode: http2.ErrCodeProtocol}, ToPeer, 502, ReasonPeerReset, Mesh},
		{"peer connection lost", nil, errors.New("http2: client connection lost"), ToPeer, 502, ReasonPeerReset, Mesh},
		{"app closed mid-response", nil, io.ErrUnexpectedEOF, ToApp, 502, ReasonAppError, App},
		{"app reset (h2c)", nil, http2.StreamError{Code: http2.ErrCodeRefusedStream}, ToApp, 502, ReasonAppError, App},
		{"app spoke garbage", nil, errors.New(`malformed HTTP response "xyz"`), ToApp, 502, ReasonAppError, App},
		{"anything else on the mesh hop", nil, errors.New("http2: unsupported scheme"), ToPeer, 502, ReasonUpstream, Mesh},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := tt.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			e := Classify(ctx, tt.err, tt.hop, "127.0.0.1:9")
			if e.Status != tt.status || e.Reason != tt.reason || e.Culprit != tt.culprit {
				t.Errorf("Classify(%v) = %d %s %s, want %d %s %s", tt.err, e.Status, e.Reason, e.Culprit, tt.status, tt.reason, tt.culprit)
			}
			if e.Msg == "" || !errors.Is(e, tt.err) {
				t.Errorf("Classify(%v): message %q, unwraps to the cause: %v", tt.err, e.Msg, errors.Is(e, tt.err))
			}
			if (tt.culprit == Client) != (e.Status >= 400 && e.Status < 500) {
				t.Errorf("client faults must be 4xx and only they: %d %s", e.Status, e.Culprit)
			}
		})
	}
}

func TestClientBody(t *testing.T) {
	broken := errors.New("malformed chunked encoding")
	b := ClientBody(io.NopCloser(io.MultiReader(io.LimitReader(neverEnding{}, 3), errReader{broken})))
	got, err := io.ReadAll(b)
	if len(got) != 3 || !errors.Is(err, ErrClientBody) || !errors.Is(err, broken) {
		t.Fatalf("read %d bytes, err %v: want 3 and an error marked ErrClientBody wrapping the cause", len(got), err)
	}
	// io.EOF stays io.EOF: readers compare it with ==.
	if n, err := ClientBody(http.NoBody).Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("empty body: %d %v, want 0 io.EOF", n, err)
	}
}

type neverEnding struct{}

func (neverEnding) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestCause(t *testing.T) {
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	roundTrip := errors.New("http2: stream reset")
	tests := []struct {
		name          string
		ctx           context.Context
		bodyErr       error // what reading the client's body returned, nil: no error
		wantCancelled bool
		wantBody      bool // the cause is the client's body
	}{
		{"exchange failed, client there", context.Background(), nil, false, false},
		{"client reset its stream", gone, nil, true, false},
		{"truncated HTTP/1 body (net/http cancels the context on it)", gone, io.ErrUnexpectedEOF, false, true},
		{"malformed chunked body", context.Background(), errors.New("invalid byte in chunk length"), false, true},
		{"client reset the connection mid-body", gone, &net.OpError{Op: "read", Err: syscall.ECONNRESET}, true, false},
		{"peer proxy reset the stream mid-body (x/net)", gone, errors.New("client disconnected"), true, false},
		{"peer proxy reset the stream mid-body (meshh2)", gone, http2.StreamError{Code: http2.ErrCodeCancel}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := io.NopCloser(strings.NewReader("abc"))
			if tt.bodyErr != nil {
				body = io.NopCloser(io.MultiReader(strings.NewReader("abc"), errReader{tt.bodyErr}))
			}
			cb := ClientBody(body)
			_, _ = io.ReadAll(cb)
			cause, cancelled := Cause(tt.ctx, cb, roundTrip)
			if cancelled != tt.wantCancelled {
				t.Fatalf("cancelled = %v, want %v (cause %v)", cancelled, tt.wantCancelled, cause)
			}
			if !cancelled && errors.Is(cause, ErrClientBody) != tt.wantBody {
				t.Fatalf("cause %v: the client's body = %v, want %v", cause, !tt.wantBody, tt.wantBody)
			}
		})
	}
}

func TestHeaderListTooLarge(t *testing.T) {
	for _, tt := range []struct {
		value int
		want  bool
	}{{100, false}, {MaxHeaderList - 1000, false}, {MaxHeaderList, true}, {1_050_000, true}} {
		r := httptest.NewRequest("GET", "http://echo.e2e/", nil)
		r.Header.Set("X-Big", strings.Repeat("a", tt.value))
		e := HeaderListTooLarge(r)
		if (e != nil) != tt.want {
			t.Errorf("%d bytes: %v, want too large = %v", tt.value, e, tt.want)
		}
		if e != nil && (e.Status != 431 || e.Culprit != Client) {
			t.Errorf("%d bytes: %d %s", tt.value, e.Status, e.Culprit)
		}
	}
}
