package destination

import (
	"strconv"

	"github.com/trellis-mesh/trellis/controller/store"
)

// Resolution is what a destination names, as a Source sees it now.
type Resolution struct {
	// Endpoints of the destination; Exists false when it names nothing.
	Endpoints Endpoints
	// Service is the canonical authority ("name.ns.svc.<cluster domain>:port")
	// of the service port the destination names, "" when it names none
	// (an unknown name, or a single workload's address). GetRoutes keys
	// route configuration on it.
	Service string
}

// Source answers what a destination names. The Destination service calls
// Resolve once per stream and again each time changed is closed; a Source
// never keeps per-stream state beyond what release frees, so an idle
// stream costs a channel wait and nothing else.
type Source interface {
	// Resolve returns what a names for a caller in callerNamespace ("" when
	// unknown; a bare "name:port" then names nothing), a channel closed
	// when the answer may have changed, and a release func the caller
	// calls once it stops waiting on the channel. The channel is taken
	// before the answer is computed, so no change between the two is
	// missed. Resolve must be safe for concurrent use and must not block
	// on the network: it reads caches.
	Resolve(a store.Authority, callerNamespace string) (r Resolution, changed <-chan struct{}, release func())
}

// StoreSource is the local-mode Source: the store file's current Config.
// Every change of the file wakes every stream, which re-diffs and usually
// finds nothing to send; the file is small and edited by hand.
type StoreSource struct {
	Store *store.Store
}

// Resolve implements Source.
func (s StoreSource) Resolve(a store.Authority, callerNamespace string) (Resolution, <-chan struct{}, func()) {
	cfg, changed := s.Store.Current()
	t := cfg.Resolve(a, callerNamespace)
	r := Resolution{Endpoints: Compute(cfg, t)}
	if t.Service != nil {
		r.Service = cfg.FQDN(t.Service) + ":" + strconv.FormatUint(uint64(t.Port), 10)
	}
	return r, changed, func() {}
}
