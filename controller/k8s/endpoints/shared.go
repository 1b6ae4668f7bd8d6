package endpoints

import (
	"strconv"
	"sync"

	"github.com/trellis-mesh/trellis/controller/destination"
	"github.com/trellis-mesh/trellis/controller/notify"
)

// answers shares one immutable Resolution among every stream that asks the
// same question while nothing it depends on has changed. Streams hold a
// reference to the shared answer and diff against it; nothing writes to it
// after it is computed. Without this, 1,000 proxies watching one Service held
// 1,000 copies of its endpoints (bench/ctrlscale: ~36 MB of 144 MB live).
//
// An answer is valid for as long as the topic channel it was computed under
// stays open: Topics hands every waiter the same channel until a
// notification closes it, and the answer is computed only after the channel
// was taken, so a joiner holding the same channel sees an answer no older
// than its own Acquire. Entries live while some stream holds them, so names
// nobody asks about any more (or never existed) cost nothing.
type answers struct {
	mu sync.Mutex
	m  map[string]*answer
}

type answer struct {
	ch   <-chan struct{}
	refs int
	once sync.Once
	res  destination.Resolution
}

func newAnswers() *answers { return &answers{m: map[string]*answer{}} }

// get returns the answer of topic for (hostname, port), computing it with
// resolve at most once per topic channel, plus the topic's channel and a
// release func (idempotent).
func (a *answers) get(n *notify.Topics, topic, hostname string, port uint32, resolve func() destination.Resolution) (destination.Resolution, <-chan struct{}, func()) {
	ch, release := n.Acquire(topic)
	key := topic + "|" + hostname + "|" + strconv.FormatUint(uint64(port), 10)
	a.mu.Lock()
	e := a.m[key]
	if e == nil || e.ch != ch {
		// First asker since the last change: a new entry. The older one, if
		// any, stays with the streams still holding it until they resolve
		// again.
		e = &answer{ch: ch}
		a.m[key] = e
	}
	e.refs++
	a.mu.Unlock()
	// Concurrent askers of one entry wait for one computation, not one each.
	e.once.Do(func() { e.res = resolve() })
	var once sync.Once
	return e.res, ch, func() {
		once.Do(func() {
			release()
			a.mu.Lock()
			e.refs--
			if e.refs == 0 && a.m[key] == e {
				delete(a.m, key)
			}
			a.mu.Unlock()
		})
	}
}

// len is the number of shared answers held (for tests).
func (a *answers) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.m)
}
