// Package v1alpha1 holds the Go types of the workload.trellis.io/v1alpha1
// API: ExternalWorkload, a workload outside Kubernetes (a VM, a bare-metal
// host) that joins the mesh with its own identity. It is a leaf package
// both the controller and the CLI may import. The CRD in charts/trellis/crds,
// the deepcopy functions and the typed clients under api/workload/client
// are generated from these types by `make gen`: edit the types and their
// markers, never the generated files.
//
// +k8s:deepcopy-gen=package
// +groupName=workload.trellis.io
package v1alpha1
