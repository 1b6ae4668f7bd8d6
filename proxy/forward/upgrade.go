package forward

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/proxy/http1"
)

// maxInterim bounds the 1xx answers skipped before an upgrade's final one.
const maxInterim = 8

// SendUpgrade writes the HTTP/1 Upgrade request req on c, a connection
// dedicated to it, and reads the head of the answer with the strict parser.
// Unlike Request.Write it adds nothing the caller did not send (no
// User-Agent) and keeps the caller's Connection field, which names the
// upgrade. Interim answers other than 101 are skipped. A 101's bytes past
// its head (a server-first protocol) are left in the returned reader; any
// other answer is an ordinary response whose body reads from it, after
// which c must be closed: it never carries a second request.
func SendUpgrade(ctx context.Context, c net.Conn, req *http.Request) (*http.Response, *bufio.Reader, error) {
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	bw := bufio.NewWriter(c)
	hasBody := req.Body != nil && req.Body != http.NoBody
	chunked := hasBody && req.ContentLength < 0
	if err := writeHeadConn(bw, req, hasBody, chunked, true); err != nil {
		return nil, nil, err
	}
	if hasBody {
		if err := writeBody(bw, req, chunked); err != nil {
			return nil, nil, err
		}
	}
	if err := bw.Flush(); err != nil {
		return nil, nil, err
	}
	br := bufio.NewReader(c)
	for range maxInterim {
		resp, err := http1.ReadResponse(br, req, http1.Limits{})
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			return nil, nil, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, br, nil
		}
	}
	return nil, nil, &http1.Error{Status: http.StatusBadGateway, Reason: "too_many_interim",
		Msg: fmt.Sprintf("more than %d interim responses to an upgrade", maxInterim)}
}

// WriteSwitching writes a 101 answer's head to the caller as the upstream
// sent it (its trellis-* fields excepted) and then the bytes already read
// past it.
func WriteSwitching(w io.Writer, resp *http.Response, br *bufio.Reader) error {
	bw := bufio.NewWriter(w)
	_, _ = bw.WriteString("HTTP/1.1 ")
	_, _ = bw.WriteString(resp.Status)
	_, _ = bw.WriteString("\r\n")
	for k, vv := range resp.Header {
		if IsMesh(k) {
			continue
		}
		for _, v := range vv {
			_, _ = bw.WriteString(k)
			_, _ = bw.WriteString(": ")
			_, _ = bw.WriteString(strings.TrimSpace(v))
			_, _ = bw.WriteString("\r\n")
		}
	}
	_, _ = bw.WriteString("\r\n")
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		_, _ = bw.Write(b)
		_, _ = br.Discard(n)
	}
	return bw.Flush()
}

// FlushBuffered sends dst the bytes an HTTP server already read past the
// request it hijacked the connection for.
func FlushBuffered(brw *bufio.ReadWriter, dst net.Conn) bool {
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		if _, err := dst.Write(b); err != nil {
			return false
		}
	}
	return true
}

// RelayDeclined writes an upstream's final answer to an Upgrade request that
// was not switched, then closes upstream, which carried nothing else. The
// error is WriteResponse's. The body is read only while ctx (the caller) is
// there: an upstream that stops sending mid-body must not hold the
// connection once the caller has gone.
func RelayDeclined(ctx context.Context, w http.ResponseWriter, upstream net.Conn, resp *http.Response) error {
	stop := context.AfterFunc(ctx, func() { _ = upstream.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	defer upstream.Close()
	_, err := WriteResponse(w, resp)
	_ = resp.Body.Close()
	return err
}
