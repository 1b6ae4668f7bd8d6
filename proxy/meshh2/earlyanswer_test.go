package meshh2

import (
	"io"
	"net/http"
	"testing"
	"time"
)

// blockedBody is a request body whose first Read blocks until Close: a
// body held back for a 100 Continue that never comes, or a client that
// has not sent more yet.
type blockedBody struct{ closed chan struct{} }

func (b *blockedBody) Read([]byte) (int, error) {
	<-b.closed
	return 0, io.ErrClosedPipe
}

func (b *blockedBody) Close() error {
	select {
	case <-b.closed:
	default:
		close(b.closed)
	}
	return nil
}

// TestEarlyAnswerReleasesRequestBody: a server that answers before it has
// read the request body (413 to an upload, a refusal of an Expect:
// 100-continue request) must not leave the client's body writer blocked
// forever: once the response is read and closed, the request body is
// closed and the stream leaves the connection, freeing its slot.
func TestEarlyAnswerReleasesRequestBody(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		_, _ = io.WriteString(w, "too large\n")
	})
	forPairs(t, h, func(t *testing.T, c client, s *server) {
		body := &blockedBody{closed: make(chan struct{})}
		req := newReq(t, t.Context(), "POST", s.addr, "/upload", body)
		req.ContentLength = -1
		start := time.Now()
		resp, err := c.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if _, err := io.ReadAll(resp.Body); err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		within(t, 10*time.Second, "the request body closed after an early answer", body.closed)
		t.Logf("request body closed %v after the request started", time.Since(start))
	})
}
