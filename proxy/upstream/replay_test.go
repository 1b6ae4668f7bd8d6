package upstream

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/retry"
)

// A request the peer proves unprocessed is replayed from the bytes kept
// and the rest of the client's body, whatever the first attempt's sender
// had read when the answer came: nothing, part, all of it, or a read still
// blocked on the client. The first sender reads no more once replaced.
func TestKeptBodyReplay(t *testing.T) {
	for _, tc := range []struct {
		name      string
		firstRead int  // bytes the first attempt reads before the replay
		blocked   bool // the first attempt's sender is blocked reading when the replay starts
		ended     bool // the client's body ended before the replay
	}{
		{name: "nothing read yet (the peer answered the headers)"},
		{name: "part read, the client still sending", firstRead: 4},
		{name: "all read, end not yet seen", firstRead: 7},
		{name: "all read and ended", firstRead: 7, ended: true},
		{name: "sender blocked on the client when the replay starts", firstRead: 7, blocked: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr, pw := io.Pipe()
			bound := retry.NewBytes(1 << 20)
			k := newKeptBody(pr, bound, nil)
			go func() { _, _ = pw.Write([]byte("message")) }()
			first := k.reader()
			readN(t, first, tc.firstRead)
			sender := make(chan error, 1)
			switch {
			case tc.ended:
				_ = pw.Close()
				if n, err := first.Read(make([]byte, 8)); n != 0 || err != io.EOF {
					t.Fatalf("first attempt's last read: %d, %v", n, err)
				}
			case tc.blocked:
				go func() {
					_, err := first.Read(make([]byte, 8))
					sender <- err
				}()
				waitInflight(t, k)
			}
			if !k.replayable() {
				t.Fatal("not replayable")
			}
			second := k.reader()
			if !tc.ended {
				go func() {
					time.Sleep(10 * time.Millisecond)
					_, _ = pw.Write([]byte(" more"))
					_ = pw.Close()
				}()
			}
			b, err := io.ReadAll(second)
			want := "message"
			if !tc.ended {
				want = "message more"
			}
			if err != nil || string(b) != want {
				t.Fatalf("replayed body %q, %v; want %q", b, err, want)
			}
			if tc.blocked {
				if err := <-sender; !errors.Is(err, errBodyReplaced) {
					t.Fatalf("replaced sender's blocked read: %v, want errBodyReplaced", err)
				}
			}
			if _, err := first.Read(make([]byte, 8)); !errors.Is(err, errBodyReplaced) {
				t.Fatalf("replaced sender read again: %v", err)
			}
			bound.Release(k.drop())
			if bound.Used() != 0 {
				t.Fatalf("%d bytes of the bound held after the request", bound.Used())
			}
		})
	}
}

// A body that was not kept whole, or whose client failed, is not replayed.
func TestKeptBodyNotReplayable(t *testing.T) {
	for _, tc := range []struct {
		name  string
		body  io.Reader
		bound int64
	}{
		{"over 64 KiB", strings.NewReader(strings.Repeat("x", maxReplayBody+1)), 1 << 20},
		{"over the bound on bytes kept", strings.NewReader(strings.Repeat("x", 1000)), 100},
		{"the client's body failed", io.MultiReader(strings.NewReader("part"), errReader{}), 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bound := retry.NewBytes(tc.bound)
			m, err := metrics.New(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			k := newKeptBody(io.NopCloser(tc.body), bound, m)
			_, _ = io.Copy(io.Discard, k.reader())
			if k.replayable() {
				t.Fatal("replayable")
			}
			bound.Release(k.drop())
			if bound.Used() != 0 {
				t.Fatalf("%d bytes of the bound held", bound.Used())
			}
		})
	}
}

// The request's end releases a sender still blocked on the client's body.
func TestKeptBodyDropUnblocksSender(t *testing.T) {
	pr, _ := io.Pipe()
	k := newKeptBody(pr, retry.NewBytes(1<<20), nil)
	done := make(chan error, 1)
	go func() {
		_, err := k.reader().Read(make([]byte, 8))
		done <- err
	}()
	waitInflight(t, k)
	k.drop()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("blocked read returned no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sender still blocked after the request ended")
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("client reset") }

