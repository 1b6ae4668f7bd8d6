package prom

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
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
