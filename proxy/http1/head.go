// Package http1 reads and serves HTTP/1.x messages strictly by RFC 9112, so
// that no message is framed differently by the proxy and by the app behind
// it (request smuggling): ambiguous framing (Transfer-Encoding with
// Content-Length, repeated or listed Content-Length, unknown transfer
// codings), obs-fold, bare LF or CR, control characters and whitespace
// before a field's colon are refused instead of being repaired. It holds the
// head parser used for requests (Server) and responses (ReadResponse), the
// body readers, and a per-connection server loop for http.Handlers.
package http1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// Limits bound what a peer may make the proxy read.
type Limits struct {
	MaxHeadBytes int // request/status line plus header section; default 1 MiB
	MaxFields    int // header field lines; default 500
}

// Defaults of Limits.
const (
	DefaultMaxHeadBytes = 1 << 20
	DefaultMaxFields    = 500
	// maxChunkLine bounds a chunk-size line with its extensions.
	maxChunkLine = 4 << 10
)

func (l Limits) withDefaults() Limits {
	if l.MaxHeadBytes <= 0 {
		l.MaxHeadBytes = DefaultMaxHeadBytes
	}
	if l.MaxFields <= 0 {
		l.MaxFields = DefaultMaxFields
	}
	return l
}

// Error is a message the proxy refuses: Status is what a server answers,
// Reason a short fixed label for metrics, Msg names the culprit.
type Error struct {
	Status int
	Reason string
	Msg    string
	Err    error // underlying I/O error, if any
}

func (e *Error) Error() string { return e.Msg }

func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrMalformed) true for every *Error.
func (e *Error) Is(target error) bool { return target == ErrMalformed }

// ErrMalformed matches every framing or syntax error of this package.
var ErrMalformed = errors.New("malformed HTTP/1 message")

