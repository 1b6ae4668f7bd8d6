package prom

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

type answer string

func (a answer) RoundTrip(*http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(string(a))), Header: http.Header{}}, nil
}

// Whatever a Prometheus (or what answers in its place) sends, Query
// returns a vector or an error, never panics.
func FuzzQueryAnswer(f *testing.F) {
	f.Add(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"b"},"value":[1.5,"2"]}]}}`)
	f.Add(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}`)
	f.Add(`{"status":"error","errorType":"bad_data","error":"parse error"}`)
	f.Add(`{"status":"success","data":{"resultType":"matrix","result":[]}}`)
	f.Add(`<html>`)
	f.Fuzz(func(t *testing.T, body string) {
		c, err := NewClient("http://prometheus.invalid", &http.Client{Transport: answer(body)})
		if err != nil {
			t.Fatal(err)
		}
		// Any answer is a vector or an error; the fuzzer finds panics.
		_, _ = c.Query(context.Background(), "up")
	})
}

// A resource name can never escape its PromQL string: what quote writes
// reads back (PromQL unquotes as Go does) as exactly the name.
func FuzzQuote(f *testing.F) {
	for _, s := range []string{"web", `a"b`, `\`, "x\ny", "\x00", `"}) or vector(1) or ({a="`, "é\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return // label values are UTF-8
		}
		got, err := strconv.Unquote(quote(s))
		if err != nil || got != s {
			t.Fatalf("quote(%q) = %s reads back as %q, %v", s, quote(s), got, err)
		}
	})
}

// ServiceOf takes any authority (it comes from a caller's Host header).
func FuzzServiceOf(f *testing.F) {
	for _, s := range []string{"books.demo.svc.cluster.local:80", "books:80", "[::1]:80", "10.0.0.1:80", ":", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, authority string) {
		if r := ServiceOf(authority, "ns"); r.Kind != "services" {
			t.Fatalf("kind %q", r.Kind)
		}
	})
}
