package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
)

// chunkedReader decodes a chunked body (RFC 9112 §7.1) strictly: a chunk
// size of 1 to 15 hex digits, CRLF only, extensions bounded and free of
// control characters, CRLF right after each chunk's data, and a trailer
// section parsed like a header section. Anything else is an *Error.
type chunkedReader struct {
	br      *bufio.Reader
	lim     Limits
	left    int64 // bytes left in the current chunk
	inChunk bool
	trailer func(http.Header)
	err     error
}

func newChunkedReader(br *bufio.Reader, lim Limits, trailer func(http.Header)) *chunkedReader {
	return &chunkedReader{br: br, lim: lim.withDefaults(), trailer: trailer}
}

func (cr *chunkedReader) Read(p []byte) (int, error) {
	if cr.err != nil {
		return 0, cr.err
	}
	if !cr.inChunk {
		if err := cr.beginChunk(); err != nil {
			cr.err = err
			return 0, err
		}
		if cr.err != nil { // last chunk read
			return 0, cr.err
		}
	}
	if int64(len(p)) > cr.left {
		p = p[:cr.left]
	}
	n, err := cr.br.Read(p)
	cr.left -= int64(n)
	if err != nil {
		cr.err = truncated(err)
		return n, cr.err
	}
	if cr.left == 0 {
		cr.inChunk = false
		if err := cr.crlf(); err != nil {
			cr.err = err
			return n, err
		}
	}
	return n, nil
}

// beginChunk reads a chunk-size line; at the last chunk it reads the
// trailer section and sets cr.err to io.EOF.
func (cr *chunkedReader) beginChunk() error {
	lr := &lineReader{br: cr.br, budget: maxChunkLine, tooBig: func() *Error {
		return bad(ReasonChunk, "chunk-size line longer than %d bytes", maxChunkLine)
	}}
	line, err := lr.line()
	if err != nil {
		return chunkErr(err)
	}
	size, err := parseChunkSize(line)
	if err != nil {
		return err
	}
	if size > 0 {
		cr.left, cr.inChunk = size, true
		return nil
	}
	h := make(http.Header)
	lr = &lineReader{br: cr.br, budget: cr.lim.MaxHeadBytes, tooBig: func() *Error {
		return bad(ReasonTrailer, "trailer section larger than %d bytes", cr.lim.MaxHeadBytes)
	}}
	if err := readFields(lr, h, cr.lim.MaxFields, "trailer"); err != nil {
		return chunkErr(err)
	}
	for k := range h {
		if forbiddenTrailer(k) {
			return bad(ReasonTrailer, "%s is not allowed in a trailer section", k)
		}
	}
	if len(h) > 0 && cr.trailer != nil {
		cr.trailer(h)
	}
	cr.err = io.EOF
	return nil
}

// chunkErr keeps *Errors and turns an early end into a truncation.
func chunkErr(err error) error {
	var e *Error
	if errors.As(err, &e) {
		if e.Reason == ReasonBareLF || e.Reason == ReasonBareCR {
			e.Reason = ReasonChunk
			e.Msg = "chunked body: " + e.Msg
		}
		return e
	}
	return truncated(err)
}

func truncated(err error) error {
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		return &Error{Status: http.StatusBadRequest, Reason: ReasonTruncated, Msg: "body ended before its declared length", Err: io.ErrUnexpectedEOF}
	}
	return err
}

// parseChunkSize parses "1*HEXDIG [ext]" where ext is *(BWS ";" ...).
func parseChunkSize(line []byte) (int64, error) {
	i := 0
	var n int64
	for ; i < len(line); i++ {
		v, ok := unhex(line[i])
		if !ok {
			break
		}
		if i >= 15 { // 2^60: no overflow, and no body is that large
			return 0, bad(ReasonChunk, "chunk size %q too large", clip(line))
		}
		n = n<<4 | int64(v)
	}
	if i == 0 {
		return 0, bad(ReasonChunk, "invalid chunk size line %q", clip(line))
	}
	ext := bytes.TrimLeft(line[i:], " \t")
	if len(ext) == 0 {
		if i < len(line) {
			return 0, bad(ReasonChunk, "whitespace after chunk size without extension")
		}
		return n, nil
	}
	if ext[0] != ';' {
		return 0, bad(ReasonChunk, "invalid chunk size line %q", clip(line))
	}
	for _, c := range ext {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return 0, bad(ReasonChunk, "control character %q in chunk extension", c)
		}
	}
	return n, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// crlf reads the CRLF that ends a chunk's data.
func (cr *chunkedReader) crlf() error {
	var b [2]byte
	if _, err := io.ReadFull(cr.br, b[:]); err != nil {
		return truncated(err)
	}
	if b[0] != '\r' || b[1] != '\n' {
		return bad(ReasonChunk, "chunk data not followed by CRLF")
	}
	return nil
}
