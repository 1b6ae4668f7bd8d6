package echo

import (
	"context"
	"errors"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/demoapp/faults"
	demopb "github.com/trellis-mesh/trellis/demoapp/pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Bounds of ServerStream requests.
const (
	MaxStreamResponses  = 100_000
	MaxStreamIntervalMS = 10_000
)

// NewGRPCServer returns a gRPC server with only the Echo service, for
// callers that want it on a listener of its own.
func NewGRPCServer(cfg Config, opts ...grpc.ServerOption) *grpc.Server {
	s := grpc.NewServer(opts...)
	registerGRPC(s, cfg)
	return s
}

func registerGRPC(s *grpc.Server, cfg Config) {
	demopb.RegisterEchoServer(s, &echoServer{cfg: cfg})
}

type echoServer struct {
	demopb.UnimplementedEchoServer
	cfg Config
}

// begin applies the fail rate, echoes the request metadata as header
// metadata and sets the trailer; it returns the metadata as a map for the
// response messages.
func (e *echoServer) begin(ctx context.Context, method string) (map[string]string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	seen := make(map[string]string, len(md))
	out := metadata.Pairs("echo-served-by", e.cfg.Name)
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		vs := md[k]
		seen[k] = strings.Join(vs, ",")
		if reservedKey(k) {
			continue
		}
		for _, v := range vs {
			out.Append("x-echo-"+k, v)
		}
	}
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-echo-trailer", method))
	if e.cfg.Faults.Fail() {
		// Still send the headers so that callers can see who failed.
		_ = grpc.SetHeader(ctx, out)
		return nil, status.Error(codes.Unavailable, "injected failure")
	}
	if err := grpc.SetHeader(ctx, out); err != nil {
		return nil, err
	}
	return seen, nil
}

// reservedKey reports whether a metadata key belongs to gRPC or HTTP/2
// rather than to the caller, so it must not be echoed as a header.
func reservedKey(k string) bool {
	switch k {
	case "content-type", "user-agent", "te", "authority":
		return true
	}
	return strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-")
}

// requestedStatus is the status a request asks the call to end with.
func requestedStatus(req *demopb.EchoRequest) error {
	if req.GetStatusCode() == 0 {
		return nil
	}
	msg := req.GetStatusMessage()
	if msg == "" {
		msg = "requested status"
	}
	return status.Error(codes.Code(req.GetStatusCode()), msg)
}

func (e *echoServer) Unary(ctx context.Context, req *demopb.EchoRequest) (*demopb.EchoResponse, error) {
	md, err := e.begin(ctx, "Unary")
	if err != nil {
		return nil, err
	}
	if err := requestedStatus(req); err != nil {
		return nil, err
	}
	return &demopb.EchoResponse{Payload: req.GetPayload(), Metadata: md, ServedBy: e.cfg.Name}, nil
}

func (e *echoServer) ServerStream(req *demopb.EchoRequest, stream grpc.ServerStreamingServer[demopb.EchoResponse]) error {
	ctx := stream.Context()
	md, err := e.begin(ctx, "ServerStream")
	if err != nil {
		return err
	}
	n := req.GetResponses()
	if n == 0 {
		n = 1
	}
	if n > MaxStreamResponses {
		return status.Errorf(codes.InvalidArgument, "responses %d is over %d", n, MaxStreamResponses)
	}
	if req.GetIntervalMs() > MaxStreamIntervalMS {
		return status.Errorf(codes.InvalidArgument, "interval_ms %d is over %d", req.GetIntervalMs(), MaxStreamIntervalMS)
	}
	interval := time.Duration(req.GetIntervalMs()) * time.Millisecond
	for i := uint32(0); i < n; i++ {
		if i > 0 && !faults.Sleep(ctx, interval) {
			return status.FromContextError(ctx.Err()).Err()
		}
		resp := &demopb.EchoResponse{Payload: req.GetPayload(), Sequence: i, ServedBy: e.cfg.Name}
		if i == 0 {
			resp.Metadata = md
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
	return requestedStatus(req)
}

func (e *echoServer) ClientStream(stream grpc.ClientStreamingServer[demopb.EchoRequest, demopb.EchoResponse]) error {
	md, err := e.begin(stream.Context(), "ClientStream")
	if err != nil {
		return err
	}
	var payload []byte
	var count uint32
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		count++
		payload = append(payload, req.GetPayload()...)
		if err := requestedStatus(req); err != nil {
			return err
		}
	}
	return stream.SendAndClose(&demopb.EchoResponse{Payload: payload, Metadata: md, Sequence: count, ServedBy: e.cfg.Name})
}

func (e *echoServer) BidiStream(stream grpc.BidiStreamingServer[demopb.EchoRequest, demopb.EchoResponse]) error {
	md, err := e.begin(stream.Context(), "BidiStream")
	if err != nil {
		return err
	}
	for seq := uint32(0); ; seq++ {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := requestedStatus(req); err != nil {
			return err
		}
		resp := &demopb.EchoResponse{Payload: req.GetPayload(), Sequence: seq, ServedBy: e.cfg.Name}
		if seq == 0 {
			resp.Metadata = md
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}
