package meshh2

import (
	"errors"
	"net/http"
	"strconv"

	"golang.org/x/net/http2/hpack"
)

var (
	errConnSpecific  = errors.New("meshh2: connection-specific header field")
	errTENotTrailers = errors.New(`meshh2: te header field other than "trailers"`)
)

// checkRequestFields rejects the fields RFC 9113 section 8.2.2 makes a
// request malformed: connection-specific fields, and TE other than
// "trailers". The framer has already refused upper-case and invalid names
// and misplaced, unknown or duplicate pseudo-fields.
func checkRequestFields(fields []hpack.HeaderField) error {
	for _, f := range fields {
		switch f.Name {
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
			return errConnSpecific
		case "te":
			if f.Value != "trailers" {
				return errTENotTrailers
			}
		}
	}
	return nil
}

// statusLines holds Response.Status for the codes net/http names, built
// once and only read, so a response's status costs no allocation.
var statusLines = func() (t [600]string) {
	for code := range t {
		if text := http.StatusText(code); text != "" {
			t[code] = strconv.Itoa(code) + " " + text
		}
	}
	return t
}()

// statusLine is "200 OK" for 200, and "799 " for a code without a name
// (as net/http's transports write it).
func statusLine(code int) string {
	if code >= 0 && code < len(statusLines) && statusLines[code] != "" {
		return statusLines[code]
	}
	return strconv.Itoa(code) + " " + http.StatusText(code)
}

// contentLength returns the declared content-length of h, -1 when there
// is none; ok is false when it is malformed (not one non-negative
// decimal), which makes the message malformed (RFC 9110 section 8.6).
func contentLength(h http.Header) (n int64, ok bool) {
	vv, present := h["Content-Length"]
	if !present {
		return -1, true
	}
	if len(vv) != 1 || vv[0] == "" || vv[0][0] == '+' || vv[0][0] == '-' {
		return 0, false
	}
	n, err := strconv.ParseInt(vv[0], 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}
