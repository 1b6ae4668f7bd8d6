package fault

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

func TestLayer(t *testing.T) {
	for _, tt := range []struct {
		name       string
		route      *apiv1.Route
		rand       uint64 // what Rand returns
		timeout    time.Duration
		wantNext   bool
		wantStatus int
		wantGRPC   string
		wantMark   bool
		wantErr    int // a proxyerr status
		wantAbort  float64
		wantDelay  float64
	}{
		{name: "no route", wantNext: true},
		{name: "no fault", route: &apiv1.Route{}, wantNext: true},
		{name: "abort hit", route: &apiv1.Route{Fault: &apiv1.Fault{AbortMillionths: 500_000, AbortHttpStatus: 418}},
			rand: 499_999, wantStatus: 418, wantMark: true, wantAbort: 1},
		{name: "abort missed", route: &apiv1.Route{Fault: &apiv1.Fault{AbortMillionths: 500_000, AbortHttpStatus: 418}},
			rand: 500_000, wantNext: true},
		{name: "abort all, status defaults to 500", route: &apiv1.Route{Fault: &apiv1.Fault{AbortMillionths: Million}},
			rand: 3*Million - 1, wantStatus: 500, wantMark: true, wantAbort: 1},
		{name: "abort grpc", route: &apiv1.Route{Kind: "grpc", Fault: &apiv1.Fault{AbortMillionths: Million, AbortGrpcStatus: 8}},
			wantStatus: 200, wantGRPC: "8", wantMark: true, wantAbort: 1},
		{name: "abort grpc default", route: &apiv1.Route{Kind: "grpc", Fault: &apiv1.Fault{AbortMillionths: Million, AbortGrpcStatus: 99}},
			wantStatus: 200, wantGRPC: "14", wantMark: true, wantAbort: 1},
		{name: "delay then on", route: &apiv1.Route{Fault: &apiv1.Fault{DelayMillionths: Million, Delay: durationpb.New(time.Millisecond)}},
			wantNext: true, wantMark: true, wantDelay: 1},
		{name: "delay past the timeout", route: &apiv1.Route{Fault: &apiv1.Fault{DelayMillionths: Million, Delay: durationpb.New(time.Hour)}},
			timeout: time.Millisecond, wantErr: http.StatusGatewayTimeout, wantDelay: 1},
		{name: "delay and abort", route: &apiv1.Route{Fault: &apiv1.Fault{DelayMillionths: Million, Delay: durationpb.New(time.Millisecond), AbortMillionths: Million}},
			wantStatus: 500, wantMark: true, wantAbort: 1, wantDelay: 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m, err := metrics.NewRoutes(reg)
			if err != nil {
				t.Fatal(err)
			}
			if tt.route != nil {
				tt.route.Name = "ns/r"
			}
			s := &Stage{Metrics: m, Rand: func() uint64 { return tt.rand }}
			rec := httptest.NewRecorder()
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			x := &pipeline.Exchange{W: rec, R: httptest.NewRequest("GET", "/", nil), Ctx: ctx, Route: tt.route}
			reached := false
			err = s.Layer(pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
				reached = true
				x.EditResponse(rec.Header())
				return nil
			})).Serve(x)
			var pe *proxyerr.Error
			switch {
			case tt.wantErr != 0:
				if !errors.As(err, &pe) || pe.Status != tt.wantErr {
					t.Fatalf("err %v, want status %d", err, tt.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			}
			if reached != tt.wantNext {
				t.Errorf("next reached %v", reached)
			}
			if status, g, _ := x.Outcome(); !tt.wantNext && tt.wantErr == 0 && (status != tt.wantStatus || g != tt.wantGRPC || rec.Code != tt.wantStatus || rec.Header().Get("Grpc-Status") != tt.wantGRPC) {
				t.Errorf("answered %d %q (recorded %d %q), want %d %q", rec.Code, rec.Header().Get("Grpc-Status"), status, g, tt.wantStatus, tt.wantGRPC)
			}
			if got := rec.Header().Get(Header) == "injected"; got != tt.wantMark {
				t.Errorf("trellis-fault mark %v, want %v", got, tt.wantMark)
			}
			for kind, want := range map[string]float64{metrics.FaultAbort: tt.wantAbort, metrics.FaultDelay: tt.wantDelay} {
				if got := counter(t, reg, kind); got != want {
					t.Errorf("trellis_fault_injected_total{kind=%q} = %v, want %v", kind, got, want)
				}
			}
		})
	}
}

func counter(t *testing.T, reg *prometheus.Registry, kind string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "trellis_fault_injected_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == kind {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
