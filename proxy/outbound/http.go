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
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// maxRetries bounds retries of requests that never left the proxy.
const maxRetries = 2

// route is where a request or stream goes.
type route struct {
	dst  string            // dst_service label
	bal  *balance.Balancer // nil: passthrough to addr in plain text
	addr string
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

func (p *Proxy) resolve(ctx context.Context, authority string, info *connInfo) (route, *proxyerr.Error) {
	if p.cfg.Mode == ModeExplicit {
		d, err := p.cfg.Resolve(ctx, authority)
		if err != nil {
			return route{}, proxyerr.New(http.StatusServiceUnavailable, metrics.ReasonNoEndpoints, "resolving "+authority+": "+err.Error())
		}
		if !d.Exists {
			return route{}, proxyerr.New(http.StatusBadGateway, metrics.ReasonUnknownService, "unknown service "+authority)
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

func (p *Proxy) resolveOrig(ctx context.Context, info *connInfo) (route, *proxyerr.Error) {
	orig := info.orig.String()
	d, err := p.cfg.Resolve(ctx, orig)
	if err != nil {
		return route{}, proxyerr.New(http.StatusServiceUnavailable, metrics.ReasonNoEndpoints, "resolving "+orig+": "+err.Error())
	}
	if !d.Exists {
		return route{dst: orig, addr: orig}, nil
	}
	return route{dst: orig, bal: d.Balancer}, nil
}

// answer records and writes a response the proxy gives itself.
func (p *Proxy) answer(w http.ResponseWriter, key metrics.Key, f *proxyerr.Error, start time.Time) {
	hm := p.m.HTTP(key)
	hm.Requests.Inc()
	p.errs.Answer(context.Background(), w, hm, f, start, "dst", key.DstService)
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
		p.answer(w, metrics.Key{Direction: metrics.Outbound}, proxyerr.New(http.StatusBadRequest, metrics.ReasonBadRequest, "request has no Host or :authority"), start)
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
	forward.KeepRequestAbsent(hdr)
	if r.ContentLength == 0 {
		// Lets the HTTP/2 client end the stream with the headers.
		r.Body = http.NoBody
	}
	// Whoever reads the body, its read errors are the client's fault. Only
	// the outgoing request gets the wrapper: net/http decides from the type
	// of its own request's body how to finish the exchange.
	var cb *proxyerr.Body
	if r.Body != nil && r.Body != http.NoBody {
		cb = proxyerr.ClientBody(r.Body)
	}
	if authority == "" {
		authority = rt.dst
	}
	if f := proxyerr.HeaderListTooLarge(r); f != nil {
		p.answer(w, metrics.Key{Direction: metrics.Outbound, DstService: rt.dst}, f, start)
		return
	}
	// A request the peer proves it did not process may be sent again, to
	// another endpoint, if its body can be: none, or a small one of known
	// length kept here. Bodies of unknown length (streams, gRPC) and those
	// the app sends only after 100 Continue are never held back.
	body, replayable, berr := replayableBody(r, cb)
	if berr != nil {
		hm := p.m.HTTP(metrics.Key{Direction: metrics.Outbound, DstService: rt.dst})
		hm.Requests.Inc()
		if _, cancelled := proxyerr.Cause(r.Context(), cb, berr); cancelled {
			// The client went away while sending its body.
			hm.Cancelled(0)
			return
		}
		p.errs.Answer(ctx, w, hm, proxyerr.Classify(ctx, berr, proxyerr.ToPeer, rt.dst), start, "dst", rt.dst)
		return
	}

	var skip map[string]bool
	var last *proxyerr.Error // why the last endpoint tried was skipped
	for attempt := 0; ; attempt++ {
		var ep balance.Endpoint
		var pick *balance.Pick
		if rt.bal != nil {
			var err error
			pick, err = rt.bal.Pick(skip)
			if err != nil {
				f := proxyerr.New(http.StatusServiceUnavailable, metrics.ReasonNoEndpoints, "no endpoints for "+rt.dst)
				if attempt > 0 {
					f = proxyerr.GaveUp(rt.dst, last)
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
		appH1, f := toApp(hdr, h1, meshed, ep)
		if f != nil {
			if pick != nil {
				pick.Done(0, false)
			}
			p.answer(w, key, f, start)
			return
		}

		var roundTrip func(*http.Request) (*http.Response, error)
		scheme := "http"
		urlHost := authority
		if meshed || !appH1 {
			cc, err := p.pool.get(ctx, poolKey{addr: ep.Addr, id: ep.Identity})
			if err != nil {
				if pick != nil {
					pick.Done(0, true)
				}
				if p.retry(ctx, rt, attempt, err, key) {
					last = proxyerr.Classify(ctx, err, proxyerr.ToPeer, ep.Addr)
					if skip == nil {
						skip = make(map[string]bool, 2)
					}
					skip[ep.Addr] = true
					continue
				}
				p.answer(w, key, proxyerr.Classify(ctx, err, proxyerr.ToPeer, ep.Addr), start)
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
		setMeshHeaders(hdr, meshed, h1, r.ProtoMinor, ep)
		delete(hdr, forward.HeaderExpect)
		if meshed {
			forward.CarryExpect(hdr)
		}

		out := r.WithContext(ctx)
		if body != nil {
			out.Body = io.NopCloser(bytes.NewReader(body))
		} else if cb != nil {
			out.Body = cb
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
				last = proxyerr.Classify(ctx, err, proxyerr.ToPeer, ep.Addr)
				if skip == nil {
					skip = make(map[string]bool, 2)
				}
				skip[ep.Addr] = true
				continue
			}
			if reason, ok := forward.RequestBodyFault(err); ok {
				// The client's body was malformed: the stream to the peer
				// is reset; the client is at fault (Classify: 400).
				p.m.HTTP1Error(metrics.Outbound, metrics.SideClient, reason)
			}
			var cancelled bool
			if err, cancelled = proxyerr.Cause(r.Context(), cb, err); cancelled {
				// The client went away: nobody to answer.
				hm := p.m.HTTP(key)
				hm.Requests.Inc()
				hm.Cancelled(0)
				return
			}
			p.answer(w, key, proxyerr.Classify(ctx, err, proxyerr.ToPeer, ep.Addr), start)
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
					last = proxyerr.FromUnprocessed(resp)
					_ = resp.Body.Close()
					if skip == nil {
						skip = make(map[string]bool, 2)
					}
					skip[ep.Addr] = true
					continue
				}
				delete(resp.Header, forward.HeaderUnprocessed)
			}
			if pe := proxyerr.FromResponse(resp); pe != nil {
				// The peer's proxy answered itself: say so here too.
				p.errs.Logf(ctx, pe, "peer proxy answered with an error", "dst", rt.dst)
			}
		}
		hm := p.m.HTTP(key)
		hm.Requests.Inc()
		p.writeResponse(r.Context(), w, resp, hm, start)
		return
	}
}

// writeResponse copies the response and records its metrics. A response that
// breaks mid-body aborts the downstream stream so the client sees the error.
func (p *Proxy) writeResponse(ctx context.Context, w http.ResponseWriter, resp *http.Response, hm *metrics.HTTP, start time.Time) {
	_, err := forward.WriteResponse(w, resp)
	_ = resp.Body.Close()
	if err != nil && ctx.Err() != nil {
		// The client reset or abandoned the stream: not the app's failure.
		hm.Cancelled(resp.StatusCode)
	} else {
		hm.Response(resp.StatusCode, grpcStatus(resp), err != nil)
		hm.Latency.Observe(time.Since(start).Seconds())
	}
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
func replayableBody(r *http.Request, cb io.Reader) ([]byte, bool, error) {
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
	if _, err := io.ReadFull(cb, b); err != nil {
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
