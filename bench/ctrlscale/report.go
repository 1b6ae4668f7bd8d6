package main

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"
)

// Targets of issue 11.
const (
	targetP99 = time.Second
	targetRSS = 150 << 20
)

// quantile is the q-quantile (nearest rank) of ds, 0 when empty.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func (r *result) print(w io.Writer, cfg config) {
	fmt.Fprintf(w, "\nctrlscale: %d services x %d endpoints, %d proxies x (%d Destination.Get + 1 Policy.WatchInbound), %.0f slice writes/s, %s per phase\n\n",
		cfg.Services, cfg.Endpoints, cfg.Proxies, cfg.Authorities, cfg.Rate, cfg.Duration)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "setup\t\n")
	fmt.Fprintf(tw, "  API objects written\t%d (populated in %s)\n", r.objects, r.populate.Round(time.Millisecond))
	fmt.Fprintf(tw, "  controller start to serving\t%s (informers listed)\n", r.sync.Round(time.Millisecond))
	fmt.Fprintf(tw, "  RSS / Go heap, informers synced, no streams\t%s / %s\n", mib(r.rssSynced), mib(int64(r.heapSynced)))
	fmt.Fprintf(tw, "  RSS / Go heap, %d proxies connected (1 policy watch each)\t%s / %s\n", cfg.Proxies, mib(r.rssConns), mib(int64(r.heapConns)))
	fmt.Fprintf(tw, "  RSS / Go heap, + %d Destination.Get streams\t%s / %s (first dial to last first answer %s, with a 2 s pause to read memory)\n", r.streams, mib(r.rssStreams), mib(int64(r.heapStreams)), r.connect.Round(time.Millisecond))
	fmt.Fprintf(tw, "  memory per connection with its policy watch (RSS / heap)\t%.1f KiB / %.1f KiB\n",
		float64(r.rssConns-r.rssSynced)/1024/float64(cfg.Proxies), (r.heapConns-r.heapSynced)/1024/float64(cfg.Proxies))
	fmt.Fprintf(tw, "  memory per Destination.Get watch (RSS / heap)\t%.1f KiB / %.1f KiB\n",
		float64(r.rssStreams-r.rssConns)/1024/float64(r.streams), (r.heapStreams-r.heapConns)/1024/float64(r.streams))
	tw.Flush()
	fmt.Fprintf(w, "\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "phase\twrites\tfailed\twrite p50\twrite p99\tupdates\tstream p50\tstream p99\tstream max\tall-streams p99\tcoalesced\tincomplete\tctl CPU\tRSS end\t\n")
	for _, p := range r.phases {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%d\t%d\t%.0f%%\t%s\t\n", p.name, len(p.writes), p.failed,
			ms(quantile(p.writes, .5)), ms(quantile(p.writes, .99)), len(p.perStream),
			ms(quantile(p.perStream, .5)), ms(quantile(p.perStream, .99)), ms(quantile(p.perStream, 1)),
			ms(quantile(p.perChange, .99)), p.coalesced, p.incomplete, 100*p.cpu.Seconds()/p.wall.Seconds(), mib(p.rssEnd))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nstalled client: %d streams never read during the second phase; afterwards it drained %d messages, %d bytes, at most %d bytes on one stream (its HTTP/2 window is 64 KiB)\n",
		r.stalled.streams, r.stalled.msgs, r.stalled.bytes, r.stalled.maxStream)
	fmt.Fprintf(w, "  its stream on svc-0: %d writes to svc-0 while unread; a reading stream on svc-0 got %d messages meanwhile, the stalled one drained %d (%d bytes) afterwards",
		r.stalled.hotWrites, r.stalled.hotReader, r.stalled.hotMsgs, r.stalled.hotBytes)
	if int64(r.stalled.hotMsgs) < r.stalled.hotReader {
		fmt.Fprintf(w, ": fewer, so the controller's sends to it blocked and the changes meanwhile were coalesced into one diff\n")
	} else {
		fmt.Fprintf(w, ": as many, so its window and grpc-go's per-stream send quota (64 KiB each) were not both full and the controller's sends never blocked (more writes to svc-0 would: -duration, -rate, -hot-every)\n")
	}
	fmt.Fprintf(w, "controller peak RSS (VmHWM): %s; Go live heap after the last GC %d MB (largest %d MB; the rest of the heap is garbage GOGC lets accumulate)", mib(r.rssPeak), r.liveLast, r.liveMax)
	if rt := r.runtime; rt != nil {
		fmt.Fprintf(w, "\ncontroller Go runtime with every stream open: %.0f goroutines, stacks %s, heap in use %s, heap idle %s (%s of it returned to the OS), obtained from the OS %s",
			rt["go_goroutines"], mib(int64(rt["go_memstats_stack_inuse_bytes"])), mib(int64(rt["go_memstats_heap_inuse_bytes"])),
			mib(int64(rt["go_memstats_heap_idle_bytes"])), mib(int64(rt["go_memstats_heap_released_bytes"])), mib(int64(rt["go_memstats_sys_bytes"])))
	}
	if len(cfg.ControllerEnv) > 0 {
		fmt.Fprintf(w, "; controller environment %v", cfg.ControllerEnv)
	}
	fmt.Fprintf(w, "\n\n")
	if st := r.storm; st.n > 0 {
		fmt.Fprintf(w, "Certify storm: %d proxies at once (new TLS connection, key, CSR, TokenReview, signature): %d failed, %.0f certificates/s, time to a certificate p50 %s p99 %s max %s, %.0f TokenReviews made\n\n",
			st.n, st.failed, float64(len(st.lat))/st.wall.Seconds(), ms(quantile(st.lat, .5)), ms(quantile(st.lat, .99)), ms(quantile(st.lat, 1)), st.tokenReviews)
		if st.firstErr != nil {
			fmt.Fprintf(w, "  first failure: %v\n\n", st.firstErr)
		}
	}
	if r.heapTop != "" {
		fmt.Fprintf(w, "controller heap profile (in use, all streams open):\n%s\n", r.heapTop)
	}
	r.verdicts(w)
}

func (r *result) verdicts(w io.Writer) {
	verdict := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "MISS"
	}
	for _, p := range r.phases {
		p99 := quantile(p.perStream, .99)
		fmt.Fprintf(w, "%s  p99 propagation (%s) %s < %s, %d incomplete\n", verdict(p99 < targetP99 && p.incomplete == 0 && len(p.perStream) > 0), p.name, ms(p99), targetP99, p.incomplete)
	}
	if st := r.storm; st.n > 0 {
		fmt.Fprintf(w, "%s  Certify storm: every proxy certified (%d of %d), p99 %s\n", verdict(st.failed == 0), len(st.lat), st.n, ms(quantile(st.lat, .99)))
	}
	fmt.Fprintf(w, "%s  controller peak RSS %s < %s\n", verdict(r.rssPeak < targetRSS), mib(r.rssPeak), mib(targetRSS))
	if len(r.phases) == 2 {
		a, b := quantile(r.phases[0].perStream, .99), quantile(r.phases[1].perStream, .99)
		ratio := float64(b) / float64(max(a, time.Microsecond))
		fmt.Fprintf(w, "%s  stalled client leaves the others alone: p99 %s with it (%.2fx the phase without), incomplete %d\n",
			verdict(b < targetP99 && r.phases[1].incomplete == 0 && len(r.phases[1].perStream) > 0), ms(b), ratio, r.phases[1].incomplete)
	}
}
