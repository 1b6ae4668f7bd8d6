package echo

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	demopb "github.com/trellis-mesh/trellis/demoapp/pb"
	"github.com/trellis-mesh/trellis/demoapp/upstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// echoClient dials the echo server at addr as if addr were a proxy
// carrying authority.
func echoClient(t *testing.T, addr, authority string) demopb.EchoClient {
	t.Helper()
	cc, err := upstream.DialGRPC(addr, authority)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return demopb.NewEchoClient(cc)
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, "x-user", "alice", "x-user", "bob")
}

// checkMeta checks what every Echo call must return around its messages.
func checkMeta(t *testing.T, header, trailer metadata.MD, method string) {
	t.Helper()
	if got := strings.Join(header.Get("x-echo-x-user"), ","); got != "alice,bob" {
		t.Errorf("header x-echo-x-user = %q, want alice,bob", got)
	}
	if got := header.Get("echo-served-by"); len(got) != 1 || got[0] != "echo-0" {
		t.Errorf("header echo-served-by = %q", got)
	}
	if got := header.Get("x-echo-content-type"); len(got) != 0 {
		t.Errorf("reserved key echoed: x-echo-content-type = %q", got)
	}
	if got := trailer.Get("x-echo-trailer"); len(got) != 1 || got[0] != method {
		t.Errorf("trailer x-echo-trailer = %q, want %s", got, method)
	}
}

func TestGRPCUnary(t *testing.T) {
	client := echoClient(t, startEcho(t, 0), "echo.demo:80")
	tests := []struct {
		name     string
		req      *demopb.EchoRequest
		wantCode codes.Code
	}{
		{"ok", &demopb.EchoRequest{Payload: []byte("hello")}, codes.OK},
		{"empty", &demopb.EchoRequest{}, codes.OK},
		{"not found", &demopb.EchoRequest{StatusCode: uint32(codes.NotFound), StatusMessage: "nope"}, codes.NotFound},
		{"unavailable", &demopb.EchoRequest{StatusCode: uint32(codes.Unavailable)}, codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var header, trailer metadata.MD
			resp, err := client.Unary(testCtx(t), tt.req, grpc.Header(&header), grpc.Trailer(&trailer))
			if status.Code(err) != tt.wantCode {
				t.Fatalf("error %v, want code %v", err, tt.wantCode)
			}
			checkMeta(t, header, trailer, "Unary")
			if tt.req.GetStatusMessage() != "" && status.Convert(err).Message() != tt.req.GetStatusMessage() {
				t.Errorf("message %q, want %q", status.Convert(err).Message(), tt.req.GetStatusMessage())
			}
			if err != nil {
				return
			}
			if string(resp.GetPayload()) != string(tt.req.GetPayload()) || resp.GetServedBy() != "echo-0" {
				t.Errorf("response %v", resp)
			}
			// The authority proves the call went to the "proxy" address
			// with the logical service name, as in explicit mode.
			if got := resp.GetMetadata()[":authority"]; got != "echo.demo:80" {
				t.Errorf(":authority seen = %q, want echo.demo:80", got)
			}
			if got := resp.GetMetadata()["x-user"]; got != "alice,bob" {
				t.Errorf("x-user seen = %q", got)
			}
		})
	}
}

