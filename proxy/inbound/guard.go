package inbound

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/proxy/metrics"
)

// Default inbound policies (Config.DefaultPolicy, --default-inbound-policy).
const (
	// PolicyAllUnauthenticated lets callers without mesh TLS reach the
	// app (plain HTTP, raw TCP, the app's own TLS): the default.
	PolicyAllUnauthenticated = "all-unauthenticated"
	// PolicyAllAuthenticated lets only mesh mTLS peers reach the app.
	PolicyAllAuthenticated = "all-authenticated"
)

// refusal is why a caller may not reach what it asked for; its message is
// what the caller is told (trellis-error) and what the log says.
type refusal struct {
	reason string // metrics.Reason*
	msg    string
}

func (r *refusal) Error() string { return r.msg }

// appTargets decides the app address of a port named by a mesh peer
// (trellis-target-port, the opaque transport header) or by the original
// destination: only the application, never the proxy's own listeners.
type appTargets struct {
	transparent bool
	// host is dialled with the port: the pod IP (or 127.0.0.1) in
	// transparent mode, --app-addr's host in explicit mode.
	host    string
	appAddr string
	// appPorts are the ports explicit mode may name: --app-addr's and
	// --app-ports.
	appPorts map[uint16]bool
	own      func() []uint16
	addrs    sync.Map // uint16 -> host:port
}

func newAppTargets(cfg Config) (*appTargets, error) {
	t := &appTargets{transparent: cfg.Transparent, appAddr: cfg.AppAddr, own: cfg.OwnPorts}
	if t.own == nil {
		t.own = func() []uint16 { return nil }
	}
	if cfg.Transparent {
		t.host = "127.0.0.1"
		if cfg.AppIP != "" {
			ip, err := netip.ParseAddr(cfg.AppIP)
			if err != nil {
				return nil, fmt.Errorf("inbound: app IP: %w", err)
			}
			t.host = ip.Unmap().String()
		}
		return t, nil
	}
	host, port, err := net.SplitHostPort(cfg.AppAddr)
	if err != nil {
		return nil, fmt.Errorf("inbound: app address %q: %w", cfg.AppAddr, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return nil, fmt.Errorf("inbound: app address %q: invalid port", cfg.AppAddr)
	}
	t.host = host
	t.appPorts = map[uint16]bool{uint16(n): true}
	for _, p := range cfg.AppPorts {
		t.appPorts[p] = true
	}
	return t, nil
}

// forPort returns the address to dial for port, or a *refusal.
func (t *appTargets) forPort(port uint16) (string, error) {
	if slices.Contains(t.own(), port) {
		return "", &refusal{reason: metrics.ReasonForbiddenPort, msg: fmt.Sprintf(
			"target port %d refused: it is one of this proxy's own listeners (inbound, outbound or admin); the mesh reaches only the application", port)}
	}
	if !t.transparent && !t.appPorts[port] {
		return "", &refusal{reason: metrics.ReasonForbiddenPort, msg: fmt.Sprintf(
			"target port %d refused: not the application's port (explicit mode forwards only to --app-addr %s and --app-ports)", port, t.appAddr)}
	}
	if v, ok := t.addrs.Load(port); ok {
		return v.(string), nil
	}
	s := net.JoinHostPort(t.host, strconv.Itoa(int(port)))
	t.addrs.Store(port, s)
	return s, nil
}

var errUnauthenticated = &refusal{reason: metrics.ReasonUnauthenticated,
	msg: "mesh mTLS required: this proxy's default inbound policy is all-authenticated, and the caller has no mesh identity"}

// refused counts a refusal and logs it, at most once a minute per caller
// and reason: caller is the mesh identity, or the remote IP without one.
func (p *Proxy) refused(info *connInfo, protocol string, err error) {
	var r *refusal
	if !errors.As(err, &r) {
		r = &refusal{reason: "other", msg: err.Error()}
	}
	p.m.Refused(info.peer, info.tls, protocol, r.reason)
	caller, remote := info.peer, ""
	if info.raw != nil {
		remote = info.raw.RemoteAddr().String()
	}
	if caller == "" {
		caller = "unauthenticated " + hostOf(remote)
	}
	p.refuseLog.Log(context.Background(), slog.LevelWarn, caller+"\x00"+r.reason+"\x00"+protocol,
		"inbound: refused", "caller", caller, "remote", remote, "protocol", protocol,
		"reason", r.reason, "detail", r.msg)
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// plainRefusal is why a caller without mesh TLS may not reach the app, or
// nil: the default inbound policy first, then its original destination.
func (p *Proxy) plainRefusal(info *connInfo) error {
	if p.requireMTLS() {
		return errUnauthenticated
	}
	return info.targetErr
}

// refusedHTTP answers a refused request with 403 and trellis-error.
func (p *Proxy) refusedHTTP(w http.ResponseWriter, hm *metrics.HTTP, info *connInfo, err error, start time.Time) {
	p.refused(info, metrics.RefusedHTTP, err)
	reason := "other"
	var r *refusal
	if errors.As(err, &r) {
		reason = r.reason
	}
	p.fail(w, hm, http.StatusForbidden, reason, err.Error(), start)
}

// requireMTLS reports whether callers without mesh TLS are refused.
func (p *Proxy) requireMTLS() bool { return p.cfg.DefaultPolicy == PolicyAllAuthenticated }
