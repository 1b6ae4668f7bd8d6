package http1

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// smuggling holds request heads (and bodies) that front ends and back ends
// are known to frame differently; every one must be refused.
var smuggling = []struct {
	name   string
	raw    string
	status int
	reason string
}{
	{"CL.TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", 400, ReasonTEAndCL},
	{"TE.CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", 400, ReasonTEAndCL},
	{"TE xchunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400, ReasonTransferEncoding},
	{"TE chunked, identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400, ReasonTransferEncoding},
	{"TE chunked, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400, ReasonTransferEncoding},
	{"TE gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, ReasonUnsupportedTE},
	{"TE empty", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", 400, ReasonTransferEncoding},
	{"two TE lines", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", 400, ReasonTransferEncoding},
	{"two TE chunked lines", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400, ReasonTransferEncoding},
	{"TE space before colon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", 400, ReasonFieldName},
	{"TE tab before colon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n", 400, ReasonFieldName},
	{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, ReasonTransferEncoding},
	{"TE obs-fold", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", 400, ReasonObsFold},
	{"obs-fold tab", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", 400, ReasonObsFold},
	{"duplicate CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400, ReasonContentLength},
	{"conflicting CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc", 400, ReasonContentLength},
	{"listed CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", 400, ReasonContentLength},
	{"negative CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400, ReasonContentLength},
	{"plus CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400, ReasonContentLength},
	{"hex CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc", 400, ReasonContentLength},
	{"huge CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400, ReasonContentLength},
	{"empty CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400, ReasonContentLength},
	{"bare LF in header", "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400, ReasonBareLF},
	{"bare LF request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400, ReasonBareLF},
	{"bare LF end of head", "GET / HTTP/1.1\r\nHost: a\r\n\n", 400, ReasonBareLF},
	{"bare CR", "GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400, ReasonBareCR},
	{"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400, ReasonFieldValue},
	{"CTL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400, ReasonFieldValue},
	{"NUL in name", "GET / HTTP/1.1\r\nHost: a\r\nX\x00: b\r\n\r\n", 400, ReasonFieldName},
	{"no colon", "GET / HTTP/1.1\r\nHost: a\r\nJunk\r\n\r\n", 400, ReasonFieldName},
	{"empty name", "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400, ReasonFieldName},
	{"missing Host", "GET / HTTP/1.1\r\n\r\n", 400, ReasonHost},
	{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, ReasonHost},
	{"bad Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, ReasonHost},
	{"two spaces in request line", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, ReasonStartLine},
	{"space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400, ReasonStartLine},
	{"bad version", "GET / HTTP/1.x\r\nHost: a\r\n\r\n", 400, ReasonStartLine},
	{"HTTP/2.0 version", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, ReasonVersion},
	{"lowercase version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400, ReasonStartLine},
	{"bad method", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, ReasonStartLine},
	{"expect other", "GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 417, ReasonExpectation},
}

func TestReadRequestHeadRefusesSmuggling(t *testing.T) {
	for _, tc := range smuggling {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ReadRequestHead(bufio.NewReader(strings.NewReader(tc.raw)), Limits{})
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("accepted or I/O error: %v", err)
			}
			if e.Status != tc.status || e.Reason != tc.reason {
				t.Fatalf("got %d %s (%s), want %d %s", e.Status, e.Reason, e.Msg, tc.status, tc.reason)
			}
		})
	}
}

func TestReadRequestHeadLimits(t *testing.T) {
	many := "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X: y\r\n", 20) + "\r\n"
	_, _, err := ReadRequestHead(bufio.NewReader(strings.NewReader(many)), Limits{MaxFields: 10})
	var e *Error
	if !errors.As(err, &e) || e.Status != 431 || e.Reason != ReasonTooManyFields {
		t.Fatalf("20 fields with a limit of 10: %v", err)
	}
	big := "GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("y", 10000) + "\r\n\r\n"
	_, _, err = ReadRequestHead(bufio.NewReader(strings.NewReader(big)), Limits{MaxHeadBytes: 4096})
	if !errors.As(err, &e) || e.Status != 431 || e.Reason != ReasonHeadTooLarge {
		t.Fatalf("10 KB head with a limit of 4 KiB: %v", err)
	}
}

func TestReadRequestHeadAccepts(t *testing.T) {
	for _, tc := range []struct {
		raw     string
		method  string
		host    string
		length  int64
		chunked bool
		close   bool
	}{
		{"GET /x?y=1 HTTP/1.1\r\nHost: a:80\r\n\r\n", "GET", "a:80", 0, false, false},
		{"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "a", 0, false, false},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n", "POST", "a", 12, false, false},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n", "POST", "a", -1, true, false},
		{"GET http://b:8/x HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "b:8", 0, false, false},
		{"CONNECT b:443 HTTP/1.1\r\nHost: b:443\r\n\r\n", "CONNECT", "b:443", 0, false, false},
		{"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "OPTIONS", "a", 0, false, true},
		{"GET / HTTP/1.0\r\n\r\n", "GET", "", 0, false, true},
		{"GET / HTTP/1.1\r\nHost: a\r\nX:\t v \t\r\nExpect: 100-continue\r\n\r\n", "GET", "a", 0, false, false},
	} {
		req, f, err := ReadRequestHead(bufio.NewReader(strings.NewReader(tc.raw)), Limits{})
		if err != nil {
			t.Fatalf("%q: %v", tc.raw, err)
		}
		if req.Method != tc.method || req.Host != tc.host || req.ContentLength != tc.length || f.Chunked != tc.chunked || req.Close != tc.close {
			t.Errorf("%q: got %s %q len %d chunked %v close %v", tc.raw, req.Method, req.Host, req.ContentLength, f.Chunked, req.Close)
		}
	}
}

// chunkedVectors are malformed chunked bodies.
var chunkedVectors = []struct{ name, body string }{
	{"size overflow", "ffffffffffffffffff\r\nx\r\n0\r\n\r\n"},
	{"mesh field as trailer", "1\r\nx\r\n0\r\nTrellis-Target-Port: 4191\r\n\r\n"},
	{"mesh field as trailer, lower case", "1\r\nx\r\n0\r\ntrellis-app-proto: http1\r\n\r\n"},
	{"size 16 digits", "1000000000000000\r\nx\r\n0\r\n\r\n"},
	{"size bare LF", "3\nabc\r\n0\r\n\r\n"},
	{"data bare LF", "3\r\nabc\n0\r\n\r\n"},
	{"no CRLF after data", "3\r\nabcd\r\n0\r\n\r\n"},
	{"negative size", "-3\r\nabc\r\n0\r\n\r\n"},
	{"plus size", "+3\r\nabc\r\n0\r\n\r\n"},
	{"0x size", "0x3\r\nabc\r\n0\r\n\r\n"},
	{"empty size", "\r\nabc\r\n0\r\n\r\n"},
	{"space in size", "3 \r\nabc\r\n0\r\n\r\n"},
	{"CTL in extension", "3;a=\x01\r\nabc\r\n0\r\n\r\n"},
	{"long extension", "3;" + strings.Repeat("a", 5000) + "\r\nabc\r\n0\r\n\r\n"},
	{"last chunk bare LF", "3\r\nabc\r\n0\n\r\n"},
	{"trailer bare LF", "3\r\nabc\r\n0\r\nX: y\n\r\n"},
	{"trailer obs-fold", "3\r\nabc\r\n0\r\nX: y\r\n z\r\n\r\n"},
	{"trailer Content-Length", "3\r\nabc\r\n0\r\nContent-Length: 3\r\n\r\n"},
	{"truncated", "3\r\nab"},
	{"no last chunk", "3\r\nabc\r\n"},
}

func TestChunkedReaderRefuses(t *testing.T) {
	for _, tc := range chunkedVectors {
		t.Run(tc.name, func(t *testing.T) {
			cr := newChunkedReader(bufio.NewReader(strings.NewReader(tc.body)), Limits{}, nil)
			_, err := io.ReadAll(cr)
			var e *Error
			if !errors.As(err, &e) || e.Status != 400 {
				t.Fatalf("got %v, want a 400 *Error", err)
			}
		})
	}
}

func TestChunkedReaderDecodes(t *testing.T) {
	var trailer http.Header
	body := "3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nGrpc-Status: 0\r\n\r\nNEXT"
	br := bufio.NewReader(strings.NewReader(body))
	got, err := io.ReadAll(newChunkedReader(br, Limits{}, func(h http.Header) { trailer = h }))
	if err != nil || string(got) != "abc0123456789" {
		t.Fatalf("got %q, %v", got, err)
	}
	if trailer.Get("Grpc-Status") != "0" {
		t.Fatalf("trailer %v", trailer)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "NEXT" {
		t.Fatalf("read past the body: rest %q", rest)
	}
}
