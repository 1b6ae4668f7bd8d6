// Package h2pool keeps multiplexed HTTP/2 client connections
// (meshh2.ClientConn), one per key, each dialed once however many requests
// wait for it, and replaced when it can take no new request. The outbound
// proxy keys its pool by endpoint and identity (mesh TLS or plain h2c);
// the inbound proxy keys its pool by the app's address (prior-knowledge
// h2c to a gRPC or HTTP/2 app).
package h2pool

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/proxy/meshh2"
)

// Conn is a pooled connection with a reserved stream slot.
type Conn interface {
	ReserveNewRequest() bool
	RoundTrip(*http.Request) (*http.Response, error)
	Shutdown(context.Context) error
	Close() error
	Done() <-chan struct{} // closed once the conn is
}

// PeerOptions are for a connection to a peer proxy, as x/net's Transport
// had them: a peer silent for ReadIdleTimeout is pinged and dropped
// PingTimeout later, and a conn without streams for IdleTimeout is closed,
// so conns replaced in the pool (full or going away) do not linger.
var PeerOptions = meshh2.ClientOptions{
	ReadIdleTimeout: 30 * time.Second,
	PingTimeout:     10 * time.Second,
	IdleTimeout:     5 * time.Minute,
}

// AppOptions are for a connection to an app, or to a server outside the
// mesh: no health PINGs. gRPC servers take a client's PINGs as abuse
// (grpc-go and grpc-java allow one per 5 minutes by default, none without
// a stream, and close the connection with GOAWAY "too_many_pings" after
// three), so a quiet stream would be killed after two minutes.
var AppOptions = meshh2.ClientOptions{IdleTimeout: 5 * time.Minute}

// Config is what a pool needs.
type Config[K comparable] struct {
	// Dial opens the connection for k (TLS already handshaken, if any).
	Dial func(ctx context.Context, k K) (net.Conn, error)
	// DialTimeout bounds Dial; the dial is not bound to the request that
	// asked for it, since the connection is shared.
	DialTimeout time.Duration
	// Options tunes k's connection; nil: PeerOptions.
	Options func(k K) meshh2.ClientOptions
	// Fail wraps the pool's own errors about k (pool closed, no usable
	// connection, HTTP/2 set-up failed); nil keeps them as they are.
	Fail func(k K, err error) error
}

// ErrClosed: the pool was shut down.
var ErrClosed = net.ErrClosed

type dialCall struct {
	done chan struct{}
	err  error
}

// Pool holds one connection per key.
type Pool[K comparable] struct {
	cfg     Config[K]
	mu      sync.Mutex
	conns   map[K]Conn
	dialing map[K]*dialCall
	// retired are conns replaced (full or going away) while they still
	// serve streams: Shutdown closes them too.
	retired map[Conn]struct{}
	closed  bool
}

// New makes an empty pool.
func New[K comparable](cfg Config[K]) *Pool[K] {
	if cfg.Options == nil {
		cfg.Options = func(K) meshh2.ClientOptions { return PeerOptions }
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.Fail == nil {
		cfg.Fail = func(_ K, err error) error { return err }
	}
	return &Pool[K]{cfg: cfg, conns: make(map[K]Conn), dialing: make(map[K]*dialCall), retired: make(map[Conn]struct{})}
}

// Get returns k's connection with a stream slot reserved for one
// RoundTrip, dialing it (once, for every caller waiting) when there is
// none or the one there can take no new request.
func (p *Pool[K]) Get(ctx context.Context, k K) (Conn, error) {
	for attempt := 0; attempt < 4; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		call, cc, err := p.reserve(k)
		if cc != nil || err != nil {
			return cc, err
		}
		select {
		case <-call.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if call.err != nil {
			return nil, call.err
		}
	}
	return nil, p.cfg.Fail(k, errors.New("no usable connection"))
}

// reserve returns a usable conn, or the dial to wait for (started here
// when none is under way).
func (p *Pool[K]) reserve(k K) (*dialCall, Conn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, nil, p.cfg.Fail(k, ErrClosed)
	}
	if cc := p.conns[k]; cc != nil {
		if cc.ReserveNewRequest() {
			p.mu.Unlock()
			return nil, cc, nil
		}
		// Unusable, going away, or out of streams: replace it. A full
		// conn keeps serving its streams and closes when idle.
		delete(p.conns, k)
		p.retireLocked(cc)
	}
	if call := p.dialing[k]; call != nil {
		p.mu.Unlock()
		return call, nil, nil
	}
	call := &dialCall{done: make(chan struct{})}
	p.dialing[k] = call
	p.mu.Unlock()
	// In its own goroutine, so that the request that started it may
	// give up on it as the others can.
	go p.finish(k, call)
	return call, nil, nil
}

// finish dials k and hands the outcome to every request waiting on call.
func (p *Pool[K]) finish(k K, call *dialCall) {
	cc, err := p.dial(k)
	p.mu.Lock()
	delete(p.dialing, k)
	if err == nil {
		if p.closed {
			_ = cc.Close()
			err = p.cfg.Fail(k, ErrClosed)
		} else {
			p.conns[k] = cc
		}
	}
	call.err = err
	close(call.done)
	p.mu.Unlock()
}

// retireLocked keeps cc for Shutdown until it closes; the retired conns
// that have closed since are forgotten now.
func (p *Pool[K]) retireLocked(cc Conn) {
	for r := range p.retired {
		select {
		case <-r.Done():
			delete(p.retired, r)
		default:
		}
	}
	p.retired[cc] = struct{}{}
}

func (p *Pool[K]) dial(k K) (Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.DialTimeout)
	defer cancel()
	c, err := p.cfg.Dial(ctx, k)
	if err != nil {
		return nil, err
	}
	// meshh2 speaks prior-knowledge h2c on a plain conn as it speaks h2
	// over TLS. It sends no Accept-Encoding of its own, and so never
	// decompresses a response.
	cc, err := meshh2.NewClientConn(c, p.cfg.Options(k))
	if err != nil {
		_ = c.Close()
		return nil, p.cfg.Fail(k, err)
	}
	return cc, nil
}

// Shutdown closes idle connections now and the rest when their streams end
// (a GOAWAY-like graceful close on the client side), or when ctx ends.
// Later Gets fail.
func (p *Pool[K]) Shutdown(ctx context.Context) {
	p.mu.Lock()
	p.closed = true
	conns := make([]Conn, 0, len(p.conns)+len(p.retired))
	for _, cc := range p.conns {
		conns = append(conns, cc)
	}
	for cc := range p.retired {
		conns = append(conns, cc)
	}
	p.conns, p.retired = map[K]Conn{}, map[Conn]struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, cc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cc.Shutdown(ctx); err != nil {
				_ = cc.Close()
			}
		}()
	}
	wg.Wait()
}
