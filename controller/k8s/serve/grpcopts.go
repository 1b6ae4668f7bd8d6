package serve

import "google.golang.org/grpc"

// Buffer sizes of the controller's gRPC connections. Proxies hold one
// connection each for as long as they run and exchange small messages on
// it (a request of a few hundred bytes, answers of a few KiB), so
// grpc-go's defaults, sized for bulk transfer (32 KiB read + 32 KiB write
// per connection), made connections the largest part of the controller's
// memory at scale: bench/ctrlscale measured ~52 MB for 1,000 proxies.
const (
	// grpcReadBuffer batches reads of frames; TLS underneath keeps its own
	// record buffer, so a small one costs few extra reads.
	grpcReadBuffer = 4 << 10
	// grpcWriteBuffer is about one TLS record: a flush fills one record.
	// It is shared (pooled) between flushes, grpc-go's default.
	grpcWriteBuffer = 16 << 10
	// grpcWindow is the flow-control window for what proxies send (their
	// requests). Static windows also stop grpc-go's bandwidth probing
	// (BDP pings), which only grows windows for bulk uploads the
	// controller never receives. 64 KiB is grpc-go's minimum.
	grpcWindow = 64 << 10
	// grpcMaxRecv bounds one message from a proxy (grpc-go's default is
	// 4 MiB): its requests are a few hundred bytes, a Certify's CSR and
	// token a few KiB, and every byte comes from a caller not yet
	// authenticated.
	grpcMaxRecv = 64 << 10
)

// grpcBufferOptions are the server options sizing per-connection buffers
// for a control plane of many long-lived, mostly idle connections.
func grpcBufferOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ReadBufferSize(grpcReadBuffer),
		grpc.WriteBufferSize(grpcWriteBuffer),
		grpc.StaticStreamWindowSize(grpcWindow),
		grpc.StaticConnWindowSize(grpcWindow),
		grpc.MaxRecvMsgSize(grpcMaxRecv),
	}
}
