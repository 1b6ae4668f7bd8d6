package outbound

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/meshh2"
	"github.com/trellis-mesh/trellis/proxy/metrics"
)

// maxRetries bounds retries of requests that never left the proxy.
const maxRetries = 2

// route is where a request or stream goes.
type route struct {
	dst  string            // dst_service label
	bal  *balance.Balancer // nil: passthrough to addr in plain text
	addr string
}

// failure is a response the proxy gives itself.
type failure struct {
	status int
	reason string // trellis_request_errors_total reason
	msg    string
}

func (p *Proxy) idString(id identity.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}

// authority returns host:port of a request, adding the scheme's default port.
func requestAuthority(r *http.Request, defPort string) string {
	host := r.Host
	if r.URL != nil && r.URL.IsAbs() && r.URL.Host != "" {
		host = r.URL.Host
	}
	if host == "" {
		return ""
	}
	if hasPort(host) {
		return host
	}
	return host + ":" + defPort
}

func hasPort(host string) bool {
	i := strings.LastIndexByte(host, ':')
	return i >= 0 && i > strings.LastIndexByte(host, ']')
}

func (p *Proxy) resolve(ctx context.Context, authority string, info *connInfo) (route, *failure) {
	if p.cfg.Mode == ModeExplicit {
		d, err := p.cfg.Resolve(ctx, authority)
		if err != nil {
			return route{}, &failure{http.StatusServiceUnavailable, metrics.ReasonNoEndpoints, "resolving " + authority + ": " + err.Error()}
		}
		if !d.Exists {
			return route{}, &failure{http.StatusBadGateway, metrics.ReasonUnknownService, "unknown service " + authority}
		}
		return route{dst: authority, bal: d.Balancer}, nil
	}
	// Transparent: the Host when it names a known service, else the
	// original destination, else straight through to it.
	if authority != "" {
		if d, err := p.cfg.Resolve(ctx, authority); err == nil && d.Exists {
			return route{dst: authority, bal: d.Balancer}, nil
		}
	}
	return p.resolveOrig(ctx, info)
}

func (p *Proxy) resolveOrig(ctx context.Context, info *connInfo) (route, *failure) {
	orig := info.orig.String()
	d, err := p.cfg.Resolve(ctx, orig)
	if err != nil {
		return route{}, &failure{http.StatusServiceUnavailable, metrics.ReasonNoEndpoints, "resolving " + orig + ": " + err.Error()}
	}
	if !d.Exists {
		return route{dst: orig, addr: orig}, nil
	}
	return route{dst: orig, bal: d.Balancer}, nil
}

func writeFailure(w http.ResponseWriter, f *failure) {
	h := w.Header()
	h["Trellis-Error"] = []string{f.msg}
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["Content-Length"] = []string{strconv.Itoa(len(f.msg) + 1)}
	w.WriteHeader(f.status)
	_, _ = io.WriteString(w, f.msg+"\n")
}

// answer records and writes a response the proxy gives itself.
func (p *Proxy) answer(w http.ResponseWriter, key metrics.Key, f *failure, start time.Time) {
	hm := p.m.HTTP(key)
	hm.Requests.Inc()
	if f.reason != "" {
		hm.RequestError(f.reason)
	}
	writeFailure(w, f)
	hm.Response(f.status, "", false)
	hm.Latency.Observe(time.Since(start).Seconds())
}

// ServeHTTP routes one request from the app.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	info, _ := r.Context().Value(connInfoKey{}).(*connInfo)
	if info == nil {
		info = &connInfo{}
	}
	defPort := "80"
	if p.cfg.Mode == ModeTransparent && info.orig.IsValid() {
		defPort = strconv.Itoa(int(info.orig.Port()))
	}
	authority := requestAuthority(r, defPort)
	if r.Method == http.MethodConnect {
		p.serveConnect(w, r, authority, info, start)
		return
	}
	if authority == "" && p.cfg.Mode == ModeExplicit {
		p.answer(w, metrics.Key{Direction: metrics.Outbound}, &failure{http.StatusBadRequest, metrics.ReasonBadRequest, "request has no Host or :authority"}, start)
		return
	}
	rt, f := p.resolve(r.Context(), authority, info)
	if f != nil {
		p.answer(w, metrics.Key{Direction: metrics.Outbound, DstService: authority}, f, start)
		return
	}
	if r.ProtoMajor == 1 && forward.IsUpgrade(r.Header) {
		p.serveUpgrade(w, r, rt, info, start)
		return
	}
	p.forwardHTTP(w, r, rt, authority, start)
}

