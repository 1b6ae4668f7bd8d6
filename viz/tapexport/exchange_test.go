package tapexport

import (
	"runtime"
	"testing"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

func reqInit(pod string, id uint64, path string) *apiv1.TapEvent {
	return &apiv1.TapEvent{Id: id, Pod: pod, Namespace: "demo",
		Event: &apiv1.TapEvent_RequestInit_{RequestInit: &apiv1.TapEvent_RequestInit{Path: path}}}
}

func respEnd(pod string, id uint64) *apiv1.TapEvent {
	return &apiv1.TapEvent{Id: id, Pod: pod, Namespace: "demo",
		Event: &apiv1.TapEvent_ResponseEnd_{ResponseEnd: &apiv1.TapEvent_ResponseEnd{}}}
}

// TestPending: the requests not ended, once each, in the order they
// began, whatever ended between them and even when an id comes back (a
// restarted proxy numbers from 1 again).
func TestPending(t *testing.T) {
	for _, tc := range []struct {
		name string
		evs  []*apiv1.TapEvent
		want []string // paths
	}{
		{"none", nil, nil},
		{"all ended", []*apiv1.TapEvent{reqInit("a", 1, "/1"), respEnd("a", 1)}, nil},
		{"begin order", []*apiv1.TapEvent{reqInit("b", 9, "/first"), reqInit("a", 1, "/second"), reqInit("a", 2, "/third")},
			[]string{"/first", "/second", "/third"}},
		{"ended ones left out", []*apiv1.TapEvent{reqInit("a", 1, "/1"), reqInit("a", 2, "/2"), reqInit("a", 3, "/3"), respEnd("a", 2)},
			[]string{"/1", "/3"}},
		{"an id used again", []*apiv1.TapEvent{reqInit("a", 1, "/old"), respEnd("a", 1), reqInit("a", 2, "/2"), reqInit("a", 1, "/new")},
			[]string{"/2", "/new"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a Assembler
			for _, ev := range tc.evs {
				a.Add(ev)
			}
			var got []string
			for _, x := range a.Pending() {
				got = append(got, x.Path)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("pending %q, want %q", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("pending %q, want %q", got, tc.want)
				}
			}
		})
	}
}

// TestAssemblerMemoryBounded: requests that ended leave nothing behind,
// so a tap of any length holds only its open requests (a long export
// once kept a key per request ever seen).
func TestAssemblerMemoryBounded(t *testing.T) {
	var a Assembler
	add := func(from, to uint64) {
		for id := from; id < to; id++ {
			a.Add(reqInit("web-0123456789", id, "/"))
			if _, ok := a.Add(respEnd("web-0123456789", id)); !ok {
				t.Fatalf("request %d did not end", id)
			}
		}
	}
	add(0, 1000) // the map's buckets, grown once
	before := heap()
	add(1000, 201000)
	grown := int64(heap()) - int64(before)
	if grown > 1<<20 {
		t.Errorf("200000 ended requests grew the heap by %d bytes, want under 1 MiB", grown)
	}
	if n := len(a.Pending()); n != 0 {
		t.Errorf("%d pending", n)
	}
	runtime.KeepAlive(&a)
}

func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
