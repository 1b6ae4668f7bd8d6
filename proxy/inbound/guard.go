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

	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/policy"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// Default inbound policies (Config.DefaultPolicy, --default-inbound-policy).
const (
	// PolicyAllUnauthenticated lets callers without mesh TLS reach the
	// app (plain HTTP, raw TCP, the app's own TLS): the default.
	PolicyAllUnauthenticated = policy.AllUnauthenticated
	// PolicyAllAuthenticated lets only mesh mTLS peers reach the app.
	PolicyAllAuthenticated = policy.AllAuthenticated
)

// refusal is why a caller may not reach what it asked for; its message is
// what the caller is told (trellis-error) and what the log says.
type refusal struct {
	reason string // metrics.Reason*
	msg    string
}

func (r *refusal) Error() string { return r.msg }

// RefusalReason is the metric label of the refusal.
func (r *refusal) RefusalReason() string { return r.reason }

// reasoned is a refusal of this guard or a policy.Denial.
type reasoned interface{ RefusalReason() string }

func reasonOf(err error) string {
	var r reasoned
	if errors.As(err, &r) {
		return r.RefusalReason()
	}
	return "other"
}

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
			"target port %d refused: it is one of this proxy's own listeners (inbound, outbound, admin or tap); the mesh reaches only the application", port)}
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

// errUnauthenticated is the default policy's refusal of a caller without
// mesh TLS under all-authenticated.
var errUnauthenticated error = policy.ErrUnauthenticated

// refused counts a refusal and logs it, at most once a minute per caller
// and reason: caller is the mesh identity, or the remote IP without one.
// An Authorizer's denial it logged itself is not logged twice.
func (p *Proxy) refused(c *pipeline.Conn, protocol string, err error) {
	reason := reasonOf(err)
	p.m.Refused(c.Peer, c.TLS, protocol, reason)
	if d, ok := errors.AsType[*policy.Denial](err); ok && d.Logged {
		return
	}
	caller, remote := c.Peer, ""
	if c.Raw != nil {
		remote = c.Raw.RemoteAddr().String()
	}
	if caller == "" {
		caller = "unauthenticated " + hostOf(remote)
	}
	p.refuseLog.Log(context.Background(), slog.LevelWarn, caller+"\x00"+reason+"\x00"+protocol,
		"inbound: refused", "caller", caller, "remote", remote, "protocol", protocol,
		"reason", reason, "detail", err.Error())
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// plainRefusal is why a caller without mesh TLS may not reach the app, or
// nil: the inbound policy first, then its original destination.
func (p *Proxy) plainRefusal(info *connInfo) error {
	c := policy.Caller{ClientIP: clientIP(info.raw), Port: forward.PortOf(info.target)}
	return p.callerRefusal(context.Background(), c, nil, info.targetErr)
}

// clientIP is the remote address of a connection (invalid: unknown).
func clientIP(c net.Conn) netip.Addr {
	if c == nil {
		return netip.Addr{}
	}
	switch a := c.RemoteAddr().(type) {
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	case nil:
		return netip.Addr{}
	}
	ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	return ap.Addr().Unmap()
}

// callerRefusal is why caller may not send r (nil: a stream that is not
// HTTP) to a target refused with targetErr, or nil: the Authorizer first,
// then the target.
func (p *Proxy) callerRefusal(ctx context.Context, caller policy.Caller, r *http.Request, targetErr error) error {
	az := p.authorizer
	if az == nil {
		// A Proxy not made by New: the configured default policy.
		az = policy.Default{Policy: p.cfg.DefaultPolicy}
	}
	if err := az.Authorize(ctx, caller, r); err != nil {
		return err
	}
	return targetErr
}

// refusedHTTP counts a refused request and returns its 403 (a gRPC call's
// PERMISSION_DENIED).
func (p *Proxy) refusedHTTP(x *pipeline.Exchange, err error) error {
	p.refused(&x.Conn, metrics.RefusedHTTP, err)
	return proxyerr.ForRequest(x.R, http.StatusForbidden, reasonOf(err), err.Error())
}

// wouldAllowPlain reports whether a caller without mesh TLS from c may
// reach port, asking the Authorizer without counting (policy.Checker)
// where it can; an Authorizer that cannot tell is asked nothing and the
// connection is detected (mesh TLS served, the rest decided in dispatch).
func (p *Proxy) wouldAllowPlain(c net.Conn, port uint16) bool {
	ck, ok := p.authorizer.(policy.Checker)
	return ok && ck.Check(context.Background(), policy.Caller{ClientIP: clientIP(c), Port: port}, nil)
}