func bad(reason, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// Reasons (metric label values).
const (
	ReasonBareLF           = "bare_lf"
	ReasonBareCR           = "bare_cr"
	ReasonObsFold          = "obs_fold"
	ReasonFieldName        = "invalid_field_name"
	ReasonFieldValue       = "invalid_field_value"
	ReasonStartLine        = "invalid_start_line"
	ReasonVersion          = "unsupported_version"
	ReasonHost             = "invalid_host"
	ReasonContentLength    = "invalid_content_length"
	ReasonTransferEncoding = "invalid_transfer_encoding"
	ReasonUnsupportedTE    = "unsupported_transfer_encoding"
	ReasonTEAndCL          = "te_and_cl"
	ReasonHeadTooLarge     = "head_too_large"
	ReasonTooManyFields    = "too_many_fields"
	ReasonHeaderTimeout    = "header_timeout"
	ReasonExpectation      = "unsupported_expectation"
	ReasonChunk            = "invalid_chunk"
	ReasonTrailer          = "invalid_trailer"
	ReasonTruncated        = "truncated"
)

// lineReader reads CRLF-terminated lines within a byte budget.
type lineReader struct {
	br     *bufio.Reader
	budget int
	tooBig func() *Error
}

// line returns the next line without its CRLF. The slice is valid until the
// next read. A line ending in a bare LF, or holding a CR anywhere else, is
// an error: RFC 9112 §2.2 lets a recipient accept bare LF, but an app that
// does not would frame the message differently.
func (lr *lineReader) line() ([]byte, error) {
	var acc []byte
	for {
		b, err := lr.br.ReadSlice('\n')
		lr.budget -= len(b)
		if lr.budget < 0 {
			return nil, lr.tooBig()
		}
		if err == bufio.ErrBufferFull {
			acc = append(acc, b...)
			continue
		}
		if err != nil {
			return nil, err
		}
		if acc != nil {
			b = append(acc, b...)
		}
		if len(b) < 2 || b[len(b)-2] != '\r' {
			return nil, bad(ReasonBareLF, "line ending in a bare LF (CRLF required, RFC 9112 §2.2)")
		}
		b = b[:len(b)-2]
		if bytes.IndexByte(b, '\r') >= 0 {
			return nil, bad(ReasonBareCR, "bare CR in a line (RFC 9112 §2.2)")
		}
		return b, nil
	}
}

// readFields reads a field section up to its empty line into h.
func readFields(lr *lineReader, h http.Header, maxFields int, what string) error {
	var strs []string // backing array of single values, filled in chunks
	for n := 0; ; n++ {
		line, err := lr.line()
		if err != nil {
			return err
		}
		if len(line) == 0 {
			return nil
		}
		if n >= maxFields {
			return &Error{Status: http.StatusRequestHeaderFieldsTooLarge, Reason: ReasonTooManyFields,
				Msg: fmt.Sprintf("more than %d %s fields", maxFields, what)}
		}
		if line[0] == ' ' || line[0] == '\t' {
			return bad(ReasonObsFold, "obs-fold (a %s line starting with whitespace) is not accepted (RFC 9112 §5.2)", what)
		}
		name, value, err := splitField(line, what)
		if err != nil {
			return err
		}
		key := canonicalKey(name)
		if vv, ok := h[key]; ok {
			h[key] = append(vv, value)
			continue
		}
		// Single values share a backing array (as net/textproto does):
		// one allocation per valuesChunk fields instead of one per field.
		// Full-capacity slices keep an append to one key off the next.
		if len(strs) == 0 {
			strs = make([]string, valuesChunk)
		}
		strs[0] = value
		h[key] = strs[:1:1]
		strs = strs[1:]
	}
}

// valuesChunk is how many single field values share one allocation.
const valuesChunk = 8

// commonKeys maps common field names, canonical or lower case, to their
// canonical form: such a line costs no allocation for its key. Built once,
// only read.
var commonKeys = func() map[string]string {
	m := make(map[string]string)
	for _, k := range []string{
		"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control",
		"Connection", "Content-Encoding", "Content-Length", "Content-Type", "Cookie", "Date",
		"Etag", "Expect", "Host", "If-Modified-Since", "If-None-Match", "Keep-Alive",
		"Last-Modified", "Location", "Origin", "Referer", "Server", "Set-Cookie", "Te",
		"Trailer", "Transfer-Encoding", "Upgrade", "User-Agent", "Vary", "Via",
		"X-Forwarded-For", "X-Forwarded-Proto", "X-Request-Id", "Traceparent", "Tracestate",
	} {
		k = textproto.CanonicalMIMEHeaderKey(k)
		m[k] = k
		m[strings.ToLower(k)] = k
	}
	return m
}()

// canonicalKey is textproto.CanonicalMIMEHeaderKey of name, without an
// allocation for the common names.
func canonicalKey(name []byte) string {
	if k, ok := commonKeys[string(name)]; ok {
		return k
	}
	return textproto.CanonicalMIMEHeaderKey(string(name))
}

// splitField checks one field line: a token, a colon right after it (no
// whitespace before the colon, RFC 9112 §5.1), and a value of visible
// characters, spaces and tabs only (RFC 9110 §5.5).
func splitField(line []byte, what string) ([]byte, string, error) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		if i < 0 {
			return nil, "", bad(ReasonFieldName, "%s line without a colon: %q", what, clip(line))
		}
		return nil, "", bad(ReasonFieldName, "empty %s field name", what)
	}
	name := line[:i]
	for _, c := range name {
		if !httpguts.IsTokenRune(rune(c)) {
			if c == ' ' || c == '\t' {
				return nil, "", bad(ReasonFieldName, "whitespace between %s field name %q and colon (RFC 9112 §5.1)", what, clip(bytes.TrimRight(name, " \t")))
			}
			return nil, "", bad(ReasonFieldName, "invalid character %q in %s field name %q", c, what, clip(name))
		}
	}
	v := bytes.Trim(line[i+1:], " \t")
	for _, c := range v {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return nil, "", bad(ReasonFieldValue, "control character %q in the value of %s field %s", c, what, clip(name))
		}
	}
	return name, string(v), nil
}

func clip(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}

// Framing is the body length a head announces.
type Framing struct {
	Chunked bool
	Length  int64 // -1: none announced
}

// parseFraming applies RFC 9112 §6: exactly one of a single Content-Length
// of digits or a Transfer-Encoding of exactly "chunked"; both together are
// refused (§6.1: a possible smuggling attempt), as is any other coding.
func parseFraming(h http.Header, protoMinor int) (Framing, error) {
	f := Framing{Length: -1}
	te, hasTE := h["Transfer-Encoding"]
	cl, hasCL := h["Content-Length"]
	if hasTE && hasCL {
		return f, bad(ReasonTEAndCL, "both Transfer-Encoding and Content-Length (RFC 9112 §6.1)")
	}
	if hasTE {
		if protoMinor == 0 {
			return f, bad(ReasonTransferEncoding, "Transfer-Encoding in an HTTP/1.0 message (RFC 9112 §6.1)")
		}
		if err := checkTE(te); err != nil {
			return f, err
		}
		f.Chunked = true
		return f, nil
	}
	if hasCL {
		if len(cl) != 1 {
			return f, bad(ReasonContentLength, "%d Content-Length fields", len(cl))
		}
		n, ok := parseLength(cl[0])
		if !ok {
			return f, bad(ReasonContentLength, "invalid Content-Length %q", clip([]byte(cl[0])))
		}
		f.Length = n
	}
	return f, nil
}

