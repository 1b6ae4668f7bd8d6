package upstream

import (
	"io"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/proxy/retry"
)

// The answer proving a request unprocessed can come before the sender's
// last read of the body (its EOF): the replay decision waits a little for
// it, and a body that does not end is not replayed.
func TestKeptBodyWhole(t *testing.T) {
	for _, tc := range []struct {
		name   string
		endsIn time.Duration // < 0: the body never ends
		want   bool
	}{
		{"ended before the decision", 0, true},
		{"ends shortly after the decision", 20 * time.Millisecond, true},
		{"never ends", -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr, pw := io.Pipe()
			k := newKeptBody(pr, retry.NewBytes(1<<20), nil)
			go func() { _, _ = pw.Write([]byte("message")) }()
			buf := make([]byte, 64)
			if n, err := k.Read(buf); err != nil || string(buf[:n]) != "message" {
				t.Fatalf("first read: %q, %v", buf[:n], err)
			}
			// The sender's next read sees the end when the client sends it.
			sender := make(chan struct{})
			go func() {
				defer close(sender)
				_, _ = k.Read(buf)
			}()
			switch {
			case tc.endsIn == 0:
				_ = pw.Close()
				<-sender
			case tc.endsIn > 0:
				time.AfterFunc(tc.endsIn, func() { _ = pw.Close() })
			}
			b, _, ok := k.whole()
			if ok != tc.want || (ok && string(b) != "message") {
				t.Fatalf("whole() = %q, %v; want the message: %v", b, ok, tc.want)
			}
			_ = pw.Close()
			<-sender
		})
	}
}
