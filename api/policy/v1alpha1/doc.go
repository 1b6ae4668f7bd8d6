// Package v1alpha1 holds the Go types of the policy.trellis.io/v1alpha1
// API: Server, AuthorizationPolicy and RateLimit. It is a leaf package both
// the controller and the CLI may import. The CRDs in charts/trellis/crds,
// the deepcopy functions and the typed clients under api/policy/client
// are generated from these types by `make gen`: edit the types and their
// markers, never the generated files.
//
// +k8s:deepcopy-gen=package
// +groupName=policy.trellis.io
package v1alpha1
