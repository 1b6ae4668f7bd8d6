package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// idleSettle is how long the held connections sit before RSS is read, so
// lazily freed buffers and the proxies' per-connection state settle.
const idleSettle = 2 * time.Second

// runIdle opens sc.Conns app connections to the path's front proxy, sends
// one request on each and keeps them all open, idle; the front proxy's RSS
// growth divided by the connections held is its memory per idle
// connection. nginx is measured on its own instance, configured like nginx
// #1 but with worker_connections sized for the scenario.
func runIdle(ctx context.Context, e *env, sc scenario, path string) (*cellResult, error) {
	var addr, host string
	var procs []measured
	switch path {
	case pathMesh:
		addr, host = e.mesh.outboundAddr, meshAuthority
		for _, m := range e.measured {
			if m.path == pathMesh {
				procs = append(procs, m)
			}
		}
	case pathNginx:
		if e.nginxIdle == nil {
			return nil, skipError{"no idle nginx instance"}
		}
		addr, host, procs = e.nginx.idleAddr, e.nginx.idleAddr, []measured{*e.nginxIdle}
	default:
		return nil, skipError{"the idle scenario measures a front proxy; direct has none"}
	}
	before := make([]int64, len(procs))
	g0 := make([]float64, len(procs))
	for i, m := range procs {
		mem, err := m.group.Memory()
		if err != nil {
			return nil, fmt.Errorf("%s memory: %w", m.name, err)
		}
		before[i] = mem.RSS
		if g0[i], err = e.goroutines(ctx, m); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	conns, failed, firstErr := holdConns(ctx, addr, host, sc.Conns)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	select {
	case <-time.After(idleSettle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c := &cellResult{Scenario: sc.Name, Path: path, Pass: 1, Wall: time.Since(start), OtherCores: -1,
		Scheduled: int64(sc.Conns), Completed: int64(len(conns)), Errors: failed, FirstError: firstErr, Held: int64(len(conns))}
	for i, m := range procs {
		mem, err := m.group.Memory()
		if err != nil {
			return nil, fmt.Errorf("%s memory: %w", m.name, err)
		}
		g1, err := e.goroutines(ctx, m)
		if err != nil {
			return nil, err
		}
		c.Procs = append(c.Procs, procCost{Name: m.name, Proxy: m.proxy, IdleRSS: before[i], PeakRSS: mem.RSS, HWM: mem.HWM,
			HeldDelta: mem.RSS - before[i], HeldGoroutines: g1 - g0[i]})
	}
	return c, nil
}

// adminOf is a trellis-proxy's admin address.
func (e *env) adminOf(m measured) string {
	if m.name == "server-proxy" {
		return e.mesh.serverAdmin
	}
	return e.mesh.clientAdmin
}

// goroutines reads a trellis-proxy's go_goroutines; 0 for other processes.
func (e *env) goroutines(ctx context.Context, m measured) (float64, error) {
	if !m.proxy {
		return 0, nil
	}
	_, g, err := scrapeProcess(ctx, e.adminOf(m))
	if err != nil {
		return 0, fmt.Errorf("%s /metrics: %w", m.name, err)
	}
	return g, nil
}

// holdConns opens n connections to addr, 32 at a time, each carrying one
// GET whose response is read whole, and returns the ones that succeeded.
func holdConns(ctx context.Context, addr, host string, n int) (conns []net.Conn, failed int64, firstErr string) {
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	req := []byte("GET / HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: meshbench\r\n\r\n")
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			br := bufio.NewReaderSize(nil, 4096)
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				c, err := openOne(ctx, addr, req, br)
				mu.Lock()
				if err != nil {
					failed++
					if firstErr == "" {
						firstErr = err.Error()
					}
				} else {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return conns, failed, firstErr
}

// openOne dials, sends req and reads the whole response; the connection is
// then idle with nothing buffered, so br can be reused for the next.
func openOne(ctx context.Context, addr string, req []byte, br *bufio.Reader) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br.Reset(c)
	if _, err := c.Write(req); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("write: %w", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if err == nil && (resp.StatusCode != http.StatusOK || resp.Close) {
			err = fmt.Errorf("status %d, close %v", resp.StatusCode, resp.Close)
		}
	}
	if err == nil && br.Buffered() > 0 {
		err = fmt.Errorf("%d bytes after the response", br.Buffered())
	}
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("request: %w", err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}