func (p *Proxy) forwardHTTP(w http.ResponseWriter, r *http.Request, rt route, authority string, start time.Time) {
	ctx := r.Context()
	if p.cfg.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.cfg.RequestTimeout)
		defer cancel()
	}
	h1 := r.ProtoMajor == 1
	hdr := r.Header
	forward.RemoveHopByHop(hdr)
	forward.StripMesh(hdr)
	if h1 {
		forward.SetOrigProto(hdr, r.ProtoMinor)
	}
	if r.ContentLength == 0 {
		// Lets the HTTP/2 client end the stream with the headers.
		r.Body = http.NoBody
	}
	if authority == "" {
		authority = rt.dst
	}
	// A request the peer proves it did not process may be sent again, to
	// another endpoint, if its body can be: none, or a small one of known
	// length kept here. Bodies of unknown length (streams, gRPC) and those
	// the app sends only after 100 Continue are never held back.
	body, replayable, berr := replayableBody(r)
	if berr != nil {
		// The client went away while sending its body.
		hm := p.m.HTTP(metrics.Key{Direction: metrics.Outbound, DstService: rt.dst})
		hm.Requests.Inc()
		hm.Response(0, "", true)
		hm.Latency.Observe(time.Since(start).Seconds())
		return
	}

	var skip map[string]bool
	for attempt := 0; ; attempt++ {
		var ep balance.Endpoint
		var pick *balance.Pick
		if rt.bal != nil {
			var err error
			pick, err = rt.bal.Pick(skip)
			if err != nil {
				f := &failure{http.StatusServiceUnavailable, metrics.ReasonNoEndpoints, "no endpoints for " + rt.dst}
				if attempt > 0 {
					f = &failure{http.StatusBadGateway, metrics.ReasonConnectError, "no reachable endpoint for " + rt.dst}
				}
				p.answer(w, metrics.Key{Direction: metrics.Outbound, DstService: rt.dst}, f, start)
				return
			}
			ep = pick.Endpoint
		} else {
			ep = balance.Endpoint{Addr: rt.addr}
		}
		meshed := !ep.Identity.IsZero()
		key := metrics.Key{Direction: metrics.Outbound, DstService: rt.dst, PeerIdentity: p.idString(ep.Identity), TLS: meshed}

		var roundTrip func(*http.Request) (*http.Response, error)
		scheme := "http"
		urlHost := authority
		if meshed || !h1 {
			cc, err := p.pool.get(ctx, poolKey{addr: ep.Addr, id: ep.Identity})
			if err != nil {
				if pick != nil {
					pick.Done(0, true)
				}
				if p.retry(ctx, rt, attempt, err, key) {
					if skip == nil {
						skip = make(map[string]bool, 2)
					}
					skip[ep.Addr] = true
					continue
				}
				p.answer(w, key, p.errFailure(ctx, err, ep.Addr), start)
				return
			}
			roundTrip = cc.RoundTrip
			if meshed {
				scheme = "https"
			}
		} else {
			roundTrip = p.h1.RoundTrip
			urlHost = ep.Addr
		}
		delete(hdr, forward.HeaderTargetPort)
		forward.SetTargetPort(hdr, ep.TargetPort)
		delete(hdr, forward.HeaderExpect)
		if meshed {
			forward.CarryExpect(hdr)
		}

		out := r.WithContext(ctx)
		if body != nil {
			out.Body = io.NopCloser(bytes.NewReader(body))
		}
		u := new(url.URL)
		*u = *r.URL
		u.Scheme, u.Host = scheme, urlHost
		out.URL = u
		out.RequestURI = ""
		out.Close = false
		out, gotHead := gateContinue(out)
		t0 := time.Now()
		resp, err := roundTrip(out)
		gotHead()
		if err != nil {
			if pick != nil {
				pick.Done(time.Since(t0), true)
			}
			retry := !meshed && h1 && isDialError(err) && p.retry(ctx, rt, attempt, err, key)
			if !retry && replayable && isUnprocessed(err) {
				retry = p.retryUnprocessed(ctx, rt, attempt, err.Error(), key)
			}
			if retry {
				if skip == nil {
					skip = make(map[string]bool, 2)
				}
				skip[ep.Addr] = true
				continue
			}
			if reason, ok := forward.RequestBodyFault(err); ok {
				// The client's body was malformed: the stream to the peer
				// is reset; the client is at fault.
				p.m.ProtocolError(metrics.Outbound, metrics.SideClient, reason)
				p.answer(w, key, &failure{http.StatusBadRequest, metrics.ReasonBadRequest, "request body: " + err.Error()}, start)
				return
			}
			if r.Context().Err() != nil {
				// The client went away: nobody to answer.
				hm := p.m.HTTP(key)
				hm.Requests.Inc()
				hm.Response(0, "", true)
				hm.Latency.Observe(time.Since(start).Seconds())
				return
			}
			p.answer(w, key, p.errFailure(ctx, err, ep.Addr), start)
			return
		}
		if pick != nil {
			pick.Done(time.Since(t0), resp.StatusCode >= 500)
		}
		if meshed {
			if _, ok := resp.Header[forward.HeaderUnprocessed]; ok {
				// The peer's proxy answered without its app seeing the
				// request: send it elsewhere if it can be sent again.
				if replayable && p.retryUnprocessed(ctx, rt, attempt, resp.Header.Get(forward.HeaderError), key) {
					_ = resp.Body.Close()
					if skip == nil {
						skip = make(map[string]bool, 2)
					}
					skip[ep.Addr] = true
					continue
				}
				delete(resp.Header, forward.HeaderUnprocessed)
			}
		}
		hm := p.m.HTTP(key)
		hm.Requests.Inc()
		p.writeResponse(w, resp, hm, start)
		return
	}
}

