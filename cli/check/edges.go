package check

import (
	"bytes"
	"context"
	"math"
	"time"

	"github.com/trellis-mesh/trellis/viz/stats"
)

// PodEdge is the traffic one meshed pod sent to one destination, as its
// proxy counted it since it started: who served it and whether over mTLS.
type PodEdge struct {
	Namespace      string  `json:"namespace"`
	Pod            string  `json:"pod"`
	ServiceAccount string  `json:"serviceAccount"`
	Destination    string  `json:"destination"`
	PeerIdentity   string  `json:"peerIdentity"` // "" when the peer proved none
	MTLS           bool    `json:"mtls"`
	Requests       float64 `json:"requests"`
	SuccessRate    float64 `json:"successRate"`
}

// PodEdgesResult is every edge of the meshed pods of e.ProxyNamespace
// (all namespaces when empty), and the pods whose proxy could not be read.
type PodEdgesResult struct {
	Edges      []PodEdge         `json:"edges"`
	Unreadable map[string]string `json:"unreadable,omitempty"` // ns/pod: why
}

// MeshEdges scrapes every meshed pod's proxy through the API server and
// returns its outbound edges (the view of `trellis edges`).
func MeshEdges(ctx context.Context, e *Env) (PodEdgesResult, error) {
	pods, err := meshedPods(ctx, e)
	if err != nil {
		return PodEdgesResult{}, err
	}
	res := PodEdgesResult{Edges: []PodEdge{}}
	for _, p := range pods {
		name := p.Namespace + "/" + p.Name
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		body, err := e.Scrape(sctx, p.Namespace, p.Name, ProxyAdminPort, "metrics")
		cancel()
		var snap stats.Snapshot
		if err == nil {
			snap, err = stats.Parse(bytes.NewReader(body))
		}
		if err != nil {
			if res.Unreadable == nil {
				res.Unreadable = map[string]string{}
			}
			res.Unreadable[name] = err.Error()
			continue
		}
		for _, ed := range snap.Edges() {
			rate := ed.SuccessRate()
			if math.IsNaN(rate) {
				rate = 0 // no finished request yet; JSON has no NaN
			}
			res.Edges = append(res.Edges, PodEdge{
				Namespace: p.Namespace, Pod: p.Name, ServiceAccount: p.Spec.ServiceAccountName,
				Destination: ed.Destination, PeerIdentity: ed.PeerIdentity, MTLS: ed.MTLS,
				Requests: ed.Requests(), SuccessRate: rate,
			})
		}
	}
	return res, nil
}
