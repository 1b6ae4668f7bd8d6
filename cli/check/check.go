// Package check holds the checks behind `trellis check`: small functions
// that look at a cluster through an Env (client-go interfaces and two
// function hooks), each returning one Result with a status, a message and,
// when something is wrong, a one-line hint and a link into docs/check.md.
// It knows nothing of flags or terminals; cli/checkcmd is the command.
package check

import (
	"context"
	"fmt"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"

	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// Names every part of Trellis on Kubernetes agrees on (notes/k8s-contract.md).
const (
	ControllerName   = "trellis-controller" // Deployment, Service and ServiceAccount
	IssuerSecret     = "trellis-identity-issuer"
	AnchorsConfigMap = "trellis-trust-anchors"
	AnchorsKey       = "ca-bundle.crt"
	WebhookConfig    = "trellis-injector"
	CNINamespace     = "trellis-cni" // namespace and DaemonSet of the CNI installer (--cni)
	CNIDaemonSet     = "trellis-cni"
	ManagedByLabel   = "app.kubernetes.io/managed-by"
	ManagedByValue   = "trellis"
	ProxyAdminPort   = 4191
)

// DocBase is where the hints point; every check has an anchor on that page.
const DocBase = "https://github.com/trellis-mesh/trellis/blob/main/docs/check.md"

// Status is the outcome of one check.
type Status string

// The statuses, from good to bad; Skip is a check that did not run because
// one it depends on failed.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
	Skip Status = "skip"
)

// Result is one check's outcome as printed and as emitted by -o json.
type Result struct {
	// ID is stable across releases (the check's docs/check.md anchor):
	// scripts match on it, not on Name.
	ID       string `json:"id"`
	Category string `json:"category"`
	Group    string `json:"group"` // the same as Category, kept for older readers
	Name     string `json:"name"`
	Status   Status `json:"status"`
	Message  string `json:"message"`
	Hint     string `json:"hint,omitempty"`
	Doc      string `json:"doc,omitempty"`
	// Data is the figures behind Message for checks that have some (e.g.
	// LinksData), so that scripts need not parse the message.
	Data any `json:"data,omitempty"`
}

// Outcome is what a check function returns; the runner adds the names.
type Outcome struct {
	Status  Status
	Message string
	Hint    string // one line: what to do; required for Warn and Fail
	Data    any    // figures for -o json and yaml (Result.Data)
	// absent: the check has nothing to look at in this cluster and adds
	// no result at all (see absent()).
	absent bool
}

func ok(format string, a ...any) Outcome {
	return Outcome{Status: OK, Message: fmt.Sprintf(format, a...)}
}

func warn(hint, format string, a ...any) Outcome {
	return Outcome{Status: Warn, Message: fmt.Sprintf(format, a...), Hint: hint}
}

func fail(hint, format string, a ...any) Outcome {
	return Outcome{Status: Fail, Message: fmt.Sprintf(format, a...), Hint: hint}
}

// absent is the outcome of a check that has nothing to look at in this
// cluster (multicluster-links without links): Run leaves it out of the
// report rather than print a result that only says so, which keeps the
// report of clusters without the feature what it was.
func absent() Outcome { return Outcome{absent: true} }

// Check is one named check.
type Check struct {
	Group  string
	Name   string // what is true when it passes, e.g. "controller pods are ready"
	Anchor string // heading anchor in docs/check.md
	// Fatal checks stop the run when they fail: nothing after them can
	// give a useful answer (no API server, no control plane).
	Fatal bool
	// Timeout overrides Env.CheckTimeout for checks that visit every pod.
	Timeout time.Duration
	Run     func(ctx context.Context, e *Env) Outcome
}

