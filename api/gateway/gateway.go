// Package gateway pins the Gateway API module (sigs.k8s.io/gateway-api,
// version in go.mod) that the routes work builds on: its Go types, typed
// clientset and CRDs come from that module, never copied into this one.
// Importing it here keeps the pin in go.mod until the first real user.
package gateway

import (
	"k8s.io/apimachinery/pkg/runtime"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// GroupVersion is the Gateway API group and version Trellis reads.
var GroupVersion = gwv1.GroupVersion

// AddToScheme adds the Gateway API v1 types to a scheme.
func AddToScheme(s *runtime.Scheme) error { return gwv1.Install(s) }
