// Package upstream reaches other demo services. With a proxy address every
// connection goes to the local trellis-proxy's outbound listener ("explicit"
// mode) and the logical service authority travels in the Host header or the
// gRPC :authority; without one, the authority is dialled directly.
package upstream

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// HTTPClient sends HTTP/1.1 requests to logical authorities such as
// "books.demo:80".
type HTTPClient struct {
	client *http.Client
}

// NewHTTPClient returns a client that dials proxy for every request, or the
// request's own host when proxy is empty. timeout bounds each whole request
// (0: no limit).
func NewHTTPClient(proxy string, timeout time.Duration, maxConnsPerHost int) *HTTPClient {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if proxy != "" {
				addr = proxy
			}
			return dialer.DialContext(ctx, network, addr)
		},
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: max(maxConnsPerHost, 16),
		MaxConnsPerHost:     maxConnsPerHost,
		// Below the proxy's protocol-detection timeout (10 s): net/http
		// may dial a connection it then leaves idle unused (another one
		// freed up first), and one that stays silent that long is taken
		// by a transparent proxy for a server-speaks-first protocol and
		// forwarded as opaque TCP, past routes (seen in e2e traffic-split).
		IdleConnTimeout: 8 * time.Second,
		// The demo speaks plain HTTP/1.1 to its proxy; the proxy upgrades
		// the hop between proxies.
		ForceAttemptHTTP2: false,
	}
	return &HTTPClient{client: &http.Client{Transport: tr, Timeout: timeout}}
}

// NewRequest builds a request for path on authority (host:port), with the
// Host header set to the authority.
func NewRequest(ctx context.Context, method, authority, path string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+authority+path, nil)
	if err != nil {
		return nil, fmt.Errorf("request to %s%s: %w", authority, path, err)
	}
	req.Host = authority
	return req, nil
}

// Do sends req.
func (c *HTTPClient) Do(req *http.Request) (*http.Response, error) {
	return c.client.Do(req)
}

// Close releases idle connections.
func (c *HTTPClient) Close() {
	c.client.CloseIdleConnections()
}

// DialGRPC returns a plaintext (h2c) client connection for authority,
// through proxy when it is not empty. The connection is lazy: errors show
// up on the first call.
func DialGRPC(proxy, authority string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	target := authority
	if proxy != "" {
		target = proxy
	}
	all := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(authority),
	}, opts...)
	// passthrough: hand the address to the dialer as is; the proxy (or the
	// test) resolves names, not the app.
	cc, err := grpc.NewClient("passthrough:///"+target, all...)
	if err != nil {
		return nil, fmt.Errorf("grpc client for %s: %w", authority, err)
	}
	return cc, nil
}
