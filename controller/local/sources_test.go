package local

import (
	"testing"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/store"
)

func TestProtocolHint(t *testing.T) {
	for in, want := range map[string]apiv1.ProtocolHint_Protocol{
		store.ProtocolHTTP: apiv1.ProtocolHint_HTTP1, store.ProtocolGRPC: apiv1.ProtocolHint_GRPC, store.ProtocolH2C: apiv1.ProtocolHint_HTTP2,
		store.ProtocolOpaque: apiv1.ProtocolHint_OPAQUE, store.ProtocolDetect: apiv1.ProtocolHint_UNKNOWN,
	} {
		if got := protocolHint(in); got != want {
			t.Errorf("protocolHint(%q) = %s, want %s", in, got, want)
		}
	}
}
