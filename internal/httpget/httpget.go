// Package httpget is the one bounded HTTP GET that the CLI, the dashboard
// and the test harness use to read a proxy's /metrics or a tool's API: a
// context, a status check naming the URL, and a body that cannot grow past
// a limit (a hostile or broken peer cannot make the reader hold more).
package httpget

import (
	"context"
	"fmt"
	"io"
	"net/http"
)

// Body GETs url with c (http.DefaultClient when nil) and returns the body
// of a 200 answer. Any other status, a transport error or a body longer
// than max bytes is an error naming url.
func Body(ctx context.Context, c *http.Client, url string, max int64) ([]byte, error) {
	if c == nil {
		c = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if int64(len(body)) > max {
		return nil, fmt.Errorf("GET %s: body larger than %d bytes", url, max)
	}
	return body, nil
}
