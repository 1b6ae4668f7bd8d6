package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	"github.com/trellis-mesh/trellis/internal/httpget"

	"github.com/trellis-mesh/trellis/cli/policycmd"
	"github.com/trellis-mesh/trellis/internal/meshconfig"
)

// PolicyDeny is `trellis demo --policy deny`: every server of the demo is
// default-deny, AuthorizationPolicies allow exactly loadgen -> web ->
// books -> authors, and one more caller, intruder, calls books directly
// and is refused (docs/policy.md#walkthrough).
const PolicyDeny = "deny"

// IntruderPorts is how many more ports a plan with a policy needs.
const IntruderPorts = portsPerWorkload

// intruder is the caller no policy allows: a load generator of its own
// service account that calls books directly.
var intruder = Workload{Name: "intruder", Role: "loadgen", ServiceAccount: "intruder", Version: "v1", Target: "books"}

// allowedCallers: who may call each service under PolicyDeny.
var allowedCallers = map[string]string{"web": "loadgen", "books": "web", "authors": "books"}

// WithPolicy returns the plan with policy ("" leaves it as it is): the
// intruder workload on ports (IntruderPorts of them) and the policies the
// store file will carry.
func (p Plan) WithPolicy(policy string, ports []int) (Plan, error) {
	switch policy {
	case "":
		return p, nil
	case PolicyDeny:
	default:
		return Plan{}, fmt.Errorf("--policy %q: the demo knows %q", policy, PolicyDeny)
	}
	if len(ports) < IntruderPorts {
		return Plan{}, fmt.Errorf("--policy needs %d more ports, got %d", IntruderPorts, len(ports))
	}
	w := intruder
	w.setPorts(ports)
	tok, err := newToken()
	if err != nil {
		return Plan{}, err
	}
	w.Token = tok
	p.Workloads = append(append([]Workload(nil), p.Workloads...), w)
	p.Policy = policy
	return p, nil
}

// Policies are the store file's policy objects of the plan: per serving
// workload a Server on its app port (no accessPolicy: deny) and one
// AuthorizationPolicy allowing the one caller of its service.
func (p Plan) Policies() []meshconfig.Object {
	if p.Policy == "" {
		return nil
	}
	var out []meshconfig.Object
	for _, w := range p.Workloads {
		caller, ok := allowedCallers[w.Service]
		if !ok {
			continue
		}
		out = append(out,
			object("Server", w.Name, map[string]any{
				"podSelector": map[string]any{"matchLabels": map[string]string{"app": w.Role, "version": w.Version}},
				"port":        w.AppPort,
				"protocol":    "HTTP/1",
			}),
			object("AuthorizationPolicy", w.Name+"-from-"+caller, map[string]any{
				"targetRef":  map[string]string{"group": "policy.trellis.io", "kind": "Server", "name": w.Name},
				"identities": []string{fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", TrustDomain, Namespace, caller)},
			}))
	}
	return out
}

func object(kind, name string, spec map[string]any) meshconfig.Object {
	raw, err := json.Marshal(spec)
	if err != nil {
		panic("demo: policy spec: " + err.Error()) // static shapes: cannot fail
	}
	return meshconfig.Object{APIVersion: policyv1.SchemeGroupVersion.String(), Kind: kind,
		Metadata: meshconfig.ObjectMeta{Name: name, Namespace: Namespace}, Spec: raw}
}

// denials reads the proxies' authorization denials for the live tables:
// a refused call is an HTTP 403, which the golden signals count as a
// success of the server (a 4xx is the client's fault), so the denied edge
// and its reason get their own table.
type denials struct {
	client *http.Client
	plan   Plan
	prev   map[string][]policycmd.Sample
}

// write scrapes every proxy and writes the denials since the last call.
func (d *denials) write(ctx context.Context, w io.Writer) error {
	cur := map[string][]policycmd.Sample{}
	for _, wl := range d.plan.Workloads {
		body, err := get(ctx, d.client, "http://"+addr(wl.AdminPort)+"/metrics")
		if err != nil {
			continue // the golden-signal scrape logs it
		}
		if s, err := policycmd.ParseMetrics(bytes.NewReader(body)); err == nil {
			cur[wl.Name] = s
		}
	}
	first := d.prev == nil
	prev := d.prev
	d.prev = cur
	if first {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "DENIED (inbound authorization)\nCALLER\tDST\tSERVER\tREASON\tCALLS\n")
	n := 0
	for _, wl := range d.plan.Workloads {
		for _, s := range policycmd.Delta(prev[wl.Name], cur[wl.Name]) {
			if s.Decision != policycmd.Deny {
				continue
			}
			caller := s.ClientID
			if caller == "" {
				caller = "(no mesh TLS)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.0f\n", caller, wl.Name, s.Server, s.Reason, s.Count)
			n++
		}
	}
	if n == 0 {
		fmt.Fprintln(tw, "(none)")
	}
	fmt.Fprintln(tw)
	return tw.Flush()
}

func get(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	return httpget.Body(ctx, c, url, policycmd.MaxMetricsBody)
}
