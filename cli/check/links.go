package check

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/trellis-mesh/trellis/internal/mclink"
)

// Link health on the controller's /metrics, as controller/k8s/mirror
// exports it (names from internal/mclink; docs/multicluster.md lists them).
const (
	LinkLastSyncMetric      = mclink.MetricLastSync
	MirroredServicesMetric  = mclink.MetricMirroredServices
	MirroredEndpointsMetric = mclink.MetricMirroredEndpoints
	LinkSyncErrorsMetric    = mclink.MetricSyncErrors
	LinkWatchErrorsMetric   = mclink.MetricWatchErrors
	MirrorConflictsMetric   = mclink.MetricConflicts
	UnmeshedEndpointsMetric = mclink.MetricUnmeshedEndpoints
)

// LinkStaleAfter is how old a link's last sync may be before it warns.
// The mirror re-syncs every exported service every 5 minutes (its
// informers' resync), each refreshing the timestamp, so three missed
// rounds mean the peer has not been read for a while.
const LinkStaleAfter = 15 * time.Minute

// LinkHealth is one link as this cluster's controller reports it.
type LinkHealth struct {
	Link   string `json:"link"` // the peer cluster's name
	Status Status `json:"status"`
	// LastSync is the last full read of the peer or successful mirror
	// sync; nil: never (since the controller started).
	LastSync *time.Time `json:"lastSync,omitempty"`
	// LastSyncAgeSeconds is the age of LastSync when checked.
	LastSyncAgeSeconds float64 `json:"lastSyncAgeSeconds,omitempty"`
	MirroredServices   int     `json:"mirroredServices"`
	MirroredEndpoints  int     `json:"mirroredEndpoints"`
	// UnmeshedEndpoints are peer endpoints left out: not meshed pods.
	UnmeshedEndpoints int `json:"unmeshedEndpoints"`
	// The counters count since each controller replica started.
	SyncErrors  int `json:"syncErrors"`
	WatchErrors int `json:"watchErrors"`
	Conflicts   int `json:"conflicts"`
}

// LinksData is the multicluster-links check's Result.Data.
type LinksData struct {
	Links []LinkHealth `json:"links"`
	// BadSecrets are link Secrets the controller cannot use: name: why.
	BadSecrets map[string]string `json:"badSecrets,omitempty"`
	// UnreadableReplicas are controller pods whose /metrics could not be
	// read: name: why.
	UnreadableReplicas map[string]string `json:"unreadableReplicas,omitempty"`
}

// linkFigures are one link's series, summed or maxed over replicas.
type linkFigures struct {
	lastSync                           float64 // Unix seconds; 0: none
	services, endpoints, unmeshed      float64
	syncErrors, watchErrors, conflicts float64
}

// LinksCheck: every link Secret of this cluster is valid, the controller
// mirrors (--multicluster), and each link synced recently. A cluster
// without links gets no result: nothing to look at, and the report of
// the trust checks stays as it was.
var LinksCheck = Check{
	Group: "multicluster", Name: "this cluster's links are in sync", Anchor: "multicluster-links",
	Run: func(ctx context.Context, e *Env) Outcome {
		secrets, err := linkSecrets(ctx, e)
		if err != nil {
			return fail("check that trellis check may list secrets in "+e.ns(), "%v", err)
		}
		if len(secrets) == 0 {
			return absent()
		}
		data := LinksData{Links: []LinkHealth{}}
		var links []mclink.Link
		var bad []string
		for i := range secrets {
			l, err := mclink.FromSecret(&secrets[i])
			if err != nil {
				if data.BadSecrets == nil {
					data.BadSecrets = map[string]string{}
				}
				data.BadSecrets[secrets[i].Name] = err.Error()
				bad = append(bad, err.Error())
				continue
			}
			links = append(links, l)
		}
		if len(bad) > 0 {
			o := fail("write the link again with trellis multicluster link (run against the peer) and apply it here ("+multiclusterDoc+")",
				"%s the controller cannot use: %s", plural(len(bad), "link Secret"), strings.Join(bad, "; "))
			o.Data = data
			return o
		}
		on, err := controllerMirrors(ctx, e)
		if err != nil {
			return fail("check the controller Deployment", "%v", err)
		}
		if !on {
			o := fail("trellis install --multicluster (chart multicluster.enabled), or remove the link Secrets ("+multiclusterDoc+")",
				"%s, but the controller runs without --multicluster: nothing mirrors them", plural(len(links), "link"))
			o.Data = data
			return o
		}
		figures, unreadable, err := scrapeLinkFigures(ctx, e)
		if err != nil {
			return warn("the controller's metrics are read through the API server's pod proxy (get on pods/proxy in "+e.ns()+"): kubectl -n "+e.ns()+" get pods",
				"%s, but their health cannot be read: %v", plural(len(links), "link"), err)
		}
		data.UnreadableReplicas = unreadable
		return linksOutcome(e.now(), e.ns(), links, figures, data)
	},
}

