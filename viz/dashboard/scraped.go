package dashboard

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/httpget"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	prommodel "github.com/prometheus/common/model"

	"github.com/trellis-mesh/trellis/viz/scrape"
)

// Scraped answers Identities and Decisions from the proxies' own
// /metrics: the certificate's expiry
// (trellis_identity_cert_expiry_timestamp_seconds) and the inbound
// authorization counters (trellis_inbound_authz_*_total). Counters are
// since each proxy started: there is no Prometheus to take rates.
type Scraped struct {
	Targets []scrape.Target
	Client  *http.Client
}

// maxExposition bounds one proxy's answer (a few hundred KiB at most).
const maxExposition = 16 << 20

// Identities reads every target's certificate expiry; a proxy that cannot
// be read shows with an unknown expiry rather than hiding.
func (s *Scraped) Identities(ctx context.Context, _ string) ([]Identity, error) {
	fams, errs := s.scrapeAll(ctx)
	var out []Identity
	for i, t := range s.Targets {
		id := Identity{Resource: t.Resource, Identity: t.Identity}
		if errs[i] == nil {
			if v, ok := gauge(fams[i]["trellis_identity_cert_expiry_timestamp_seconds"]); ok && v > 0 {
				sec, frac := math.Modf(v)
				id.NotAfter = time.Unix(int64(sec), int64(frac*1e9))
			}
		}
		out = append(out, id)
	}
	return out, allFailed(errs)
}

// Decisions reads every target's authorization counters (window is not
// used: the counts are since the proxy started).
func (s *Scraped) Decisions(ctx context.Context, _ string, _ time.Duration) ([]Decision, error) {
	fams, errs := s.scrapeAll(ctx)
	var out []Decision
	for i, t := range s.Targets {
		for _, kind := range []string{"allow", "deny", "audit"} {
			for _, m := range fams[i]["trellis_inbound_authz_"+kind+"_total"].GetMetric() {
				d := Decision{Resource: t.Resource, Decision: kind, Count: m.GetCounter().GetValue()}
				for _, l := range m.GetLabel() {
					switch l.GetName() {
					case "server":
						d.Server = l.GetValue()
					case "route":
						d.Route = l.GetValue()
					case "authz":
						d.Authz = l.GetValue()
					case "reason":
						d.Reason = l.GetValue()
					case "client_id":
						d.ClientID = l.GetValue()
					case "tls":
						d.TLS = l.GetValue() == "true"
					}
				}
				if d.Count > 0 {
					out = append(out, d)
				}
			}
		}
	}
	return out, allFailed(errs)
}

// scrapeAll reads every target concurrently.
func (s *Scraped) scrapeAll(ctx context.Context) ([]map[string]*dto.MetricFamily, []error) {
	fams := make([]map[string]*dto.MetricFamily, len(s.Targets))
	errs := make([]error, len(s.Targets))
	var wg sync.WaitGroup
	for i, t := range s.Targets {
		wg.Go(func() { fams[i], errs[i] = s.scrape(ctx, t.MetricsURL) })
	}
	wg.Wait()
	return fams, errs
}

func (s *Scraped) scrape(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	client := s.Client
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	body, err := httpget.Body(ctx, client, url, maxExposition)
	if err != nil {
		return nil, err
	}
	p := expfmt.NewTextParser(prommodel.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return fams, nil
}

func gauge(f *dto.MetricFamily) (float64, bool) {
	if f == nil || len(f.GetMetric()) == 0 {
		return 0, false
	}
	return f.GetMetric()[0].GetGauge().GetValue(), true
}

// allFailed is the first error when no target could be read: a page shows
// what the others answered otherwise.
func allFailed(errs []error) error {
	for _, err := range errs {
		if err == nil {
			return nil
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errs[0]
}
