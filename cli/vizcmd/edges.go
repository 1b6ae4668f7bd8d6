package vizcmd

import (
	"context"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/cli/check"
	"github.com/trellis-mesh/trellis/cli/kubeconfig"
	"github.com/trellis-mesh/trellis/viz/model"
)

// EdgesFlags are what `trellis edges` adds for its Prometheus and local
// modes.
type EdgesFlags struct {
	PrometheusURL string
	Local         bool
	Config        string
	Window        time.Duration
}

// Edges answers `trellis edges` from a model.Source when one applies:
// --prometheus-url, --local/--config, a cluster running viz install, or no
// cluster but a running demo. ok is false when the caller should scrape
// the pods through the API server itself (a cluster without viz).
func Edges(ctx context.Context, kubeconfigPath, kubeContext, namespace string, f EdgesFlags) (res check.PodEdgesResult, ok bool, err error) {
	sf := SourceFlags{Kubeconfig: kubeconfigPath, Context: kubeContext, PrometheusURL: f.PrometheusURL, Local: f.Local, Config: f.Config}
	if sf.PrometheusURL == "" && !sf.Local && sf.Config == "" {
		cfg, err := kubeconfig.Load(kubeconfigPath, kubeContext)
		if err != nil {
			if _, lerr := RunningDemo(); lerr != nil {
				return res, false, nil // the caller reports the kubeconfig error
			}
			sf.Local = true
		} else {
			cs, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				return res, false, err
			}
			if up, err := Installed(ctx, cs); err != nil || !up {
				return res, false, nil
			}
		}
	}
	src, err := sf.Open(ctx)
	if err != nil {
		return res, false, err
	}
	defer src.Close()
	q := model.Query{Resource: model.Resource{Kind: "pods", Namespace: namespace}, Window: f.Window}
	if src.Mode == "local" {
		q.Resource = model.Resource{Kind: "workloads"}
	}
	edges, err := src.Edges(ctx, q)
	if err != nil {
		return res, true, err
	}
	res.Edges = make([]check.PodEdge, 0, len(edges))
	for _, e := range edges {
		rate := 0.0 // as the direct scrape: no NaN in JSON
		if e.SuccessRate != nil {
			rate = *e.SuccessRate
		}
		res.Edges = append(res.Edges, check.PodEdge{
			Namespace: e.Src.Namespace, Pod: e.Src.Name, ServiceAccount: serviceAccountOf(e.SrcIdentity),
			Destination: Name(e.Dst), PeerIdentity: e.DstIdentity, MTLS: e.MTLS,
			Requests: e.Requests, SuccessRate: rate,
		})
	}
	return res, true, nil
}

// serviceAccountOf is the sa of spiffe://td/ns/NS/sa/SA.
func serviceAccountOf(id string) string {
	_, sa, ok := strings.Cut(id, "/sa/")
	if !ok {
		return ""
	}
	return sa
}