// linksOutcome judges each link from the figures and sums them up.
func linksOutcome(now time.Time, ns string, links []mclink.Link, figures map[string]linkFigures, data LinksData) Outcome {
	var msgs []string
	stale := 0
	for _, l := range links {
		h, msg := linkHealth(now, l.Cluster, figures[l.Cluster])
		data.Links = append(data.Links, h)
		msgs = append(msgs, msg)
		if h.Status != OK {
			stale++
		}
	}
	var o Outcome
	switch {
	case stale > 0:
		o = warn("look at the controller's log for the link (kubectl -n "+ns+" logs deploy/"+ControllerName+" | grep cluster=<peer>): the peer's API server must be reachable with the link's credentials ("+multiclusterDoc+")",
			"%s never synced, or not in %s: %s", plural(stale, "link"), LinkStaleAfter, strings.Join(msgs, "; "))
	case len(data.UnreadableReplicas) > 0:
		o = warn("kubectl -n "+ns+" get pods; the metrics are read through the API server's pod proxy (get on pods/proxy)",
			"%s; controller replicas unreadable: %s", strings.Join(msgs, "; "), strings.Join(slices.Sorted(maps.Keys(data.UnreadableReplicas)), ", "))
	default:
		o = ok("%s", strings.Join(msgs, "; "))
	}
	o.Data = data
	return o
}

// linkHealth is one link's figures and its line of the message.
func linkHealth(now time.Time, cluster string, f linkFigures) (LinkHealth, string) {
	h := LinkHealth{
		Link: cluster, Status: OK,
		MirroredServices: int(f.services), MirroredEndpoints: int(f.endpoints), UnmeshedEndpoints: int(f.unmeshed),
		SyncErrors: int(f.syncErrors), WatchErrors: int(f.watchErrors), Conflicts: int(f.conflicts),
	}
	counts := fmt.Sprintf("%s, %s mirrored", plural(h.MirroredServices, "service"), plural(h.MirroredEndpoints, "endpoint"))
	var msg string
	if f.lastSync <= 0 {
		h.Status = Warn
		msg = cluster + ": never synced, " + counts
	} else {
		sec, frac := math.Modf(f.lastSync)
		at := time.Unix(int64(sec), int64(frac*1e9)).UTC()
		age := max(now.Sub(at), 0)
		h.LastSync, h.LastSyncAgeSeconds = &at, age.Seconds()
		// With nothing mirrored nothing re-syncs, so an old timestamp is
		// no sign of trouble then.
		if age > LinkStaleAfter && h.MirroredServices > 0 {
			h.Status = Warn
		}
		msg = fmt.Sprintf("%s: last sync %s ago, %s", cluster, age.Round(time.Second), counts)
	}
	var extra []string
	for _, c := range []struct {
		n    int
		noun string
	}{{h.UnmeshedEndpoints, "unmeshed endpoint"}, {h.WatchErrors, "watch error"}, {h.SyncErrors, "sync error"}, {h.Conflicts, "name conflict"}} {
		if c.n > 0 {
			extra = append(extra, plural(c.n, c.noun))
		}
	}
	if len(extra) > 0 {
		msg += " (" + strings.Join(extra, ", ") + ")"
	}
	return h, msg
}