func readN(t *testing.T, r io.Reader, n int) {
	t.Helper()
	if n == 0 {
		return
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
}

func waitInflight(t *testing.T, k *keptBody) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		k.mu.Lock()
		in := k.inflight
		k.mu.Unlock()
		if in {
			return
		}
	}
	t.Fatal("the sender never started its read")
}

// A stream whose client waits for an answer before it sends more: the
// replay gets the bytes kept at once, while the replaced sender is still
// blocked reading the client; the client's next message then reaches the
// replay, even when it takes the body past what can be kept.
func TestKeptBodyReplayOfWaitingStream(t *testing.T) {
	for _, tc := range []struct {
		name     string
		first    int // bytes of the client's first message
		next     int // of its next one, sent once it has an answer
		replayOK bool
	}{
		{"small messages", 7, 5, true},
		{"the next message passes 64 KiB", 60 << 10, 8 << 10, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr, pw := io.Pipe()
			defer pw.Close()
			bound := retry.NewBytes(1 << 20)
			m, err := metrics.New(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			k := newKeptBody(pr, bound, m)
			first := bytes.Repeat([]byte("a"), tc.first)
			next := bytes.Repeat([]byte("b"), tc.next)
			go func() { _, _ = pw.Write(first) }()
			old := k.reader()
			readN(t, old, tc.first)
			sender := make(chan error, 1)
			go func() {
				_, err := old.Read(make([]byte, 32<<10))
				sender <- err
			}()
			waitInflight(t, k)
			replay := k.reader()
			got := make([]byte, tc.first)
			if _, err := io.ReadFull(replay, got); err != nil || !bytes.Equal(got, first) {
				t.Fatalf("replay's first message: %v (the client has not sent more)", err)
			}
			// The client has its answer and sends the next message.
			go func() { _, _ = pw.Write(next) }()
			got = make([]byte, tc.next)
			if _, err := io.ReadFull(replay, got); err != nil || !bytes.Equal(got, next) {
				t.Fatalf("replay's next message: %v", err)
			}
			if err := <-sender; !errors.Is(err, errBodyReplaced) {
				t.Fatalf("the replaced sender read %v", err)
			}
			if k.replayable() != tc.replayOK {
				t.Fatalf("replayable after %d bytes = %v, want %v", tc.first+tc.next, !tc.replayOK, tc.replayOK)
			}
			bound.Release(k.drop())
			if bound.Used() != 0 {
				t.Fatalf("%d bytes of the bound held after the request", bound.Used())
			}
		})
	}
}

// srcBody is a client body that can tell what a read would get (Buffered).
type srcBody struct {
	*strings.Reader
	end bool // the body ends after what it holds
}

func (b *srcBody) Close() error          { return nil }
func (b *srcBody) Buffered() (int, bool) { return b.Len(), b.end }

// A kept body answers Buffered for the attempt reading it: the copy's
// bytes it has yet to get, else the client body's own answer.
func TestKeptBodyBuffered(t *testing.T) {
	src := &srcBody{Reader: strings.NewReader("message"), end: true}
	k := newKeptBody(src, retry.NewBytes(1<<20), nil)
	first := k.reader().(*keptReader)
	check := func(what string, r *keptReader, wantN int, wantEnd bool) {
		t.Helper()
		if n, end := r.Buffered(); n != wantN || end != wantEnd {
			t.Errorf("%s: Buffered() = %d, %v; want %d, %v", what, n, end, wantN, wantEnd)
		}
	}
	check("before any read: the client's body", first, 7, true)
	readN(t, first, 4)
	check("part read: the rest of the client's body", first, 3, true)
	second := k.reader().(*keptReader)
	check("a replaced attempt", first, 0, true)
	check("the replay: the copy's bytes first", second, 4, false)
	readN(t, second, 4)
	check("the replay, past the copy", second, 3, true)
	readN(t, second, 3)
	if n, err := second.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("last read: %d, %v", n, err)
	}
	check("at the end", second, 0, true)
}
