package tapapi

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The ConfigMap in which the kube-apiserver publishes its front-proxy
// (requestheader) settings for extension API servers.
const (
	authConfigMapNamespace = "kube-system"
	authConfigMapName      = "extension-apiserver-authentication"
)

// RequestHeader is the kube-apiserver's front-proxy configuration: which
// client certificates may assert a user through headers, and which headers.
type RequestHeader struct {
	// CAs verify the front proxy's client certificate (its own CA, not
	// the cluster's).
	CAs *x509.CertPool
	// AllowedNames, when not empty, are the common names the front
	// proxy's certificate may have.
	AllowedNames  []string
	UserHeaders   []string
	GroupHeaders  []string
	ExtraPrefixes []string
}

// User is who the front proxy says made the request.
type User struct {
	Name   string
	Groups []string
	Extra  map[string][]string
}

// errUnauthenticated: the request did not come from the front proxy, or
// named no user. Never more detail to the caller (the log has it).
var errUnauthenticated = errors.New("unauthenticated")

// Authenticate returns the user asserted by the request's headers when,
// and only when, the request came with a client certificate of the front
// proxy (verified here against rh.CAs, for client auth, with an allowed
// common name). Headers from any other client are never believed.
func (rh *RequestHeader) Authenticate(r *http.Request, now time.Time) (User, error) {
	if rh == nil || rh.CAs == nil {
		return User{}, fmt.Errorf("%w: no requestheader CA configured", errUnauthenticated)
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return User{}, fmt.Errorf("%w: no client certificate", errUnauthenticated)
	}
	leaf := r.TLS.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: rh.CAs, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return User{}, fmt.Errorf("%w: client certificate: %w", errUnauthenticated, err)
	}
	if len(rh.AllowedNames) > 0 && !slices.Contains(rh.AllowedNames, leaf.Subject.CommonName) {
		return User{}, fmt.Errorf("%w: client certificate %q is not an allowed front proxy name", errUnauthenticated, leaf.Subject.CommonName)
	}
	u := User{Name: firstHeader(r.Header, rh.UserHeaders)}
	if u.Name == "" {
		return User{}, fmt.Errorf("%w: no user header", errUnauthenticated)
	}
	for _, h := range rh.GroupHeaders {
		u.Groups = append(u.Groups, r.Header.Values(h)...)
	}
	u.Extra = extraHeaders(r.Header, rh.ExtraPrefixes)
	return u, nil
}

func firstHeader(h http.Header, names []string) string {
	for _, n := range names {
		if v := h.Get(n); v != "" {
			return v
		}
	}
	return ""
}

// extraHeaders: X-Remote-Extra-<key> headers, the key lower-cased and
// unescaped as the kube-apiserver escapes it.
func extraHeaders(h http.Header, prefixes []string) map[string][]string {
	var extra map[string][]string
	for name, vals := range h {
		for _, p := range prefixes {
			if len(name) <= len(p) || !strings.EqualFold(name[:len(p)], p) {
				continue
			}
			key, err := url.PathUnescape(strings.ToLower(name[len(p):]))
			if err != nil {
				continue
			}
			if extra == nil {
				extra = map[string][]string{}
			}
			extra[key] = append(extra[key], vals...)
		}
	}
	return extra
}

// ParseRequestHeader reads the settings from the ConfigMap's data.
func ParseRequestHeader(data map[string]string) (*RequestHeader, error) {
	caPEM := data["requestheader-client-ca-file"]
	if strings.TrimSpace(caPEM) == "" {
		return nil, fmt.Errorf("ConfigMap %s/%s has no requestheader-client-ca-file: the kube-apiserver runs without --requestheader-client-ca-file (the aggregation layer is off)", authConfigMapNamespace, authConfigMapName)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		return nil, fmt.Errorf("ConfigMap %s/%s: requestheader-client-ca-file holds no PEM certificate", authConfigMapNamespace, authConfigMapName)
	}
	rh := &RequestHeader{CAs: pool}
	for _, f := range []struct {
		key string
		dst *[]string
	}{
		{"requestheader-allowed-names", &rh.AllowedNames},
		{"requestheader-username-headers", &rh.UserHeaders},
		{"requestheader-group-headers", &rh.GroupHeaders},
		{"requestheader-extra-headers-prefix", &rh.ExtraPrefixes},
	} {
		v := data[f.key]
		if v == "" {
			continue
		}
		if err := json.Unmarshal([]byte(v), f.dst); err != nil {
			return nil, fmt.Errorf("ConfigMap %s/%s: %s: %w", authConfigMapNamespace, authConfigMapName, f.key, err)
		}
	}
	if len(rh.UserHeaders) == 0 {
		return nil, fmt.Errorf("ConfigMap %s/%s has no requestheader-username-headers", authConfigMapNamespace, authConfigMapName)
	}
	return rh, nil
}

// RequestHeaderSource reads the ConfigMap, again at most every Refresh,
// so a rotated front-proxy CA is picked up without a restart.
type RequestHeaderSource struct {
	Client  kubernetes.Interface
	Refresh time.Duration

	mu      sync.Mutex
	current *RequestHeader
	at      time.Time
}

// Get returns the current settings; a failed refresh keeps the last good
// ones and is returned only when there are none.
func (s *RequestHeaderSource) Get(ctx context.Context) (*RequestHeader, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != nil && time.Since(s.at) < s.Refresh {
		return s.current, nil
	}
	cm, err := s.Client.CoreV1().ConfigMaps(authConfigMapNamespace).Get(ctx, authConfigMapName, metav1.GetOptions{})
	if err == nil {
		var rh *RequestHeader
		if rh, err = ParseRequestHeader(cm.Data); err == nil {
			s.current, s.at = rh, time.Now()
			return rh, nil
		}
	}
	if s.current != nil {
		return s.current, nil
	}
	return nil, fmt.Errorf("front-proxy settings: %w", err)
}
