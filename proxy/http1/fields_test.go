package http1

import (
	"bufio"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// TestReadFieldsKeysAndValues: field names come out canonical whatever
// their case (common ones from the interned table, others computed), and
// values that share a backing array stay apart when a key repeats.
func TestReadFieldsKeysAndValues(t *testing.T) {
	var many strings.Builder
	want := http.Header{}
	for i := range 2*valuesChunk + 3 { // more fields than one chunk
		fmt.Fprintf(&many, "X-F%d: v%d\r\n", i, i)
		want[fmt.Sprintf("X-F%d", i)] = []string{fmt.Sprintf("v%d", i)}
	}
	cases := []struct {
		name, fields string
		want         http.Header
	}{
		{"common canonical", "User-Agent: a\r\nAccept-Encoding: gzip\r\n",
			http.Header{"User-Agent": {"a"}, "Accept-Encoding": {"gzip"}}},
		{"common lower case", "user-agent: a\r\ncontent-type: text/plain\r\n",
			http.Header{"User-Agent": {"a"}, "Content-Type": {"text/plain"}}},
		{"common odd case", "uSeR-aGeNt: a\r\n", http.Header{"User-Agent": {"a"}}},
		{"uncommon", "x-my-field: 1\r\nX-MY-OTHER: 2\r\n", http.Header{"X-My-Field": {"1"}, "X-My-Other": {"2"}}},
		{"repeated key between others", "A: 1\r\nB: 2\r\nA: 3\r\nC: 4\r\nA: 5\r\n",
			http.Header{"A": {"1", "3", "5"}, "B": {"2"}, "C": {"4"}}},
		{"more than a chunk", many.String(), want},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := "GET / HTTP/1.1\r\nHost: h\r\n" + tc.fields + "\r\n"
			req, _, err := ReadRequestHead(bufio.NewReader(strings.NewReader(raw)), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			got := req.Header.Clone()
			delete(got, "Host")
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("header %v, want %v", got, tc.want)
			}
			// Appending to one key must not change another's value.
			for k := range req.Header {
				before := req.Header.Clone()
				req.Header[k] = append(req.Header[k], "extra")
				for k2, vv := range before {
					if k2 != k && !reflect.DeepEqual(req.Header[k2], vv) {
						t.Fatalf("append to %s changed %s: %v, was %v", k, k2, req.Header[k2], vv)
					}
				}
			}
		})
	}
}
