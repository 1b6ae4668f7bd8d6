package outbound_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	testpb "google.golang.org/grpc/interop/grpc_testing"
)

type grpcServer struct {
	testpb.UnimplementedTestServiceServer
}

func (grpcServer) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "unary"))
	if req.GetResponseStatus().GetCode() != 0 {
		return nil, status.Error(codes.Code(req.GetResponseStatus().GetCode()), req.GetResponseStatus().GetMessage())
	}
	return &testpb.SimpleResponse{Payload: req.GetPayload()}, nil
}

func (grpcServer) FullDuplexCall(stream testpb.TestService_FullDuplexCallServer) error {
	stream.SetTrailer(metadata.Pairs("x-trailer", "bidi"))
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

func TestGRPCUnaryAndBidi(t *testing.T) {
	appLn := listen(t)
	gs := grpc.NewServer()
	testpb.RegisterTestServiceServer(gs, grpcServer{})
	go func() { _ = gs.Serve(appLn) }()
	t.Cleanup(gs.Stop)
	p := newPair(t, pairOpts{appListener: appLn})

	cc, err := grpc.NewClient("passthrough:///"+service,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(service),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", p.outAddr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := testpb.NewTestServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var trailer metadata.MD
	resp, err := client.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("ping")}}, grpc.Trailer(&trailer))
	if err != nil || string(resp.GetPayload().GetBody()) != "ping" {
		t.Fatalf("unary: %v %v", resp, err)
	}
	if got := trailer.Get("x-trailer"); len(got) != 1 || got[0] != "unary" {
		t.Errorf("unary trailer = %v", trailer)
	}
	_, err = client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "no such book"}})
	if status.Code(err) != codes.NotFound || status.Convert(err).Message() != "no such book" {
		t.Fatalf("status error = %v", err)
	}

	stream, err := client.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		msg := fmt.Sprintf("msg-%d", i)
		if err := stream.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte(msg)}}); err != nil {
			t.Fatal(err)
		}
		// Each message must come back before the next is sent: streaming,
		// not buffering.
		r, err := stream.Recv()
		if err != nil || string(r.GetPayload().GetBody()) != msg {
			t.Fatalf("bidi %d: %v %v", i, r, err)
		}
	}
	_ = stream.CloseSend()
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("end of stream: %v", err)
	}
	if got := stream.Trailer().Get("x-trailer"); len(got) != 1 || got[0] != "bidi" {
		t.Errorf("bidi trailer = %v", stream.Trailer())
	}
	eventually(t, "grpc metrics", func() bool {
		return counter(t, p.outReg, "trellis_responses_total", map[string]string{"grpc_status": "0", "classification": "success", "peer_identity": serverID.String()}) == 2 &&
			counter(t, p.outReg, "trellis_responses_total", map[string]string{"grpc_status": "5", "classification": "failure"}) == 1 &&
			counter(t, p.inReg, "trellis_responses_total", map[string]string{"grpc_status": "5", "classification": "failure", "peer_identity": clientID.String()}) == 1
	})
}

// echoServer echoes bytes on a raw TCP listener.
func echoServer(t *testing.T) net.Listener {
	ln := listen(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

func TestConnectOpaque(t *testing.T) {
	p := newPair(t, pairOpts{appListener: echoServer(t)})
	c, err := net.Dial("tcp", p.outAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", service, service)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	for _, msg := range []string{"hello\n", "opaque world\n"} {
		_, _ = io.WriteString(c, msg)
		got, err := br.ReadString('\n')
		if err != nil || got != msg {
			t.Fatalf("echo %q: %q %v", msg, got, err)
		}
	}
	_ = c.(*net.TCPConn).CloseWrite()
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after half-close: %q %v", rest, err)
	}
	eventually(t, "tcp metrics", func() bool {
		return counter(t, p.outReg, "trellis_tcp_close_total", map[string]string{"direction": "outbound", "dst_service": service, "tls": "true"}) == 1 &&
			counter(t, p.inReg, "trellis_tcp_read_bytes_total", map[string]string{"direction": "inbound", "peer_identity": clientID.String()}) == float64(len("hello\nopaque world\n"))
	})
}

func TestWebSocketStyleUpgrade(t *testing.T) {
	// The app answers 101 and then echoes raw bytes.
	ln := listen(t)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil || !strings.EqualFold(req.Header.Get("Upgrade"), "echo") || req.Host != "books.demo" {
					fmt.Fprintf(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
					return
				}
				fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
				_, _ = io.Copy(c, br)
			}()
		}
	}()
	p := newPair(t, pairOpts{appListener: ln})
	c, err := net.Dial("tcp", p.outAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: books.demo\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	_, _ = io.WriteString(c, "frame\n")
	if got, err := br.ReadString('\n'); err != nil || got != "frame\n" {
		t.Fatalf("echo: %q %v", got, err)
	}
}