func TestGRPCServerStream(t *testing.T) {
	client := echoClient(t, startEcho(t, 0), "echo.demo:80")
	tests := []struct {
		name     string
		req      *demopb.EchoRequest
		want     int
		wantCode codes.Code
	}{
		{"default one", &demopb.EchoRequest{Payload: []byte("p")}, 1, codes.OK},
		{"many", &demopb.EchoRequest{Payload: []byte("p"), Responses: 50, IntervalMs: 1}, 50, codes.OK},
		{"status after messages", &demopb.EchoRequest{Responses: 3, StatusCode: uint32(codes.Aborted)}, 3, codes.Aborted},
		{"too many", &demopb.EchoRequest{Responses: MaxStreamResponses + 1}, 0, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream, err := client.ServerStream(testCtx(t), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			got := 0
			for {
				resp, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					err = nil
				}
				if resp == nil {
					if status.Code(err) != tt.wantCode {
						t.Fatalf("end %v, want %v", err, tt.wantCode)
					}
					break
				}
				if resp.GetSequence() != uint32(got) || string(resp.GetPayload()) != string(tt.req.GetPayload()) {
					t.Errorf("response %d: %v", got, resp)
				}
				got++
			}
			if got != tt.want {
				t.Errorf("got %d responses, want %d", got, tt.want)
			}
			header, err := stream.Header()
			if err != nil {
				t.Fatal(err)
			}
			checkMeta(t, header, stream.Trailer(), "ServerStream")
		})
	}
}

func TestGRPCClientStream(t *testing.T) {
	client := echoClient(t, startEcho(t, 0), "echo.demo:80")
	tests := []struct {
		name     string
		reqs     []*demopb.EchoRequest
		want     string
		wantCode codes.Code
	}{
		{"none", nil, "", codes.OK},
		{"three", []*demopb.EchoRequest{{Payload: []byte("a")}, {Payload: []byte("b")}, {Payload: []byte("c")}}, "abc", codes.OK},
		{"status", []*demopb.EchoRequest{{Payload: []byte("a")}, {StatusCode: uint32(codes.PermissionDenied)}}, "", codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream, err := client.ClientStream(testCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range tt.reqs {
				if err := stream.Send(r); err != nil && !errors.Is(err, io.EOF) {
					t.Fatal(err)
				}
			}
			resp, err := stream.CloseAndRecv()
			if status.Code(err) != tt.wantCode {
				t.Fatalf("error %v, want %v", err, tt.wantCode)
			}
			header, herr := stream.Header()
			if herr != nil {
				t.Fatal(herr)
			}
			checkMeta(t, header, stream.Trailer(), "ClientStream")
			if err == nil && (string(resp.GetPayload()) != tt.want || resp.GetSequence() != uint32(len(tt.reqs))) {
				t.Errorf("response %v, want payload %q after %d messages", resp, tt.want, len(tt.reqs))
			}
		})
	}
}

func TestGRPCBidiStream(t *testing.T) {
	client := echoClient(t, startEcho(t, 0), "echo.demo:80")
	t.Run("ping pong", func(t *testing.T) {
		stream, err := client.BidiStream(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		// Each reply arrives before the next message is sent: the stream
		// is truly bidirectional, not buffered until half-close.
		for i, p := range []string{"one", "two", "three"} {
			if err := stream.Send(&demopb.EchoRequest{Payload: []byte(p)}); err != nil {
				t.Fatal(err)
			}
			resp, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if string(resp.GetPayload()) != p || resp.GetSequence() != uint32(i) {
				t.Errorf("reply %d = %v, want %q", i, resp, p)
			}
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("end: %v, want EOF", err)
		}
		header, err := stream.Header()
		if err != nil {
			t.Fatal(err)
		}
		checkMeta(t, header, stream.Trailer(), "BidiStream")
	})
	t.Run("status mid-stream", func(t *testing.T) {
		stream, err := client.BidiStream(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&demopb.EchoRequest{Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&demopb.EchoRequest{StatusCode: uint32(codes.ResourceExhausted), StatusMessage: "enough"}); err != nil {
			t.Fatal(err)
		}
		_, err = stream.Recv()
		if s := status.Convert(err); s.Code() != codes.ResourceExhausted || s.Message() != "enough" {
			t.Fatalf("end %v, want ResourceExhausted: enough", err)
		}
	})
}

func TestGRPCFailRate(t *testing.T) {
	client := echoClient(t, startEcho(t, 1), "echo.demo:80")
	ctx := testCtx(t)
	if _, err := client.Unary(ctx, &demopb.EchoRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("Unary: %v, want Unavailable", err)
	}
	stream, err := client.BidiStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("BidiStream: %v, want Unavailable", err)
	}
}
