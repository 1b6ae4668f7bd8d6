package metrics

import (
	"errors"
	"slices"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// TestNewExposesEveryMetric checks the names and types of docs/controller.md
// and that labelled counters start with a zero series per known value.
func TestNewExposesEveryMetric(t *testing.T) {
	m := New()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	tests := []struct {
		name   string
		typ    dto.MetricType
		label  string
		values []string
	}{
		{"trellis_controller_certificates_issued_total", dto.MetricType_COUNTER, "", nil},
		{"trellis_controller_certificates_refused_total", dto.MetricType_COUNTER, "reason", []string{
			ReasonBadClientCertificate, ReasonBadCSR, ReasonBadRequest, ReasonBadToken, ReasonIdentityMismatch, ReasonInternal, ReasonIssuerExpired, ReasonUnknownIdentity}},
		{"trellis_controller_issuer_expiry_timestamp_seconds", dto.MetricType_GAUGE, "", nil},
		{"trellis_controller_anchor_expiry_timestamp_seconds", dto.MetricType_GAUGE, "", nil},
		{"trellis_controller_serving_cert_expiry_timestamp_seconds", dto.MetricType_GAUGE, "", nil},
		{"trellis_controller_config_reloads_total", dto.MetricType_COUNTER, "result", []string{"error", "ok"}},
		{"trellis_controller_config_last_reload_successful", dto.MetricType_GAUGE, "", nil},
		{"trellis_controller_destination_streams", dto.MetricType_GAUGE, "", nil},
		{"trellis_controller_destination_updates_total", dto.MetricType_COUNTER, "kind", []string{"add", "no_endpoints", "remove"}},
		{"trellis_controller_route_streams", dto.MetricType_GAUGE, "", nil},
		{"trellis_controller_policy_streams", dto.MetricType_GAUGE, "", nil},
		{"go_goroutines", dto.MetricType_GAUGE, "", nil},
		{"process_cpu_seconds_total", dto.MetricType_COUNTER, "", nil},
	}
	for _, tt := range tests {
		f := byName[tt.name]
		if f == nil {
			t.Errorf("%s: not exposed", tt.name)
			continue
		}
		if f.GetType() != tt.typ {
			t.Errorf("%s: type %s, want %s", tt.name, f.GetType(), tt.typ)
		}
		if tt.label == "" {
			continue
		}
		var got []string
		for _, s := range f.GetMetric() {
			if len(s.GetLabel()) != 1 || s.GetLabel()[0].GetName() != tt.label || s.GetCounter().GetValue() != 0 {
				t.Errorf("%s: series %v, want one %q label at 0", tt.name, s, tt.label)
				continue
			}
			got = append(got, s.GetLabel()[0].GetValue())
		}
		slices.Sort(got)
		if !slices.Equal(got, tt.values) {
			t.Errorf("%s: %s values %v, want %v", tt.name, tt.label, got, tt.values)
		}
	}
}

func TestConfigReloaded(t *testing.T) {
	m := New()
	value := func(g interface{ Write(*dto.Metric) error }) float64 {
		var d dto.Metric
		if err := g.Write(&d); err != nil {
			t.Fatal(err)
		}
		return d.GetGauge().GetValue() + d.GetCounter().GetValue()
	}
	if value(m.ConfigLastValid) != 1 {
		t.Fatal("a new controller's configuration is not marked valid")
	}
	for _, tt := range []struct {
		err       error
		lastValid float64
		ok, bad   float64
	}{
		{errors.New("bad"), 0, 0, 1},
		{nil, 1, 1, 1},
		{errors.New("bad again"), 0, 1, 2},
	} {
		m.ConfigReloaded(tt.err)
		if got := value(m.ConfigLastValid); got != tt.lastValid {
			t.Errorf("after %v: last valid %v, want %v", tt.err, got, tt.lastValid)
		}
		if ok, bad := value(m.ConfigReloads.WithLabelValues("ok")), value(m.ConfigReloads.WithLabelValues("error")); ok != tt.ok || bad != tt.bad {
			t.Errorf("after %v: reloads ok=%v error=%v, want %v %v", tt.err, ok, bad, tt.ok, tt.bad)
		}
	}
}
