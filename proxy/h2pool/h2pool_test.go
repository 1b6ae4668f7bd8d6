package h2pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// h2cApp is a real prior-knowledge HTTP/2 server (net/http) on loopback.
func h2cApp(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// connNumberApp is an h2cApp that answers with the number of the
// connection the request came on (1 for the first); it returns its address.
func connNumberApp(t *testing.T) (string, *httptest.Server) {
	var conns sync.Map
	var n atomic.Int32
	app := h2cApp(t, func(w http.ResponseWriter, r *http.Request) {
		id, _ := conns.LoadOrStore(r.RemoteAddr, n.Add(1))
		fmt.Fprint(w, id)
	})
	return strings.TrimPrefix(app.URL, "http://"), app
}

// countingPool dials addr, counting dials.
func countingPool(dials *atomic.Int32, fail func(string, error) error) *Pool[string] {
	var d net.Dialer
	return New(Config[string]{
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, "tcp", addr)
		},
		Fail: fail,
	})
}

func get(t *testing.T, p *Pool[string], addr string) (string, error) {
	t.Helper()
	cc, err := p.Get(context.Background(), addr)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := cc.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.Proto + " " + string(b), err
}

func TestOneDialForConcurrentRequests(t *testing.T) {
	addr, _ := connNumberApp(t)
	var dials atomic.Int32
	p := countingPool(&dials, nil)
	defer p.Shutdown(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := get(t, p, addr)
			if err == nil && got != "HTTP/2.0 1" {
				err = fmt.Errorf("answer %q, want HTTP/2.0 1 (all on the first connection)", got)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if d := dials.Load(); d != 1 {
		t.Errorf("%d dials for 50 concurrent requests, want 1", d)
	}
}

func TestReplacedWhenGoingAway(t *testing.T) {
	addr, app := connNumberApp(t)
	var dials atomic.Int32
	p := countingPool(&dials, nil)
	defer p.Shutdown(context.Background())
	if got, err := get(t, p, addr); err != nil || got != "HTTP/2.0 1" {
		t.Fatalf("first: %q, %v", got, err)
	}
	// The server closes its idle connections (GOAWAY, then close): the
	// pool must notice and dial again rather than fail the request.
	app.Config.SetKeepAlivesEnabled(false)
	app.CloseClientConnections()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := get(t, p, addr)
		if err == nil && got == "HTTP/2.0 2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the server closed the connection: %q, %v", got, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d := dials.Load(); d != 2 {
		t.Errorf("%d dials, want 2", d)
	}
}

type wrapped struct {
	key string
	err error
}

func (e *wrapped) Error() string { return e.key + ": " + e.err.Error() }
func (e *wrapped) Unwrap() error { return e.err }

func TestErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	_ = ln.Close()
	var dials atomic.Int32
	fail := func(k string, err error) error { return &wrapped{key: k, err: err} }
	p := countingPool(&dials, fail)

	// A dial error is the dialer's own, as it returned it.
	_, err = get(t, p, dead)
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Errorf("dial to a closed port: %v, want the dialer's *net.OpError", err)
	}
	// A cancelled request does not wait for a dial.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	blocked := New(Config[string]{Dial: func(ctx context.Context, _ string) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}, DialTimeout: 5 * time.Second})
	if _, err := blocked.Get(ctx, "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("Get with a cancelled context: %v", err)
	}
	// A shut-down pool's own error goes through Fail.
	p.Shutdown(context.Background())
	_, err = p.Get(context.Background(), dead)
	var w *wrapped
	if !errors.As(err, &w) || w.key != dead || !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Shutdown: %v, want ErrClosed wrapped by Fail with the key", err)
	}
}

func TestShutdownWaitsForStreams(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	app := h2cApp(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		fmt.Fprint(w, "done")
	})
	addr := strings.TrimPrefix(app.URL, "http://")
	var dials atomic.Int32
	p := countingPool(&dials, nil)
	answer := make(chan string, 1)
	go func() {
		got, err := get(t, p, addr)
		if err != nil {
			got = err.Error()
		}
		answer <- got
	}()
	<-started
	shut := make(chan struct{})
	go func() {
		p.Shutdown(context.Background())
		close(shut)
	}()
	select {
	case <-shut:
		t.Fatal("Shutdown returned with a stream in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if got := <-answer; got != "HTTP/2.0 done" {
		t.Errorf("in-flight request across Shutdown: %q", got)
	}
	<-shut
}

// TestShutdownClosesReplacedConns: a conn replaced because it was full
// keeps serving its stream, and the pool's Shutdown still closes it.
func TestShutdownClosesReplacedConns(t *testing.T) {
	release := make(chan struct{})
	held := make(chan struct{}, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			held <- struct{}{}
			<-release
		}
	}))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 1}
	srv.Start()
	defer srv.Close()
	defer close(release) // before Close, which waits for the handler
	addr := strings.TrimPrefix(srv.URL, "http://")
	var dials atomic.Int32
	p := countingPool(&dials, nil)
	// The server's SETTINGS (one stream at most) are in after an answer.
	if _, err := get(t, p, addr); err != nil {
		t.Fatal(err)
	}
	first, err := p.Get(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/hold", nil)
		if res, err := first.RoundTrip(req); err == nil {
			_ = res.Body.Close()
		}
	}()
	<-held
	// first is full: the pool dials a second conn.
	if _, err := p.Get(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
	if d := dials.Load(); d != 2 {
		t.Fatalf("%d dials, want 2 (the first conn full)", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	p.Shutdown(ctx)
	select {
	case <-first.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the replaced conn is still open after Shutdown")
	}
}