func checkTE(te []string) error {
	if len(te) != 1 {
		return bad(ReasonTransferEncoding, "%d Transfer-Encoding fields", len(te))
	}
	codings := strings.Split(te[0], ",")
	last := strings.TrimSpace(codings[len(codings)-1])
	if !strings.EqualFold(last, "chunked") {
		// The body length cannot be determined (RFC 9112 §6.3).
		return bad(ReasonTransferEncoding, "Transfer-Encoding %q does not end in chunked", clip([]byte(te[0])))
	}
	if len(codings) > 1 {
		for _, c := range codings[:len(codings)-1] {
			c = strings.TrimSpace(c)
			if c == "" || strings.EqualFold(c, "chunked") {
				return bad(ReasonTransferEncoding, "invalid Transfer-Encoding %q", clip([]byte(te[0])))
			}
		}
		// A coding we would have to undo to stay transparent (RFC 9112
		// §6.1: 501 for a coding the server does not understand).
		return &Error{Status: http.StatusNotImplemented, Reason: ReasonUnsupportedTE,
			Msg: fmt.Sprintf("Transfer-Encoding %q is not supported (only chunked)", clip([]byte(te[0])))}
	}
	return nil
}

// parseLength parses 1*DIGIT without sign, spaces or overflow.
func parseLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// ReadRequestHead reads a request head from br. It returns the request
// (Body unset), its framing, or an *Error; other errors are I/O errors.
func ReadRequestHead(br *bufio.Reader, lim Limits) (*http.Request, Framing, error) {
	lim = lim.withDefaults()
	lr := &lineReader{br: br, budget: lim.MaxHeadBytes, tooBig: func() *Error {
		return &Error{Status: http.StatusRequestHeaderFieldsTooLarge, Reason: ReasonHeadTooLarge,
			Msg: fmt.Sprintf("request head larger than %d bytes", lim.MaxHeadBytes)}
	}}
	var line []byte
	var err error
	// RFC 9112 §2.2: ignore a few empty lines before the request line.
	for range 4 {
		if line, err = lr.line(); err != nil || len(line) > 0 {
			break
		}
	}
	if err != nil {
		return nil, Framing{}, err
	}
	req, err := parseRequestLine(string(line))
	if err != nil {
		return nil, Framing{}, err
	}
	if err := readFields(lr, req.Header, lim.MaxFields, "header"); err != nil {
		return nil, Framing{}, err
	}
	if err := checkHost(req); err != nil {
		return nil, Framing{}, err
	}
	f, err := parseFraming(req.Header, req.ProtoMinor)
	if err != nil {
		return nil, Framing{}, err
	}
	if err := checkExpect(req); err != nil {
		return nil, Framing{}, err
	}
	req.Close = shouldClose(req.ProtoMinor, req.Header)
	if f.Chunked {
		req.TransferEncoding = []string{"chunked"}
		req.ContentLength = -1
		delete(req.Header, "Transfer-Encoding")
		declareTrailers(req)
	} else if f.Length > 0 {
		req.ContentLength = f.Length
	}
	return req, f, nil
}

func parseRequestLine(line string) (*http.Request, error) {
	method, rest, ok1 := strings.Cut(line, " ")
	target, version, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || method == "" || target == "" {
		return nil, bad(ReasonStartLine, "malformed request line %q", clip([]byte(line)))
	}
	for i := 0; i < len(method); i++ {
		if !httpguts.IsTokenRune(rune(method[i])) {
			return nil, bad(ReasonStartLine, "invalid method %q", clip([]byte(method)))
		}
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c >= 0x7f {
			return nil, bad(ReasonStartLine, "invalid character %q in request target", c)
		}
	}
	minor, err := parseVersion(version)
	if err != nil {
		return nil, err
	}
	req := &http.Request{
		Method: method, RequestURI: target, Proto: version, ProtoMajor: 1, ProtoMinor: minor,
		Header: make(http.Header),
	}
	if req.URL, err = parseTarget(method, target); err != nil {
		return nil, err
	}
	return req, nil
}

