package timeout

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
)

func TestLayer(t *testing.T) {
	tests := []struct {
		name         string
		d            time.Duration
		route        *apiv1.Route
		wantDeadline bool
		want         time.Duration // the bound, when there is one
	}{
		{name: "bounded", d: time.Hour, wantDeadline: true, want: time.Hour},
		{name: "zero: no bound", d: 0},
		{name: "negative: no bound", d: -time.Second},
		{name: "route without timeout: the default", d: time.Hour, route: &apiv1.Route{}, wantDeadline: true, want: time.Hour},
		{name: "route timeout replaces the default", d: time.Hour, route: &apiv1.Route{Timeout: durationpb.New(time.Minute)}, wantDeadline: true, want: time.Minute},
		{name: "route timeout without a default", route: &apiv1.Route{Timeout: durationpb.New(time.Minute)}, wantDeadline: true, want: time.Minute},
		{name: "route timeout 0: no bound", d: time.Hour, route: &apiv1.Route{Timeout: durationpb.New(0)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := context.Background()
			x := &pipeline.Exchange{Ctx: client, Route: tt.route}
			var inner context.Context
			err := Layer(tt.d)(pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
				inner = x.Ctx
				return nil
			})).Serve(x)
			if err != nil {
				t.Fatal(err)
			}
			dl, ok := inner.Deadline()
			if ok != tt.wantDeadline {
				t.Fatalf("deadline set %v, want %v", ok, tt.wantDeadline)
			}
			if ok && (time.Until(dl) > tt.want || time.Until(dl) < tt.want/2) {
				t.Errorf("deadline %v away, want %v", time.Until(dl), tt.want)
			}
			if x.Ctx != client {
				t.Error("the exchange's context was not restored after the stage")
			}
			if ok && inner.Err() == nil {
				t.Error("the bounded context outlived its stage")
			}
		})
	}
}
