package routemodel

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

func TestAnnotations(t *testing.T) {
	cases := []struct {
		name       string
		ann        map[string]string
		retry, flt string // prototext; "-" none
		errsNaming []string
	}{
		{"none", nil, "-", "-", nil},
		{"retry, every field",
			map[string]string{AnnotationRetryLimit: "3", AnnotationRetryHTTPStatuses: "500, 502-503", AnnotationRetryGRPCCodes: "unavailable,DEADLINE_EXCEEDED,8",
				AnnotationRetryTimeout: "250ms", AnnotationRetryBackoff: "25ms", AnnotationRetryBackoffMax: "1s", AnnotationRetryBudget: "20", AnnotationRetryBudgetMin: "10"},
			`max_retries: 3 retry_on_status: [500, 502, 503] retry_on_grpc: [14, 4, 8] per_try_timeout { nanos: 250000000 }
			 backoff_base { nanos: 25000000 } backoff_max { seconds: 1 } budget_ratio: 0.2 budget_min_per_second: 10`, "-", nil},
		{"delay", map[string]string{AnnotationDelayPercent: "12.5", AnnotationDelay: "2s"},
			"-", `delay_millionths: 125000 delay { seconds: 2 }`, nil},
		{"abort with gRPC status", map[string]string{AnnotationAbortPercent: "100", AnnotationAbortGRPCStatus: "8"},
			"-", `abort_millionths: 1000000 abort_http_status: 500 abort_grpc_status: 8`, nil},
		{"bad values are ignored and named",
			map[string]string{AnnotationRetryLimit: "11", AnnotationRetryHTTPStatuses: "504-500", AnnotationRetryGRPCCodes: "sad",
				AnnotationAbortPercent: "101", AnnotationDelayPercent: "5", AnnotationRetryTimeout: "-1s"},
			"-", "-", []string{AnnotationRetryLimit, AnnotationRetryHTTPStatuses, AnnotationRetryGRPCCodes, AnnotationAbortPercent, AnnotationDelayPercent, AnnotationRetryTimeout}},
		{"a huge status range is refused", map[string]string{AnnotationRetryHTTPStatuses: "100-599"}, "-", "-", []string{AnnotationRetryHTTPStatuses}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := Annotations(tc.ann)
			check(t, "retry", a.Retry, tc.retry, &apiv1.RetryPolicy{})
			check(t, "fault", a.Fault, tc.flt, &apiv1.Fault{})
			if len(a.Errs) != len(tc.errsNaming) {
				t.Errorf("errors %v, want ones naming %v", a.Errs, tc.errsNaming)
			}
			for _, name := range tc.errsNaming {
				found := false
				for _, err := range a.Errs {
					found = found || strings.HasPrefix(err.Error(), name+":")
				}
				if !found {
					t.Errorf("no error names %s: %v", name, a.Errs)
				}
			}
		})
	}
}

func check[M proto.Message](t *testing.T, what string, got M, want string, empty M) {
	t.Helper()
	if want == "-" {
		if proto.Size(got) != 0 || got.ProtoReflect().IsValid() {
			t.Errorf("%s = %v, want none", what, got)
		}
		return
	}
	if err := prototext.Unmarshal([]byte(want), empty); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, empty) {
		t.Errorf("%s = %v, want %v", what, got, empty)
	}
}

// FuzzAnnotations: any annotation values are read without a panic, within
// bounds, and either ignored with an error or within range.
func FuzzAnnotations(f *testing.F) {
	f.Add("3", "500,502-504", "unavailable,4", "1s", "5", "503", "0.5", "250ms")
	f.Add("", "-", ",", "1e9h", "NaN", "99999", "1e-9", "-0")
	f.Fuzz(func(t *testing.T, limit, statuses, codes, timeout, abortPct, abortStatus, delayPct, delay string) {
		a := Annotations(map[string]string{
			AnnotationRetryLimit: limit, AnnotationRetryHTTPStatuses: statuses, AnnotationRetryGRPCCodes: codes,
			AnnotationRetryTimeout: timeout, AnnotationAbortPercent: abortPct, AnnotationAbortStatus: abortStatus,
			AnnotationDelayPercent: delayPct, AnnotationDelay: delay,
		})
		if r := a.Retry; r != nil {
			if r.MaxRetries > maxRetries || len(r.RetryOnStatus) > maxStatuses || len(r.RetryOnGrpc) > len(grpcCodes) {
				t.Fatalf("unbounded retry %v", r)
			}
			for _, c := range r.RetryOnGrpc {
				if c > 16 {
					t.Fatalf("gRPC code %d", c)
				}
			}
		}
		if f := a.Fault; f != nil {
			if f.AbortMillionths > 1_000_000 || f.DelayMillionths > 1_000_000 || (f.DelayMillionths > 0 && f.Delay == nil) {
				t.Fatalf("fault out of range %v", f)
			}
			if f.AbortMillionths > 0 && (f.AbortHttpStatus < 100 || f.AbortHttpStatus > 599) {
				t.Fatalf("abort status %d", f.AbortHttpStatus)
			}
		}
	})
}
