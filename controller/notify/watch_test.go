package notify

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// state is a versioned value behind a topic, as an informer cache is.
type state struct {
	mu      sync.Mutex
	version int
	n       *Topics
	// acquired and released count channels taken and given back.
	acquired, released atomic.Int64
}

func (s *state) set(v int) {
	s.mu.Lock()
	s.version = v
	s.mu.Unlock()
	s.n.Notify("k")
}

func (s *state) resolve() (int, <-chan struct{}, func()) {
	ch, rel := s.n.Acquire("k") // before the read, as every Resolve must
	s.acquired.Add(1)
	s.mu.Lock()
	v := s.version
	s.mu.Unlock()
	return v, ch, func() { s.released.Add(1); rel() }
}

const ceiling = 30 * time.Second

// startWatch runs Watch, calling send for every changed version; the
// channel gets its result.
func startWatch(ctx context.Context, done <-chan struct{}, s *state, send func(v int) error) chan error {
	errc := make(chan error, 1)
	go func() {
		errc <- Watch(ctx, done, s.resolve, func(prev, next int, first bool) error {
			if !first && prev == next {
				return nil
			}
			return send(next)
		})
	}()
	return errc
}

// A burst of updates may be coalesced, but the last one always arrives,
// and versions only move forward.
func TestWatchBurstMissesNothing(t *testing.T) {
	for _, burst := range []int{1, 10, 1000, 20000} {
		s := &state{n: NewTopics()}
		ctx, cancel := context.WithCancel(context.Background())
		got := make(chan int, 1)
		var last atomic.Int64
		errc := startWatch(ctx, nil, s, func(v int) error {
			if int64(v) < last.Load() {
				t.Errorf("burst %d: version went back from %d to %d", burst, last.Load(), v)
			}
			last.Store(int64(v))
			// Keep only the newest: drop what the reader has not taken yet.
			// The drop must not block: the reader may take it first (a
			// blocking <-got then waited forever, and the test timed out
			// under load, as if the update were lost).
			select {
			case got <- v:
			default:
				select {
				case <-got:
				default:
				}
				got <- v
			}
			return nil
		})
		for i := 1; i <= burst; i++ {
			s.set(i)
		}
		start := time.Now()
		deadline := time.After(ceiling)
	wait:
		for {
			select {
			case v := <-got:
				if v == burst {
					break wait
				}
			case <-deadline:
				t.Fatalf("burst %d: last version never sent (stream at %d)", burst, last.Load())
			}
		}
		t.Logf("burst %d: last version arrived %v after the burst", burst, time.Since(start))
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("burst %d: Watch returned %v, want context.Canceled", burst, err)
		}
		if a, r := s.acquired.Load(), s.released.Load(); a != r || s.n.Len() != 0 {
			t.Errorf("burst %d: %d channels acquired, %d released, %d topics left", burst, a, r, s.n.Len())
		}
	}
}

