package timeout

import (
	"context"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/proxy/pipeline"
)

func TestLayer(t *testing.T) {
	tests := []struct {
		name         string
		d            time.Duration
		wantDeadline bool
	}{
		{name: "bounded", d: time.Hour, wantDeadline: true},
		{name: "zero: no bound", d: 0},
		{name: "negative: no bound", d: -time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := context.Background()
			x := &pipeline.Exchange{Ctx: client}
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
			if ok && time.Until(dl) > tt.d {
				t.Errorf("deadline %v away, more than %v", time.Until(dl), tt.d)
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
