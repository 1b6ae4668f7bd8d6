package upstream

import (
	"net/http"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// appProto maps an endpoint's protocol hint to what the mesh header says.
// OPAQUE on an HTTP request (detected before the hint was known) and
// UNKNOWN leave the protocol to the caller.
func appProto(p apiv1.ProtocolHint_Protocol) forward.AppProto {
	switch p {
	case apiv1.ProtocolHint_HTTP1:
		return forward.AppProtoHTTP1
	case apiv1.ProtocolHint_HTTP2:
		return forward.AppProtoHTTP2
	case apiv1.ProtocolHint_GRPC:
		return forward.AppProtoGRPC
	}
	return forward.AppProtoUnknown
}

// toApp decides whether an unmeshed endpoint is spoken to in HTTP/1.1,
// from the caller's protocol and the endpoint's hint. A meshed endpoint is
// reached over the mesh's HTTP/2 and its proxy decides (from
// trellis-app-proto), so the caller's protocol is kept here.
func toApp(hdr http.Header, h1, meshed bool, ep balance.Endpoint) (bool, *proxyerr.Error) {
	if meshed {
		return h1, nil
	}
	appH1, err := forward.ToApp(forward.CallerOf(hdr, h1), appProto(ep.Protocol))
	if err != nil {
		return false, proxyerr.New(http.StatusBadGateway, proxyerr.ReasonProtocolMismatch, err.Error())
	}
	return appH1, nil
}

// setMeshHeaders sets the headers the peer proxy needs (the caller's HTTP
// version, the app's port and protocol) for a meshed endpoint, and none
// for an unmeshed one: they would reach its app. A retry may go from one
// kind of endpoint to the other, so each attempt starts clean.
func setMeshHeaders(hdr http.Header, meshed, h1 bool, protoMinor int, ep balance.Endpoint) {
	delete(hdr, forward.HeaderOrigProto)
	delete(hdr, forward.HeaderTargetPort)
	delete(hdr, forward.HeaderAppProto)
	if !meshed {
		return
	}
	if h1 {
		forward.SetOrigProto(hdr, protoMinor)
	}
	forward.SetTargetPort(hdr, ep.TargetPort)
	forward.SetAppProto(hdr, appProto(ep.Protocol))
}