func parseVersion(v string) (int, error) {
	switch v {
	case "HTTP/1.1":
		return 1, nil
	case "HTTP/1.0":
		return 0, nil
	}
	if len(v) == 8 && strings.HasPrefix(v, "HTTP/") && v[6] == '.' && isDigit(v[5]) && isDigit(v[7]) {
		return 0, &Error{Status: http.StatusHTTPVersionNotSupported, Reason: ReasonVersion, Msg: "unsupported version " + v}
	}
	return 0, bad(ReasonStartLine, "malformed HTTP version %q", clip([]byte(v)))
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// parseTarget accepts the four request-target forms of RFC 9112 §3.2.
func parseTarget(method, target string) (*url.URL, error) {
	if method == http.MethodConnect {
		if strings.HasPrefix(target, "/") {
			return nil, bad(ReasonStartLine, "CONNECT needs an authority-form target, got %q", clip([]byte(target)))
		}
		u, err := url.Parse("http://" + target)
		if err != nil || u.Host != target {
			return nil, bad(ReasonStartLine, "invalid CONNECT target %q", clip([]byte(target)))
		}
		return &url.URL{Host: target}, nil
	}
	if target == "*" {
		if method != http.MethodOptions {
			return nil, bad(ReasonStartLine, "asterisk-form target with %s", method)
		}
		return &url.URL{Path: "*"}, nil
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil, bad(ReasonStartLine, "invalid request target %q", clip([]byte(target)))
	}
	if !strings.HasPrefix(target, "/") && u.Host == "" {
		return nil, bad(ReasonStartLine, "invalid request target %q", clip([]byte(target)))
	}
	return u, nil
}

// checkHost enforces RFC 9112 §3.2: exactly one valid Host in HTTP/1.1, at
// most one in HTTP/1.0; an absolute-form target's authority wins.
func checkHost(req *http.Request) error {
	hosts := req.Header["Host"]
	switch {
	case len(hosts) > 1:
		return bad(ReasonHost, "%d Host fields", len(hosts))
	case len(hosts) == 0 && req.ProtoMinor == 1:
		return bad(ReasonHost, "missing Host field (RFC 9112 §3.2)")
	case len(hosts) == 1:
		if !httpguts.ValidHostHeader(hosts[0]) {
			return bad(ReasonHost, "invalid Host %q", clip([]byte(hosts[0])))
		}
		req.Host = hosts[0]
	}
	delete(req.Header, "Host")
	if req.URL.Host != "" && req.Method != http.MethodConnect {
		req.Host = req.URL.Host
	} else if req.Method == http.MethodConnect {
		req.Host = req.URL.Host
	}
	return nil
}

// checkExpect refuses expectations other than 100-continue (RFC 9110
// §10.1.1). Expect stays in the header: the app decides on the continue.
func checkExpect(req *http.Request) error {
	ex, ok := req.Header["Expect"]
	if !ok {
		return nil
	}
	if len(ex) == 1 && strings.EqualFold(ex[0], "100-continue") {
		return nil
	}
	return &Error{Status: http.StatusExpectationFailed, Reason: ReasonExpectation,
		Msg: fmt.Sprintf("unsupported expectation %q", clip([]byte(strings.Join(ex, ", "))))}
}

func shouldClose(minor int, h http.Header) bool {
	if httpguts.HeaderValuesContainsToken(h["Connection"], "close") {
		return true
	}
	return minor == 0 && !httpguts.HeaderValuesContainsToken(h["Connection"], "keep-alive")
}

// declareTrailers prepares req.Trailer with the fields the Trailer header
// announces (values arrive after the body, as with net/http).
func declareTrailers(req *http.Request) {
	for _, v := range req.Header["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			k = textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(k))
			if k == "" || forbiddenTrailer(k) {
				continue
			}
			if req.Trailer == nil {
				req.Trailer = make(http.Header)
			}
			req.Trailer[k] = nil
		}
	}
	delete(req.Header, "Trailer")
}

// forbiddenTrailer: fields that frame or route a message (RFC 9110 §6.5.1),
// and the mesh's own trellis-* fields, which only proxies set and only as
// headers.
func forbiddenTrailer(k string) bool {
	switch k {
	case "Content-Length", "Transfer-Encoding", "Host", "Trailer":
		return true
	}
	return len(k) >= len("Trellis-") && strings.EqualFold(k[:len("Trellis-")], "Trellis-")
}