// writeResponse copies the response and records its metrics. A response that
// breaks mid-body aborts the downstream stream so the client sees the error.
func (p *Proxy) writeResponse(w http.ResponseWriter, resp *http.Response, hm *metrics.HTTP, start time.Time) {
	_, err := forward.WriteResponse(w, resp)
	_ = resp.Body.Close()
	hm.Response(resp.StatusCode, grpcStatus(resp), err != nil)
	hm.Latency.Observe(time.Since(start).Seconds())
	if err != nil {
		panic(http.ErrAbortHandler)
	}
}

func grpcStatus(resp *http.Response) string {
	ct := resp.Header["Content-Type"]
	if len(ct) == 0 || !forward.IsGRPC(ct[0]) {
		return ""
	}
	if v := resp.Trailer["Grpc-Status"]; len(v) > 0 {
		return v[0]
	}
	if v := resp.Header["Grpc-Status"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (p *Proxy) retry(ctx context.Context, rt route, attempt int, err error, key metrics.Key) bool {
	if rt.bal == nil || attempt >= maxRetries || ctx.Err() != nil {
		return false
	}
	if !errors.Is(err, errConnect) && !isDialError(err) {
		return false
	}
	p.m.HTTP(key).Retry(metrics.ReasonConnectError)
	p.log.Debug("outbound: retrying on another endpoint", "dst", rt.dst, "err", err)
	return true
}

// retryUnprocessed decides whether a request the peer did not process is
// sent to another endpoint, and counts it.
func (p *Proxy) retryUnprocessed(ctx context.Context, rt route, attempt int, why string, key metrics.Key) bool {
	if rt.bal == nil || attempt >= maxRetries || ctx.Err() != nil {
		return false
	}
	p.m.HTTP(key).Retry(metrics.ReasonUnprocessed)
	p.log.Debug("outbound: peer did not process the request, retrying on another endpoint", "dst", rt.dst, "why", why)
	return true
}

// maxReplayBody bounds the request body kept for a retry.
const maxReplayBody = 64 << 10

// replayableBody reads a small request body of known length so that it
// can be sent more than once. It returns the body (nil: use r.Body as it
// is) and whether the request can be sent again at all.
func replayableBody(r *http.Request) ([]byte, bool, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, true, nil
	}
	if r.ContentLength <= 0 || r.ContentLength > maxReplayBody || len(r.Trailer) > 0 {
		return nil, false, nil
	}
	if _, ok := r.Header["Expect"]; ok {
		// Reading the body here would send 100 Continue on the app's
		// behalf, before the server decided.
		return nil, false, nil
	}
	b := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(r.Body, b); err != nil {
		return nil, false, fmt.Errorf("reading request body: %w", err)
	}
	return b, true, nil
}

// isUnprocessed reports whether a round trip failed in a way that proves
// the peer never processed the request (RFC 9113 8.7): a stream refused
// with REFUSED_STREAM, a stream above the last stream ID of the peer's
// GOAWAY, or a connection that became unusable before the request went
// out.
func isUnprocessed(err error) bool {
	if errors.Is(err, meshh2.ErrUnprocessed) {
		return true
	}
	var se http2.StreamError
	if errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream {
		return true
	}
	// x/net does not export these errors (its Transport retries them
	// itself, but the pool drives ClientConns directly): match their text.
	switch err.Error() {
	case xnetGotGoAway, xnetConnUnusable:
		return true
	}
	return false
}

const (
	xnetGotGoAway    = "http2: Transport received Server's graceful shutdown GOAWAY"
	xnetConnUnusable = "http2: client conn not usable"
)

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func (p *Proxy) errFailure(ctx context.Context, err error, addr string) *failure {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return &failure{http.StatusGatewayTimeout, metrics.ReasonTimeout, "request timed out"}
	}
	if errors.Is(err, errConnect) || isDialError(err) {
		return &failure{http.StatusBadGateway, metrics.ReasonConnectError, err.Error()}
	}
	return &failure{http.StatusBadGateway, "", "upstream " + addr + ": " + err.Error()}
}