// A stream whose client does not read (its send blocks) holds up neither
// the notifier nor the other streams of the same topic.
func TestWatchStalledStreamBlocksNoOne(t *testing.T) {
	s := &state{n: NewTopics()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stall := make(chan struct{})
	stalledSent := make(chan struct{}, 1)
	stalledErr := startWatch(ctx, nil, s, func(int) error {
		stalledSent <- struct{}{}
		<-stall // a client that never reads
		return nil
	})
	<-stalledSent // its first answer is being sent: it is stuck there now

	const others, updates = 5, 200
	var wg sync.WaitGroup
	for i := range others {
		seen := make(chan int, 1)
		startWatch(ctx, nil, s, func(v int) error {
			select {
			case seen <- v:
			default:
				<-seen
				seen <- v
			}
			return nil
		})
		wg.Go(func() {
			deadline := time.After(ceiling)
			for {
				select {
				case v := <-seen:
					if v == updates {
						return
					}
				case <-deadline:
					t.Errorf("stream %d never got version %d while another stream stalled", i, updates)
					return
				}
			}
		})
	}
	start := time.Now()
	for v := 1; v <= updates; v++ {
		s.set(v) // must not block on the stalled stream
	}
	wg.Wait()
	t.Logf("%d streams got the last of %d updates in %v beside a stalled one", others, updates, time.Since(start))
	close(stall)
	cancel()
	if err := <-stalledErr; !errors.Is(err, context.Canceled) {
		t.Errorf("stalled stream: Watch returned %v, want context.Canceled", err)
	}
}

// How a stream ends, and that every channel is released whatever the way.
func TestWatchEnds(t *testing.T) {
	sendErr := errors.New("client gone")
	for _, tc := range []struct {
		name string
		// end ends the stream after its first answer.
		end  func(cancel context.CancelFunc, done chan struct{}, s *state)
		fail bool // the send of the second answer fails
		want error
	}{
		{"client leaves", func(cancel context.CancelFunc, _ chan struct{}, _ *state) { cancel() }, false, context.Canceled},
		{"controller stops", func(_ context.CancelFunc, done chan struct{}, _ *state) { close(done) }, false, ErrShuttingDown},
		{"send fails", func(_ context.CancelFunc, _ chan struct{}, s *state) { s.set(2) }, true, sendErr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &state{n: NewTopics()}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan struct{})
			sent := make(chan int, 4)
			errc := startWatch(ctx, done, s, func(v int) error {
				sent <- v
				if tc.fail && v == 2 {
					return sendErr
				}
				return nil
			})
			if v := <-sent; v != 0 {
				t.Fatalf("first answer %d, want 0", v)
			}
			tc.end(cancel, done, s)
			select {
			case err := <-errc:
				if !errors.Is(err, tc.want) {
					t.Fatalf("Watch returned %v, want %v", err, tc.want)
				}
			case <-time.After(ceiling):
				t.Fatal("stream did not end")
			}
			if a, r := s.acquired.Load(), s.released.Load(); a != r || s.n.Len() != 0 {
				t.Errorf("%d channels acquired, %d released, %d topics left", a, r, s.n.Len())
			}
		})
	}
}

func TestSendChanged(t *testing.T) {
	var sent []int
	send := SendChanged(func(a, b int) bool { return a == b }, func(v int) error { sent = append(sent, v); return nil })
	for _, step := range []struct {
		prev, next int
		first      bool
	}{{0, 0, true}, {0, 0, false}, {0, 1, false}, {1, 1, false}, {1, 0, false}} {
		if err := send(step.prev, step.next, step.first); err != nil {
			t.Fatal(err)
		}
	}
	if want := []int{0, 1, 0}; len(sent) != len(want) || sent[0] != 0 || sent[1] != 1 || sent[2] != 0 {
		t.Errorf("sent %v, want %v (the first answer always, then only changes)", sent, want)
	}
}

// Changes made within the settle time of each other reach the client as
// one answer: a Server and the policy allowing its callers, applied
// together, are never sent as a deny followed by an allow.
func TestWatchSettledCoalesces(t *testing.T) {
	for _, tc := range []struct {
		name   string
		settle time.Duration
		want   []int // the answers after the first
	}{
		{name: "settled: one answer with both changes", settle: time.Second, want: []int{2}},
		{name: "not settled: the first change alone is sent", settle: 0, want: []int{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &state{n: NewTopics()}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			got := make(chan int, 10)
			errc := make(chan error, 1)
			go func() {
				errc <- WatchSettled(ctx, nil, tc.settle, s.resolve, func(prev, next int, first bool) error {
					if !first {
						got <- next
					}
					return nil
				})
			}()
			// The first answer is resolved once the channel is taken.
			for s.acquired.Load() == 0 {
				time.Sleep(time.Millisecond)
			}
			s.set(1)
			if tc.settle == 0 {
				// Without settling, the first change is answered on
				// its own before the second is made.
				if v := <-got; v != 1 {
					t.Fatalf("first change answered as %d", v)
				}
				tc.want = tc.want[1:]
			}
			s.set(2)
			for _, w := range tc.want {
				select {
				case v := <-got:
					if v != w {
						t.Fatalf("answer %d, want %d", v, w)
					}
				case <-time.After(ceiling):
					t.Fatal("no answer")
				}
			}
			cancel()
			<-errc
			select {
			case v := <-got:
				t.Errorf("one answer more: %d", v)
			default:
			}
		})
	}
}