// Env is everything the checks look at. Tests fill it with client-go fakes
// and httptest servers; cli/checkcmd fills it from a kubeconfig.
type Env struct {
	Kube kubernetes.Interface
	// Peer is the other cluster of the multicluster checks, and PeerName
	// how they name it (its context or kubeconfig).
	Peer     *Env
	PeerName string
	// Meta lists CustomResourceDefinitions by metadata only, so the product
	// needs no apiextensions client.
	Meta metadata.Interface
	// APIDate returns the Date header of a response of the API server.
	APIDate func(ctx context.Context) (time.Time, error)
	// Scrape GETs path from port of a pod (through the API server's pod
	// proxy in production) and returns the body.
	Scrape func(ctx context.Context, namespace, pod string, port int, path string) ([]byte, error)
	Now    func() time.Time
	// Namespace is the control plane's namespace (k8slabels.ControlPlaneNamespace).
	Namespace string
	// ProxyNamespace limits the data-plane checks to one namespace; empty
	// means every namespace.
	ProxyNamespace string
	// CLIVersion is this binary's version, the expected proxy version when
	// the controller's cannot be read.
	CLIVersion string
	// ProbeNamespace is where dry-run pods are created (native sidecar and
	// webhook probes); nothing is ever persisted there.
	ProbeNamespace string
	// CheckTimeout bounds each check (default 20 s).
	CheckTimeout time.Duration
	// WebhookSettle is how long the webhook-call check keeps retrying a
	// dry-run pod that came back uninjected (zero: one attempt). Right
	// after a controller rollout the API server can miss the webhook for a
	// second or two while kube-proxy catches up, and failurePolicy Ignore
	// hides that; a retry tells a transient gap from a broken webhook.
	// The tap-api check waits as long for the APIService to turn
	// Available (the API server's availability check has the same gap).
	WebhookSettle time.Duration
}

func (e *Env) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

func (e *Env) ns() string {
	if e.Namespace != "" {
		return e.Namespace
	}
	return k8slabels.ControlPlaneNamespace
}

func (e *Env) probeNS() string {
	if e.ProbeNamespace != "" {
		return e.ProbeNamespace
	}
	return "default"
}

// Run runs checks in order and returns one Result per check, but none for
// a check whose outcome is absent(). After a Fatal check fails the
// remaining ones are reported as skipped.
func Run(ctx context.Context, e *Env, checks []Check) []Result {
	timeout := e.CheckTimeout
	if timeout <= 0 {
		timeout = 20 * time.Second
	}
	out := make([]Result, 0, len(checks))
	var stoppedBy string
	for _, c := range checks {
		r := Result{ID: c.Anchor, Category: c.Group, Group: c.Group, Name: c.Name, Doc: DocBase + "#" + c.Anchor}
		if stoppedBy != "" {
			r.Status, r.Message = Skip, fmt.Sprintf("not run: %q failed", stoppedBy)
			out = append(out, r)
			continue
		}
		t := timeout
		if c.Timeout > 0 {
			t = c.Timeout
		}
		o := runOne(ctx, e, c, t)
		if o.absent {
			continue
		}
		r.Status, r.Message, r.Hint, r.Data = o.Status, o.Message, o.Hint, o.Data
		if o.Status == OK || o.Status == Skip {
			r.Doc = ""
		}
		out = append(out, r)
		if c.Fatal && o.Status == Fail {
			stoppedBy = c.Name
		}
	}
	return out
}

func runOne(ctx context.Context, e *Env, c Check, timeout time.Duration) (o Outcome) {
	if err := ctx.Err(); err != nil {
		return fail("run the check again", "interrupted: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return c.Run(ctx, e)
}

// Summary counts results by status.
type Summary struct {
	OK   int `json:"ok"`
	Warn int `json:"warn"`
	Fail int `json:"fail"`
	Skip int `json:"skip"`
}

// Summarize counts rs.
func Summarize(rs []Result) Summary {
	var s Summary
	for _, r := range rs {
		switch r.Status {
		case OK:
			s.OK++
		case Warn:
			s.Warn++
		case Fail:
			s.Fail++
		case Skip:
			s.Skip++
		}
	}
	return s
}

// Failed reports whether any check failed (or was skipped because one did).
func (s Summary) Failed() bool { return s.Fail > 0 }
