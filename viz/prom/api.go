// Package prom is the model.Source of Kubernetes: PromQL over the
// Prometheus HTTP API (the one `trellis viz install` deploys, or a user's
// own with the same relabelling). The expressions are in promql.go, one
// per column; docs/observability.md shows them.
package prom

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// maxAnswer bounds what is read of one answer: the views group a few
// hundred series at most; a bigger answer is a misdirected URL.
const maxAnswer = 32 << 20

// Client runs instant queries against one Prometheus.
type Client struct {
	base *url.URL
	http *http.Client
	// Now is the evaluation time of queries (time.Now when nil).
	Now func() time.Time
}

// NewClient returns a Client for the Prometheus at base (e.g.
// http://127.0.0.1:9090); hc nil is a client with a 30 s timeout.
func NewClient(base string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("prometheus URL %q: want http(s)://host[:port][/path]", base)
	}
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &Client{base: u, http: hc}, nil
}

// URL is the Prometheus the client queries.
func (c *Client) URL() string { return c.base.String() }

type apiAnswer struct {
	Status    string          `json:"status"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Data      json.RawMessage `json:"data"`
}

type queryData struct {
	ResultType model.ValueType `json:"resultType"`
	Result     json.RawMessage `json:"result"`
}

// Query evaluates an instant query; the answer must be a vector (every
// view's expression is one). An error names the expression.
func (c *Client) Query(ctx context.Context, expr string) (model.Vector, error) {
	form := url.Values{"query": {expr}}
	if c.Now != nil {
		form.Set("time", fmt.Sprintf("%.3f", float64(c.Now().UnixMilli())/1000))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base.String()+"/api/v1/query", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", expr, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	data, err := c.do(req)
	if err != nil {
		return nil, fmt.Errorf("prometheus %s: query %s: %w", c.base.Redacted(), expr, err)
	}
	var qd queryData
	if err := json.Unmarshal(data, &qd); err != nil {
		return nil, fmt.Errorf("prometheus %s: query %s: decode: %w", c.base.Redacted(), expr, err)
	}
	if qd.ResultType != model.ValVector {
		return nil, fmt.Errorf("prometheus %s: query %s: result is a %s, want a vector", c.base.Redacted(), expr, qd.ResultType)
	}
	var v model.Vector
	if err := json.Unmarshal(qd.Result, &v); err != nil {
		return nil, fmt.Errorf("prometheus %s: query %s: decode vector: %w", c.base.Redacted(), expr, err)
	}
	return v, nil
}

// do sends req and returns the data of a success answer; a Prometheus
// error answer (bad_data, execution, timeout) is an error with its text.
func (c *Client) do(req *http.Request) (json.RawMessage, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if len(body) > maxAnswer {
		return nil, fmt.Errorf("answer larger than %d bytes", maxAnswer)
	}
	var a apiAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("HTTP %d, not a Prometheus API answer: %.200q", resp.StatusCode, body)
	}
	if a.Status != "success" {
		if a.Error == "" {
			a.Error = "no error text"
		}
		return nil, fmt.Errorf("%w: %s: %s", ErrQuery, a.ErrorType, a.Error)
	}
	return a.Data, nil
}

// ErrQuery is a query Prometheus refused or failed to run (its answer's
// status was "error"): a parse or execution error.
var ErrQuery = errors.New("prometheus refused the query")
