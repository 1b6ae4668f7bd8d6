package check

import (
	"context"
	"encoding/json"
)

// TapAPIService is the APIService of the tap API (issue 14).
const TapAPIService = "v1alpha1.tap.trellis.io"

// apiServiceStatus is the part of an APIService the check reads (the
// product does not depend on k8s.io/kube-aggregator).
type apiServiceStatus struct {
	Status struct {
		Conditions []struct {
			Type    string `json:"type"`
			Status  string `json:"status"`
			Reason  string `json:"reason"`
			Message string `json:"message"`
		} `json:"conditions"`
	} `json:"status"`
}

// TapAPICheck: the kube-apiserver reaches the controller's tap API
// (`trellis tap`, the dashboard's live view).
var TapAPICheck = Check{
	Group: "control plane", Name: "tap API is available", Anchor: "tap-api",
	Run: func(ctx context.Context, e *Env) Outcome {
		rc := e.Kube.Discovery().RESTClient()
		if rc == nil {
			return fail("check the kubeconfig", "cannot read APIService %s: no REST client", TapAPIService)
		}
		raw, err := rc.Get().AbsPath("/apis/apiregistration.k8s.io/v1/apiservices/" + TapAPIService).DoRaw(ctx)
		if err != nil {
			return fail("re-apply the control plane: trellis install | kubectl apply --server-side -f -", "APIService %s: %v", TapAPIService, err)
		}
		var as apiServiceStatus
		if err := json.Unmarshal(raw, &as); err != nil {
			return fail("re-apply the control plane: trellis install | kubectl apply --server-side -f -", "APIService %s: %v", TapAPIService, err)
		}
		for _, c := range as.Status.Conditions {
			if c.Type != "Available" {
				continue
			}
			if c.Status == "True" {
				return ok("APIService %s is Available", TapAPIService)
			}
			return fail("see docs/check.md#tap-api: the API server needs the aggregation-layer flags and must reach the controller's tap-api port",
				"APIService %s is not Available: %s: %s", TapAPIService, c.Reason, c.Message)
		}
		return fail("wait for the controller to be ready", "APIService %s has no Available condition yet", TapAPIService)
	},
}
