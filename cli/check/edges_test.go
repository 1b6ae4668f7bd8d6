package check

import (
	"context"
	"strings"
	"testing"
)

// TestMeshEdges: each meshed pod's outbound series become its edges, with
// the identity that served them and mTLS only when TLS carried a verified
// identity; a pod whose proxy cannot be read is named, not dropped.
func TestMeshEdges(t *testing.T) {
	c := healthyCluster()
	const series = `# TYPE trellis_responses_total counter
trellis_responses_total{classification="success",direction="outbound",dst_service="books.shop:80",grpc_status="",peer_identity="spiffe://cluster.local/ns/shop/sa/books",status_code="200",tls="true"} 90
trellis_responses_total{classification="failure",direction="outbound",dst_service="books.shop:80",grpc_status="",peer_identity="spiffe://cluster.local/ns/shop/sa/books",status_code="500",tls="true"} 10
trellis_responses_total{classification="success",direction="outbound",dst_service="example.com:80",grpc_status="",peer_identity="",status_code="200",tls="false"} 5
trellis_responses_total{classification="success",direction="inbound",dst_service="web.shop:80",grpc_status="",peer_identity="spiffe://cluster.local/ns/shop/sa/loadgen",status_code="200",tls="true"} 7
`
	c.metrics[appNS+"/web-1"] = series
	delete(c.metrics, appNS+"/web-2")
	web1, web2 := meshedPod("web-1"), meshedPod("web-2")
	web1.Spec.ServiceAccountName = "web"
	e := c.env(t, web1, web2)
	res, err := MeshEdges(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Edges) != 2 {
		t.Fatalf("edges = %+v, want the two outbound ones", res.Edges)
	}
	books, ext := res.Edges[0], res.Edges[1]
	if books.Pod != "web-1" || books.ServiceAccount != "web" || books.Destination != "books.shop:80" || !books.MTLS ||
		books.PeerIdentity != "spiffe://cluster.local/ns/shop/sa/books" || books.Requests != 100 || books.SuccessRate != 0.9 {
		t.Errorf("books edge = %+v", books)
	}
	if ext.MTLS || ext.PeerIdentity != "" || ext.Destination != "example.com:80" {
		t.Errorf("plaintext edge = %+v", ext)
	}
	if why := res.Unreadable[appNS+"/web-2"]; !strings.Contains(why, "could not find") {
		t.Errorf("unreadable = %v", res.Unreadable)
	}
}
