// Package route is the outbound route stage: it names the destination of
// a request (its authority, or in transparent mode its original
// destination), looks it up in the route Table (HTTP routes from the
// control plane; none by default), and resolves it to a service whose
// endpoints the upstream stage balances over, or to an address dialled
// as it is.
package route

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// Table looks a request's routes up: the authority it goes to instead of
// the one it names (a route's backend), or ok false to keep it.
type Table interface {
	Route(r *http.Request, authority string) (dst string, ok bool)
}

// None is the table without routes: every request goes where it names.
type None struct{}

// Route keeps the request's authority.
func (None) Route(*http.Request, string) (string, bool) { return "", false }

// Resolve looks an authority ("name.ns:port" or "ip:port") up in the
// control plane: known is false when the control plane does not know it.
type Resolve func(ctx context.Context, authority string) (known bool, bal *balance.Balancer, err error)

// Stage is the route stage.
type Stage struct {
	// Transparent: the request's Host when it names a known service, else
	// its connection's original destination, passed through when unknown.
	Transparent bool
	Resolve     Resolve
	Table       Table // nil: None
}

// Authority returns host:port of r, adding the port a request without one
// means: 80, or in transparent mode the original destination's.
func (s *Stage) Authority(r *http.Request, c *pipeline.Conn) string {
	host := r.Host
	if r.URL != nil && r.URL.IsAbs() && r.URL.Host != "" {
		host = r.URL.Host
	}
	if host == "" {
		return ""
	}
	if HasPort(host) {
		return host
	}
	if s.Transparent && c.Orig.IsValid() {
		return host + ":" + strconv.Itoa(int(c.Orig.Port()))
	}
	return host + ":80"
}

// HasPort reports whether host ends in a port.
func HasPort(host string) bool {
	i := strings.LastIndexByte(host, ':')
	return i >= 0 && i > strings.LastIndexByte(host, ']')
}

// Layer returns the stage as a pipeline layer: it sets x.Authority, Dst,
// Balancer or Addr, and the dst_service label.
func (s *Stage) Layer(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
		if x.Authority == "" {
			x.Authority = s.Authority(x.R, &x.Conn)
		}
		if x.Authority == "" && !s.Transparent {
			return proxyerr.New(http.StatusBadRequest, metrics.ReasonBadRequest, "request has no Host or :authority")
		}
		if err := s.Lookup(x); err != nil {
			x.Key.DstService, x.LogVal = x.Authority, x.Authority
			return err
		}
		x.Key.DstService, x.LogVal = x.Dest.Dst, x.Dest.Dst
		return next.Serve(x)
	})
}

// Lookup resolves x.Authority (through the table) into x.Dest: a known
// service, or in transparent mode the original destination.
func (s *Stage) Lookup(x *pipeline.Exchange) *proxyerr.Error {
	authority := x.Authority
	if s.Table != nil && authority != "" {
		if dst, ok := s.Table.Route(x.R, authority); ok {
			authority = dst
		}
	}
	ctx := x.R.Context()
	if !s.Transparent {
		known, bal, err := s.Resolve(ctx, authority)
		if err != nil {
			return proxyerr.New(http.StatusServiceUnavailable, metrics.ReasonNoEndpoints, "resolving "+authority+": "+err.Error())
		}
		if !known {
			return proxyerr.New(http.StatusBadGateway, metrics.ReasonUnknownService, "unknown service "+authority)
		}
		x.Dest = pipeline.Dest{Dst: authority, Balancer: bal}
		return nil
	}
	// Transparent: the Host when it names a known service, else the
	// original destination, else straight through to it.
	if authority != "" {
		if known, bal, err := s.Resolve(ctx, authority); err == nil && known {
			x.Dest = pipeline.Dest{Dst: authority, Balancer: bal}
			return nil
		}
	}
	var err *proxyerr.Error
	x.Dest, err = s.Orig(ctx, x.Conn.Orig.String())
	return err
}

// Orig resolves a transparent connection's original destination orig: a
// known service, else orig itself, passed through.
func (s *Stage) Orig(ctx context.Context, orig string) (pipeline.Dest, *proxyerr.Error) {
	known, bal, err := s.Resolve(ctx, orig)
	if err != nil {
		return pipeline.Dest{}, proxyerr.New(http.StatusServiceUnavailable, metrics.ReasonNoEndpoints, "resolving "+orig+": "+err.Error())
	}
	if !known {
		return pipeline.Dest{Dst: orig, Addr: orig}, nil
	}
	return pipeline.Dest{Dst: orig, Balancer: bal}, nil
}
