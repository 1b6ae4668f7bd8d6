package grafana

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Query is one panel target's PromQL with the dashboard variables
// replaced, ready for Prometheus's /api/v1/query.
type Query struct {
	Dashboard, Panel, RefID string
	Expr                    string
}

// DefaultVars are the values Queries gives the variables: every
// namespace, workload and destination (regex .*), a 1m rate window.
var DefaultVars = map[string]string{
	"$__rate_interval": "1m", "$namespace": ".*", "$workload": ".*", "$dst_service": ".*",
}

// Queries returns every target of every committed dashboard with vars
// substituted (DefaultVars when nil). The exact-match selectors of single
// value variables become regex matches so ".*" selects everything.
func Queries(vars map[string]string) ([]Query, error) {
	if vars == nil {
		vars = DefaultVars
	}
	var out []Query
	fs := Files()
	for _, name := range sortedNames(fs) {
		var d Dashboard
		if err := json.Unmarshal(fs[name], &d); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		for _, p := range d.Panels {
			for _, t := range p.Targets {
				out = append(out, Query{Dashboard: d.UID, Panel: p.Title, RefID: t.RefID, Expr: substitute(t.Expr, vars)})
			}
		}
	}
	return out, nil
}

func substitute(expr string, vars map[string]string) string {
	for k, v := range vars {
		// label="$var" -> label=~"value": a value may be a regex.
		expr = strings.ReplaceAll(expr, `="`+k+`"`, `=~"`+v+`"`)
		expr = strings.ReplaceAll(expr, k, v)
	}
	return expr
}

// Result is what Prometheus answered one Query: Err is set when it
// refused or failed it (a syntax error, an unknown function), Series is
// how many series the instant query returned.
type Result struct {
	Query
	Series int
	Err    error
}

// Check runs every Query against the Prometheus at promURL (instant
// queries at now) and returns one Result each. The viz suite calls it
// with the demo running: every expression must be valid PromQL, and the
// panels of the demo's traffic must have data.
func Check(ctx context.Context, c *http.Client, promURL string, vars map[string]string) ([]Result, error) {
	qs, err := Queries(vars)
	if err != nil {
		return nil, err
	}
	out := make([]Result, 0, len(qs))
	for _, q := range qs {
		n, err := instant(ctx, c, promURL, q.Expr)
		out = append(out, Result{Query: q, Series: n, Err: err})
	}
	return out, nil
}

// instant runs one instant query and counts the series of its answer.
func instant(ctx context.Context, c *http.Client, promURL, expr string) (int, error) {
	u := strings.TrimRight(promURL, "/") + "/api/v1/query?" + url.Values{"query": {expr}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return 0, err
	}
	var ans struct {
		Status, Error string
		Data          struct {
			Result []json.RawMessage `json:"result"`
		}
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return 0, fmt.Errorf("%s: %s", resp.Status, body)
	}
	if ans.Status != "success" {
		return 0, fmt.Errorf("prometheus: %s", ans.Error)
	}
	return len(ans.Data.Result), nil
}
