package vizcmd

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/trellis-mesh/trellis/viz/model"
)

// KindOf resolves a typed kind.
func KindOf(s string) (string, error) {
	k, ok := model.KindOf(s)
	if !ok {
		return "", fmt.Errorf("resource kind %q: want deploy, pod, ns, svc, sts, ds, job, rs (or workload in local mode)", s)
	}
	return k, nil
}

// ParseResource reads "KIND/NAME" or "KIND NAME" (args) in namespace ns.
func ParseResource(args []string, ns string) (model.Resource, error) {
	if len(args) == 0 || len(args) > 2 {
		return model.Resource{}, fmt.Errorf("want KIND [NAME] or KIND/NAME, got %d arguments", len(args))
	}
	kind, name := args[0], ""
	if i := strings.IndexByte(kind, '/'); i >= 0 {
		if len(args) == 2 {
			return model.Resource{}, fmt.Errorf("%q and %q: give KIND/NAME or KIND NAME, not both", args[0], args[1])
		}
		kind, name = kind[:i], kind[i+1:]
		if name == "" {
			return model.Resource{}, fmt.Errorf("%q: no name after /", args[0])
		}
	} else if len(args) == 2 {
		name = args[1]
	}
	k, err := KindOf(kind)
	if err != nil {
		return model.Resource{}, err
	}
	r := model.Resource{Kind: k, Namespace: ns, Name: name}
	if k == "namespaces" {
		r.Namespace = ""
	}
	return r, nil
}

// ParseRef reads a --from/--to value: KIND/NAME.
func ParseRef(flag, s, ns string) (model.Resource, error) {
	if s == "" {
		return model.Resource{}, nil
	}
	if !strings.Contains(s, "/") {
		return model.Resource{}, fmt.Errorf("--%s %q: want KIND/NAME, e.g. deploy/web", flag, s)
	}
	r, err := ParseResource([]string{s}, ns)
	if err != nil {
		return model.Resource{}, fmt.Errorf("--%s: %w", flag, err)
	}
	return r, nil
}

// Name is "kind/name" for messages and tables ("ns/name" kept apart).
func Name(r model.Resource) string {
	short := map[string]string{"deployments": "deploy", "pods": "pod", "namespaces": "ns", "services": "svc",
		"statefulsets": "sts", "daemonsets": "ds", "jobs": "job", "replicasets": "rs", "workloads": "workload"}[r.Kind]
	if short == "" {
		short = r.Kind
	}
	return short + "/" + r.Name
}

// Figures of a Golden as table cells: "-" when there is no figure.
func pct(p *float64) string {
	if p == nil {
		return "-"
	}
	return strconv.FormatFloat(100**p, 'f', 2, 64) + "%"
}

func ms(p *float64) string {
	if p == nil {
		return "-"
	}
	return strconv.FormatFloat(*p, 'f', 1, 64) + "ms"
}

func num(p *float64) string {
	if p == nil {
		return "-"
	}
	return strconv.FormatFloat(*p, 'f', 0, 64)
}

func rps(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
