// Package k8se2e holds Trellis's end-to-end suites on a real Kubernetes
// cluster (test/cluster): install and check, injection of the demo
// application with mTLS proven by the proxies' metrics, a Job with a native
// sidecar, a rolling restart and a control-plane outage under load, and
// authorization policy enforced (the policy-* suites, sharing one install).
//
// The suites run only with TRELLIS_E2E_K8S=1 (otherwise they skip), so
// `go test ./...` never needs a cluster. See README.md, or run one suite
// with `make e2e SUITE=install`.
package k8se2e
