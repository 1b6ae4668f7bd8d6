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