// linkSecrets lists the Secrets of type mclink.SecretType in the control
// plane's namespace, by name.
func linkSecrets(ctx context.Context, e *Env) ([]corev1.Secret, error) {
	list, err := e.Kube.CoreV1().Secrets(e.ns()).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("type", string(mclink.SecretType)).String(),
	})
	if err != nil {
		return nil, fmt.Errorf("list link secrets in %s: %w", e.ns(), err)
	}
	// Filtered here too: a field selector is a server-side courtesy that
	// not every API (nor client-go's fake) applies.
	out := slices.DeleteFunc(list.Items, func(s corev1.Secret) bool { return s.Type != mclink.SecretType })
	slices.SortFunc(out, func(a, b corev1.Secret) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// controllerMirrors reports whether the controller Deployment runs with
// --multicluster (the mirror is off without it).
func controllerMirrors(ctx context.Context, e *Env) (bool, error) {
	d, err := getController(ctx, e)
	if err != nil {
		return false, fmt.Errorf("get deployment %s/%s: %w", e.ns(), ControllerName, err)
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		if boolFlag(slices.Concat(c.Command, c.Args), "--multicluster") {
			return true, nil
		}
	}
	return false, nil
}

// boolFlag reports whether a boolean flag is on in args: --flag, or
// --flag=<true> (a boolean flag takes no separate value).
func boolFlag(args []string, flag string) bool {
	on := false
	for _, a := range args {
		if a == flag {
			on = true
		} else if v, found := strings.CutPrefix(a, flag+"="); found {
			b, err := strconv.ParseBool(v)
			on = err == nil && b
		}
	}
	return on
}

// scrapeLinkFigures reads every controller replica's /metrics. Only the
// replica that writes status runs the mirror, the others export no link
// series, so gauges take the largest value and counters the sum. It fails
// only when no replica could be read; the others are returned by name.
func scrapeLinkFigures(ctx context.Context, e *Env) (map[string]linkFigures, map[string]string, error) {
	pods, err := ControllerPods(ctx, e)
	if err != nil {
		return nil, nil, err
	}
	out := map[string]linkFigures{}
	var unreadable map[string]string
	for _, p := range pods {
		body, err := e.Scrape(ctx, p.Namespace, p.Name, ControllerAdminPort, "metrics")
		var figs map[string]linkFigures
		if err == nil {
			figs, err = parseLinkMetrics(body)
		}
		if err != nil {
			if unreadable == nil {
				unreadable = map[string]string{}
			}
			unreadable[p.Name] = err.Error()
			continue
		}
		for link, f := range figs {
			m := out[link]
			m.lastSync = max(m.lastSync, f.lastSync)
			m.services, m.endpoints, m.unmeshed = max(m.services, f.services), max(m.endpoints, f.endpoints), max(m.unmeshed, f.unmeshed)
			m.syncErrors += f.syncErrors
			m.watchErrors += f.watchErrors
			m.conflicts += f.conflicts
			out[link] = m
		}
	}
	if len(unreadable) == len(pods) {
		var errs []error
		for _, name := range slices.Sorted(maps.Keys(unreadable)) {
			errs = append(errs, fmt.Errorf("%s: %s", name, unreadable[name]))
		}
		return nil, nil, fmt.Errorf("no controller replica's /metrics could be read: %w", errors.Join(errs...))
	}
	return out, unreadable, nil
}

// parseLinkMetrics reads the link series of a controller's Prometheus
// text, by link. The unmeshed endpoints are summed over services.
func parseLinkMetrics(data []byte) (map[string]linkFigures, error) {
	fams, err := parseFamilies(data)
	if err != nil {
		return nil, err
	}
	out := map[string]linkFigures{}
	for name, add := range map[string]func(*linkFigures, float64){
		LinkLastSyncMetric:      func(f *linkFigures, v float64) { f.lastSync = v },
		MirroredServicesMetric:  func(f *linkFigures, v float64) { f.services = v },
		MirroredEndpointsMetric: func(f *linkFigures, v float64) { f.endpoints = v },
		UnmeshedEndpointsMetric: func(f *linkFigures, v float64) { f.unmeshed += v },
		LinkSyncErrorsMetric:    func(f *linkFigures, v float64) { f.syncErrors = v },
		LinkWatchErrorsMetric:   func(f *linkFigures, v float64) { f.watchErrors = v },
		MirrorConflictsMetric:   func(f *linkFigures, v float64) { f.conflicts = v },
	} {
		for _, m := range fams[name].GetMetric() {
			link := label(m, "link")
			if v, ok := value(m); ok && link != "" {
				f := out[link]
				add(&f, v)
				out[link] = f
			}
		}
	}
	return out, nil
}
