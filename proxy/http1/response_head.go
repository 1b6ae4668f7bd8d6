package http1

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// ReadResponse reads a response to req from br with the same strict rules as
// requests (an *Error with Status 502 for a malformed response). Its body
// is framed by RFC 9112 §6.3: none for HEAD, 1xx, 204 and 304; a single
// Content-Length; chunked (decoded strictly, trailers into resp.Trailer);
// else until the connection closes.
func ReadResponse(br *bufio.Reader, req *http.Request, lim Limits) (*http.Response, error) {
	lim = lim.withDefaults()
	lr := &lineReader{br: br, budget: lim.MaxHeadBytes, tooBig: func() *Error {
		return &Error{Status: http.StatusBadGateway, Reason: ReasonHeadTooLarge,
			Msg: fmt.Sprintf("response head larger than %d bytes", lim.MaxHeadBytes)}
	}}
	line, err := lr.line()
	if err != nil {
		return nil, asBadGateway(err)
	}
	resp, err := parseStatusLine(string(line))
	if err != nil {
		return nil, err
	}
	resp.Request = req
	if err := readFields(lr, resp.Header, lim.MaxFields, "response header"); err != nil {
		return nil, asBadGateway(err)
	}
	f, err := parseFraming(resp.Header, resp.ProtoMinor)
	if err != nil {
		return nil, asBadGateway(err)
	}
	if resp.StatusCode < 200 {
		if f.Chunked {
			delete(resp.Header, "Transfer-Encoding")
		}
		resp.Body = http.NoBody
		return resp, nil
	}
	resp.Close = shouldClose(resp.ProtoMinor, resp.Header)
	noBody := req.Method == http.MethodHead || !bodyAllowed(resp.StatusCode)
	setResponseBody(resp, br, f, noBody, lim)
	if !bodyAllowed(resp.StatusCode) {
		resp.ContentLength = 0 // as net/http: no body, whatever was announced
	}
	return resp, nil
}

func setResponseBody(resp *http.Response, br *bufio.Reader, f Framing, noBody bool, lim Limits) {
	resp.ContentLength = f.Length
	switch {
	case f.Chunked:
		delete(resp.Header, "Transfer-Encoding")
		resp.TransferEncoding = []string{"chunked"}
		resp.ContentLength = -1
		if noBody {
			break
		}
		resp.Body = io.NopCloser(newChunkedReader(br, lim, func(h http.Header) {
			if resp.Trailer == nil {
				resp.Trailer = make(http.Header, len(h))
			}
			for k, vv := range h {
				resp.Trailer[k] = vv
			}
		}))
		return
	case f.Length >= 0:
		if !noBody && f.Length > 0 {
			resp.Body = io.NopCloser(&lengthReader{r: br, left: f.Length})
			return
		}
	case !noBody:
		// Delimited by the end of the connection.
		resp.Close = true
		resp.Body = io.NopCloser(br)
		return
	}
	resp.Body = http.NoBody
}

func asBadGateway(err error) error {
	if e, ok := err.(*Error); ok {
		e.Status = http.StatusBadGateway
	}
	return err
}

func parseStatusLine(line string) (*http.Response, error) {
	version, rest, _ := strings.Cut(line, " ")
	code, reason, _ := strings.Cut(rest, " ")
	var minor int
	switch version {
	case "HTTP/1.1":
		minor = 1
	case "HTTP/1.0":
	default:
		return nil, &Error{Status: http.StatusBadGateway, Reason: ReasonStartLine, Msg: fmt.Sprintf("malformed status line %q", clip([]byte(line)))}
	}
	status, err := strconv.Atoi(code)
	if len(code) != 3 || err != nil || status < 100 {
		return nil, &Error{Status: http.StatusBadGateway, Reason: ReasonStartLine, Msg: fmt.Sprintf("malformed status code %q", clip([]byte(code)))}
	}
	for i := 0; i < len(reason); i++ {
		if c := reason[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return nil, &Error{Status: http.StatusBadGateway, Reason: ReasonStartLine, Msg: "control character in reason phrase"}
		}
	}
	return &http.Response{
		Status: code + " " + reason, StatusCode: status,
		Proto: version, ProtoMajor: 1, ProtoMinor: minor,
		Header: make(http.Header),
	}, nil
}

// lengthReader reads exactly left bytes; an early end is a truncation.
type lengthReader struct {
	r    io.Reader
	left int64
}

func (l *lengthReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if err != nil {
		return n, truncated(err)
	}
	if l.left == 0 {
		return n, io.EOF
	}
	return n, nil
}
