// Package routingname is the TLS server name a mesh client sends through a
// multicluster gateway: <port>.<service>.<namespace>.svc.<cluster domain>.
// The gateway routes on it without terminating TLS; the server proxy
// behind it takes it for mesh TLS; the controller writes it into mirror
// endpoints. No Kubernetes library: the proxy imports it.
package routingname

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/trellis-mesh/trellis/internal/identity"
)

// Target is a service port of the gateway's cluster: what a routing name
// names.
type Target struct {
	Service, Namespace string
	Port               uint16
}

// Authority is the target's name.ns.svc.<clusterDomain>:port, as the
// Destination service resolves it.
func (t Target) Authority(clusterDomain string) string {
	return t.Service + "." + t.Namespace + ".svc." + clusterDomain + ":" + strconv.Itoa(int(t.Port))
}

// ServerName is the routing name a client sends as its TLS server name:
// <port>.<service>.<namespace>.svc.<clusterDomain>, a DNS name.
func (t Target) ServerName(clusterDomain string) string {
	return strconv.Itoa(int(t.Port)) + "." + t.Service + "." + t.Namespace + ".svc." + clusterDomain
}

var errBadName = errors.New("not a routing name")

// Parse is ServerName's inverse, for names of clusterDomain
// only; anything else is an error naming why.
func Parse(name, clusterDomain string) (Target, error) {
	suffix := ".svc." + strings.ToLower(clusterDomain)
	rest, ok := strings.CutSuffix(strings.ToLower(name), suffix)
	if !ok || len(name) > 253 {
		return Target{}, fmt.Errorf("%w: %q is not <port>.<service>.<namespace>%s", errBadName, name, suffix)
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return Target{}, fmt.Errorf("%w: %q is not <port>.<service>.<namespace>%s", errBadName, name, suffix)
	}
	port, err := strconv.ParseUint(parts[0], 10, 16)
	if err != nil || port == 0 || parts[0][0] == '0' {
		return Target{}, fmt.Errorf("%w: %q: port %q", errBadName, name, parts[0])
	}
	// The whole name as DNS labels (lower case, at most 63 each), and a
	// service name starts with a letter, as Kubernetes has it. The
	// proxy's own check: no Kubernetes library in the proxy's binary.
	if err := identity.ValidateTrustDomain(strings.ToLower(name)); err != nil || parts[1][0] < 'a' || parts[1][0] > 'z' {
		return Target{}, fmt.Errorf("%w: %q: not DNS labels with a service name first (%v)", errBadName, name, err)
	}
	return Target{Service: parts[1], Namespace: parts[2], Port: uint16(port)}, nil
}
