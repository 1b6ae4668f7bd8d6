package http1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// FuzzReadRequestHead: never panics, and whatever it accepts net/http
// parses to the same request (a differential check: accepting only a
// subset of what a lenient parser reads, the same way, leaves no room for
// a second interpretation).
func FuzzReadRequestHead(f *testing.F) {
	for _, tc := range smuggling {
		f.Add([]byte(tc.raw))
	}
	f.Add([]byte("GET /x HTTP/1.1\r\nHost: a\r\nX: 1\r\nX: 2\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: T\r\n\r\n"))
	f.Add([]byte("CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		req, fr, err := ReadRequestHead(bufio.NewReader(bytes.NewReader(raw)), Limits{MaxHeadBytes: 8 << 10, MaxFields: 50})
		if err != nil {
			return
		}
		std, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			t.Fatalf("accepted what net/http refuses (%v): %q", err, raw)
		}
		if std.Method != req.Method || std.RequestURI != req.RequestURI || std.Host != req.Host || std.URL.String() != req.URL.String() {
			t.Fatalf("request line differs: %s %s %s vs %s %s %s", std.Method, std.URL, std.Host, req.Method, req.URL, req.Host)
		}
		if std.ContentLength != req.ContentLength || fr.Chunked != (len(std.TransferEncoding) > 0) || std.Close != req.Close {
			t.Fatalf("framing differs: net/http %d %v close=%v, ours %d %v close=%v", std.ContentLength, std.TransferEncoding, std.Close, req.ContentLength, fr.Chunked, req.Close)
		}
		delete(std.Header, "Host")
		if !reflect.DeepEqual(map[string][]string(std.Header), map[string][]string(req.Header)) {
			t.Fatalf("headers differ: net/http %v, ours %v", std.Header, req.Header)
		}
	})
}

// FuzzChunkedReader: never panics, never reads past the body, and what it
// decodes net/http's chunked reader decodes the same.
func FuzzChunkedReader(f *testing.F) {
	for _, tc := range chunkedVectors {
		f.Add([]byte(tc.body))
	}
	f.Add([]byte("3\r\nabc\r\n0\r\n\r\n"))
	f.Add([]byte("3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		br := bufio.NewReader(bytes.NewReader(raw))
		got, err := io.ReadAll(newChunkedReader(br, Limits{MaxHeadBytes: 8 << 10, MaxFields: 50}, nil))
		if err != nil {
			return
		}
		rest, _ := io.ReadAll(br)
		consumed := raw[:len(raw)-len(rest)]
		// net/http's reader of the same bytes (with its lenient trailer
		// handling done by hand: the request wrapper reads the trailer).
		req := "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + string(consumed)
		std, rerr := http.ReadRequest(bufio.NewReader(strings.NewReader(req)))
		if rerr != nil {
			t.Fatalf("net/http refused the head: %v", rerr)
		}
		want, serr := io.ReadAll(std.Body)
		if serr != nil || !bytes.Equal(want, got) {
			t.Fatalf("decoded %q, net/http %q (%v) from %q", got, want, serr, consumed)
		}
	})
}

// FuzzReadResponse: the response parser never panics, and a response it
// accepts net/http reads with the same status, headers and framing.
func FuzzReadResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: v\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
		"HTTP/1.0 204 No Content\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		req := &http.Request{Method: http.MethodGet}
		resp, err := ReadResponse(bufio.NewReader(bytes.NewReader(raw)), req, Limits{MaxHeadBytes: 8 << 10, MaxFields: 50})
		if err != nil {
			return
		}
		body, berr := io.ReadAll(resp.Body)
		std, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), req)
		if err != nil {
			t.Fatalf("accepted what net/http refuses (%v): %q", err, raw)
		}
		if std.StatusCode != resp.StatusCode || std.ContentLength != resp.ContentLength && resp.StatusCode >= 200 {
			t.Fatalf("status/length differ: net/http %d %d, ours %d %d", std.StatusCode, std.ContentLength, resp.StatusCode, resp.ContentLength)
		}
		if !reflect.DeepEqual(map[string][]string(std.Header), map[string][]string(resp.Header)) {
			t.Fatalf("headers differ: net/http %v, ours %v", std.Header, resp.Header)
		}
		if berr == nil {
			want, err := io.ReadAll(std.Body)
			if err != nil || !bytes.Equal(want, body) {
				t.Fatalf("body differs: net/http %q (%v), ours %q", want, err, body)
			}
		}
	})
}
