package gateway

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
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

// ParseServerName is ServerName's inverse, for names of clusterDomain
// only; anything else is an error naming why.
func ParseServerName(name, clusterDomain string) (Target, error) {
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
	// Service names are DNS-1035 labels (a letter first), namespaces
	// DNS-1123 ones, as Kubernetes has them.
	for _, e := range [][]string{validation.IsDNS1035Label(parts[1]), validation.IsDNS1123Label(parts[2])} {
		if len(e) > 0 {
			return Target{}, fmt.Errorf("%w: %q: %s", errBadName, name, strings.Join(e, "; "))
		}
	}
	return Target{Service: parts[1], Namespace: parts[2], Port: uint16(port)}, nil
}
