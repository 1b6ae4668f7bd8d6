package loadgen

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The echo service is declared by hand (no .proto, no codegen): one unary
// method taking and returning a BytesValue.
const (
	EchoServiceName = "trellis.bench.Echo"
	EchoMethod      = "/" + EchoServiceName + "/Echo"
)

// EchoServer answers Echo with the request's bytes.
type EchoServer interface {
	Echo(context.Context, *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)
}

// Echo is the trivial EchoServer.
type Echo struct{}

// Echo returns the request unchanged.
func (Echo) Echo(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
	return in, nil
}

// EchoServiceDesc registers EchoServer on a grpc.Server.
var EchoServiceDesc = grpc.ServiceDesc{
	ServiceName: EchoServiceName,
	HandlerType: (*EchoServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.BytesValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			if icpt == nil {
				return srv.(EchoServer).Echo(ctx, in)
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: EchoMethod}
			return icpt(ctx, in, info, func(ctx context.Context, req any) (any, error) {
				return srv.(EchoServer).Echo(ctx, req.(*wrapperspb.BytesValue))
			})
		},
	}},
	Streams:  []grpc.StreamDesc{},
	Metadata: "bench",
}

// GRPCTarget describes unary Echo calls over one ClientConn (HTTP/2 without
// TLS, as an app speaks to its local proxy).
type GRPCTarget struct {
	Addr      string        // host:port to dial
	Authority string        // :authority; Addr when empty
	Payload   int           // request bytes (echoed back)
	Timeout   time.Duration // per call; default 5s
}

// GRPCWorkers returns n workers sharing one ClientConn, so n is the number
// of calls in flight at most. Close the returned ClientConn after the runs.
func GRPCWorkers(t GRPCTarget, n int) ([]Worker, *grpc.ClientConn, error) {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if t.Authority != "" {
		opts = append(opts, grpc.WithAuthority(t.Authority))
	}
	cc, err := grpc.NewClient("passthrough:///"+t.Addr, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("grpc client for %s: %w", t.Addr, err)
	}
	timeout := t.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	req := wrapperspb.Bytes(make([]byte, t.Payload))
	workers := make([]Worker, n)
	for i := range workers {
		out := new(wrapperspb.BytesValue)
		workers[i] = func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			if err := cc.Invoke(ctx, EchoMethod, req, out); err != nil {
				return fmt.Errorf("grpc echo: %w", err)
			}
			if len(out.GetValue()) != t.Payload {
				return fmt.Errorf("grpc echo: got %d bytes, want %d", len(out.GetValue()), t.Payload)
			}
			return nil
		}
	}
	return workers, cc, nil
}
